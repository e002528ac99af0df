"""The web interface and who may use it: `tmcaldav web`, `tmcaldav user …`."""

from __future__ import annotations

import sys

import click

from tmcaldav.app import App
from tmcaldav.cli.base import (
    cli,
    collect_as_usual,
    emit_json,
    fail,
    json_option,
    pass_app,
    reading,
)
from tmcaldav.errors import EXIT_USAGE


@cli.command()
@click.option(
    "--listen", metavar="HOST:PORT", help="Listen here instead of [web] listen (127.0.0.1:8080)."
)
@pass_app
def web(app: App, listen: str | None) -> None:
    """The web interface: session pages with the live Calendar column, the actions
    beside them, suggestions, reports, and the JSON API.

    Runs in the foreground (systemd: contrib/systemd/tmcaldav-web.service) next to the
    daemon, on the same store. Add users first: tmcaldav user add NAME --role admin.
    """
    import logging

    from tmcaldav.logs import setup_logging
    from tmcaldav.web.server import serve

    if logging.getLogger("tmcaldav").level > logging.INFO:
        setup_logging(logging.INFO)
    collect_as_usual()
    serve(app, listen=listen)


@cli.group()
def user() -> None:
    """Users of the web interface: admins act, viewers read."""


def _read_password() -> str:
    if sys.stdin.isatty():
        value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    line = sys.stdin.readline()
    if not line:
        fail("give the password on standard input (one line)", EXIT_USAGE)
    return line.rstrip("\r\n")


@user.command("add")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["admin", "viewer"]), default="viewer", show_default=True,
    help="admin: every action; viewer: read only.",
)
@pass_app
def user_add(app: App, name: str, role: str) -> None:
    """Add a user; the password is read from standard input (asked twice on a terminal)."""
    from tmcaldav.web.users import add_user, check_name

    check_name(name)
    password = _read_password()
    with app.store.transaction() as db:
        add_user(db, name, password, role)
    click.echo(f"added user {name} ({role})")


@user.command("list")
@json_option
@pass_app
def user_list(app: App, as_json: bool) -> None:
    """The users, their roles and how many API tokens each has."""
    from tmcaldav.cli.render import table
    from tmcaldav.web.users import list_users

    with reading(app) as db:
        rows = list_users(db)
    if as_json:
        emit_json(rows)
        return
    lines: list[tuple[str, ...]] = [("NAME", "ROLE", "TOKENS", "ADDED")]
    lines += [
        (str(r["name"]), str(r["role"]), str(r["tokens"]), str(r["created_at"])) for r in rows
    ]
    click.echo(table(lines) if rows else "no users; add one: tmcaldav user add NAME --role admin")


@user.command("remove")
@click.argument("name")
@pass_app
def user_remove(app: App, name: str) -> None:
    """Remove a user and their API tokens; their logins end at once."""
    from tmcaldav.web.users import remove_user

    with app.store.transaction() as db:
        remove_user(db, name)
    click.echo(f"removed user {name}")


@user.command("token")
@click.argument("name")
@pass_app
def user_token(app: App, name: str) -> None:
    """A new API bearer token for NAME, printed once (only its hash is kept).

    Use it as `Authorization: Bearer TOKEN`; it acts with NAME's role. Removing the
    user revokes their tokens.
    """
    from tmcaldav.web.users import new_token

    with app.store.transaction() as db:
        token = new_token(db, name)
    click.echo(token)
    click.echo(f"(the API token of {name}; it is shown only this once)", err=True)
