"""The `tmcaldav` click group and what every command shares: errors, JSON, the App.

Exit codes: 0 success, 1 a failed operation, 2 bad usage, bad config or a store that
cannot be opened (75: try again later). Every error is one message that says what to do
next; no tracebacks: a `TmcaldavError` carries its own exit code.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NoReturn

import click

from tmcaldav import __version__
from tmcaldav.app import App
from tmcaldav.config import config_path
from tmcaldav.errors import EXIT_FAILED, EXIT_USAGE, TmcaldavError

log = logging.getLogger(__name__)



def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error for the administrator and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


class TmcaldavGroup(click.Group):
    """A click group that turns domain errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except TmcaldavError as error:
            fail(error.report(), error.exit_code)
        except Exception as error:
            # A bug, not the administrator's doing: one line and exit 1 all the same
            # (nothing was kept: every unit of work is one transaction); -vv logs the
            # traceback for the report.
            log.debug("internal error", exc_info=True)
            fail(
                f"internal error ({type(error).__name__}: {str(error)[:200]}); nothing "
                "was changed. This is a bug in tmcaldav: run again with -vv and report it",
                EXIT_FAILED,
            )


def emit_json(data: Any) -> None:
    """Print JSON for scripts (UTF-8, not ASCII-escaped)."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")

# Row ids (suggestions, ...) as the store keeps them: a 32-bit integer on PostgreSQL.
ID_MAX = 2**31 - 1
# An ID typed on the command line: a positive whole number the store can hold.
ID = click.IntRange(1, ID_MAX)


@click.group(cls=TmcaldavGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_file",
    metavar="PATH",
    help="Config file (else $TMCALDAV_CONFIG, else ./daemon.toml).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="tmcaldav")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int) -> None:
    """Keep enrollment records in step with students' calendars over CalDAV."""
    from tmcaldav.logs import setup_logging

    setup_logging(logging.WARNING - 10 * verbose)
    ctx.obj = App(config_path(config_file))


pass_app = click.make_pass_decorator(App)


def main() -> None:
    """Console entry point."""
    cli(prog_name="tmcaldav")


__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "ID",
    "ID_MAX",
    "App",
    "cli",
    "emit_json",
    "fail",
    "json_option",
    "main",
    "pass_app",
]
