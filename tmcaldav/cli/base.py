"""The `tmcaldav` click group and what every command shares: errors, JSON, the App.

Exit codes: 0 success, 1 a failed operation, 2 bad usage, bad config or a store that
cannot be opened (75: try again later). Every error is one message that says what to do
next; no tracebacks: a `TmcaldavError` carries its own exit code.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import pkgutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from tmcaldav import __version__
from tmcaldav.app import App
from tmcaldav.config import config_path
from tmcaldav.errors import EXIT_FAILED, EXIT_USAGE, TmcaldavError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)



def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error for the administrator and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


# The module of `tmcaldav.cli` that adds each top-level command: a command's module is
# imported when that command runs, so `session list` does not load what `run`, `web` or
# `plugins` need. `person` and `session` get subcommands from two modules. Help and a
# name not listed here load every module of the package (the list, "did you mean" and a
# command whose module is not listed yet stay whole).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("db", "check-config", "run", "doctor", "demo", "plugins"), ("admin",)),
    **dict.fromkeys(("suggestions", "report"), ("advice",)),
    **dict.fromkeys(("invite", "publish", "sync", "mail"), ("calendar",)),
    **dict.fromkeys(("person", "session"), ("roster", "verbs")),
    **dict.fromkeys(("enroll", "set-status", "note", "import"), ("roster",)),
    **dict.fromkeys(("answer", "remind"), ("verbs",)),
    **dict.fromkeys(("web", "user"), ("web",)),
}
# Modules of the package that add no command (`render` would import the store).
HELPER_MODULES = frozenset({"base", "export", "render"})


def load_commands(name: str | None = None) -> None:
    """Import the modules that add the command `name` (None: every module of the package)."""
    if name in COMMAND_MODULES:
        modules: Iterable[str] = COMMAND_MODULES[name]
    else:
        package = pkgutil.iter_modules([str(Path(__file__).parent)])
        modules = (m.name for m in package if m.name not in HELPER_MODULES)
    for module in modules:
        importlib.import_module(f"tmcaldav.cli.{module}")


class TmcaldavGroup(click.Group):
    """A click group that turns domain errors into one clear line and an exit code, and
    imports a command's module only when the command is asked for."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # An unknown name loads every module: click's "did you mean" sees every command.
        load_commands(cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        load_commands()
        return super().list_commands(ctx)

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
    app = ctx.obj = App(config_path(config_file))
    ctx.call_on_close(lambda: close_store(app))


def close_store(app: App) -> None:
    """Close the store's connections once the command is done (SQLite folds its WAL back
    into the file, PostgreSQL sees the session end), not at the process's end: `main`
    leaves what is left to the exit without a garbage collection."""
    if "store" in vars(app):
        app.store.close()


pass_app = click.make_pass_decorator(App)


@contextmanager
def reading(app: App) -> Iterator[Session]:
    """A unit of work for a command that only reads: always rolled back (`scratch`).

    Nothing it does is ever committed, so the store it reads is opened without the
    commit checks of `open_store` (the suggestion premises and the views they import);
    a store the App has opened already is used as it is.
    """
    if "store" in vars(app):
        with app.store.scratch() as db:
            yield db
        return
    from tmcaldav.store import Store

    store = Store(app.config.store.url)
    try:
        store.check_schema()
        with store.scratch() as db:
            yield db
    finally:
        store.close()


# The collector's thresholds as the interpreter starts (`main` raises them).
DEFAULT_GC_THRESHOLD = gc.get_threshold()


def collect_as_usual() -> None:
    """For a service that runs for days: collect garbage at the interpreter's default
    pace again (`main` collects rarely, for a command's short life)."""
    gc.set_threshold(*DEFAULT_GC_THRESHOLD)


def main() -> None:
    """Console entry point."""
    # A command's start-up is mostly imports (SQLAlchemy, the models), which make
    # hundreds of thousands of objects that live until the process ends: with the
    # default threshold the collector walks them ~170 times, about a tenth of a read
    # command. A command collects after 200,000 new objects (none during start-up); a
    # service (`run`, `web`) goes back to the default (`collect_as_usual`).
    gc.set_threshold(200_000, 20, 20)
    try:
        cli(prog_name="tmcaldav")
    finally:
        # The command is done and its store closed (`close_store`): the collections
        # the interpreter runs as it exits would walk every object again, for nothing
        # (about 0.1 s); frozen objects are left to the exit.
        gc.freeze()


__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "ID",
    "ID_MAX",
    "App",
    "cli",
    "collect_as_usual",
    "emit_json",
    "fail",
    "json_option",
    "main",
    "pass_app",
    "reading",
]
