"""Commands that look after tmcaldav itself: the store's schema, the config, the
server check, the daemon, the demo and the plugins."""

from __future__ import annotations

import logging
from typing import Any

import click

from tmcaldav.app import App
from tmcaldav.cli.base import (
    EXIT_FAILED,
    cli,
    collect_as_usual,
    emit_json,
    json_option,
    pass_app,
)
from tmcaldav.config import ConfigError, SecretError

# ---- db, config --------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The enrollment store's schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the store or upgrade it to the current schema."""
    from tmcaldav.store import Store

    store = Store(app.config.store.url)
    head = store.upgrade()
    click.echo(f"store {store.safe_url} is at revision {head}")


@cli.command("check-config")
@pass_app
def check_config(app: App) -> None:
    """Validate the config file: every problem at once (syntax, keys, types, values,
    password sources, plugin names, the store's folder), each with its key; exit 2."""
    from tmcaldav.config import check_config_file

    read = check_config_file(app.path)
    plugins = read.usable("plugins", "enable", "disable", "plugin_dirs")
    if plugins is not None:
        from tmcaldav.hooks.plugins import manager_for

        pm = manager_for(plugins)
        read.problems += [f"plugins.enable: {f.name}: {f.reason}" for f in pm.failures]
        pm.close()
    caldav = read.usable("caldav", "auth", "token_command")
    if caldav is not None and caldav.auth == "bearer" and not read.problems:
        try:
            caldav.fetch_token()  # run once to see it works; the token is not shown
        except SecretError as e:
            read.problems.append(f"caldav: {e}")
    if not read.problems:
        from tmcaldav.config import credential_problems, load_config

        config = load_config(app.path)
        read.problems += credential_problems(config)
    if read.problems:
        raise ConfigError(app.path, read.problems)
    if config.caldav is not None and config.caldav.insecure:
        click.echo(
            f"warning: [caldav] allow_insecure_http = true: the password for "
            f"{config.caldav.url} crosses the network in clear text",
            err=True,
        )
    click.echo(f"{app.path}: ok (scheduling mode {config.scheduling.mode})")


@cli.command()
@click.option("--once", is_flag=True, help="Run exactly one tick, then exit.")
@click.option(
    "--standby",
    is_flag=True,
    help="Wait for the store lock instead of exiting 75, and take over when the active "
    "daemon stops or falls silent (PostgreSQL; also [daemon] standby).",
)
@click.pass_context
def run(ctx: click.Context, once: bool, standby: bool) -> None:
    """The daemon: poll, run the hooks, read mail, every [daemon] poll_interval.

    Exit codes: 0 ok, 1 the tick failed (--once), 2 config error (or --standby on
    SQLite), 3 fenced (a standby took over while this daemon was paused), 75 another
    instance holds the store's lock. SIGTERM/SIGINT stop after the current step, SIGHUP
    reloads the config, SIGUSR1 polls now.
    """
    from tmcaldav.daemon import run_daemon
    from tmcaldav.logs import setup_logging

    # A service logs what it does; -v adds debug output.
    if logging.getLogger("tmcaldav").level > logging.INFO:
        setup_logging(logging.INFO)
    collect_as_usual()
    app: App = ctx.obj
    if once and standby:
        raise click.UsageError("--once and --standby do not go together: a standby waits")
    raise click.exceptions.Exit(run_daemon(app.path, once=once, standby=standby))


@cli.command()
@pass_app
def doctor(app: App) -> None:
    """Check the server: reachable, sync-collection, scheduling, and the store."""
    from tmcaldav.doctor import run_doctor

    ok = run_doctor(app.config, click.echo)
    if not ok:
        raise click.exceptions.Exit(EXIT_FAILED)


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the server and files for exploring.")
@click.option(
    "--pace", type=click.FloatRange(0, 10), default=1.0, show_default=True,
    help="Scale the pauses between answers (1 takes about a minute; 0 is quickest).",
)
def demo(keep: bool, pace: float) -> None:
    """Show the daemon at work: embedded Radicale, SQLite, students answering."""
    from tmcaldav.demo import main as run_demo

    run_demo(keep, pace)


@cli.command("plugins")
@json_option
@pass_app
def plugins_command(app: App, as_json: bool) -> None:
    """The plugins loaded, their versions and hooks, and those that failed to load.

    Exits 1 when a plugin named in [plugins] enable could not be loaded."""
    from tmcaldav.cli.render import table
    from tmcaldav.hooks.plugins import get_plugin_manager

    pm = get_plugin_manager(app.config)
    data: dict[str, Any] = {
        "loaded": [
            {"name": p.name, "version": p.version, "source": p.source, "hooks": list(p.hooks)}
            for p in pm.loaded
        ],
        "failed": [{"name": f.name, "reason": f.reason} for f in pm.failures],
        "available": pm.available,
    }
    if as_json:
        emit_json(data)
    else:
        rows: list[tuple[str, ...]] = [("NAME", "VERSION", "HOOKS", "SOURCE")] + [
            (p["name"], p["version"] or "", ", ".join(p["hooks"]), p["source"])
            for p in data["loaded"]
        ]
        click.echo(table(rows) if data["loaded"] else "no plugins loaded")
        for f in data["failed"]:
            click.echo(f"failed to load {f['name']}: {f['reason']}")
        if data["available"]:
            click.echo(f"available, not enabled: {', '.join(data['available'])}")
    if pm.failures:
        raise click.exceptions.Exit(EXIT_FAILED)
