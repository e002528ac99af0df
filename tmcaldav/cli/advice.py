"""What the plugins suggest, and the reports."""

from __future__ import annotations

import click

from tmcaldav.app import App
from tmcaldav.cli.base import ID, cli, emit_json, json_option, pass_app


@cli.group(invoke_without_command=True)
@click.option("--session", "session_key", metavar="KEY", help="Only this session's.")
@click.option("--all", "everything", is_flag=True, help="Include applied and dismissed ones.")
@json_option
@click.pass_context
def suggestions(ctx: click.Context, session_key: str | None, everything: bool, as_json: bool
                ) -> None:
    """What the plugins suggest (open ones); `apply ID` does it, `dismiss ID` drops it."""
    if ctx.invoked_subcommand is not None:
        return
    from tmcaldav.cli.render import render_suggestions
    from tmcaldav.hooks.suggestions import list_suggestions

    app = ctx.find_object(App)
    assert app is not None
    with app.store.transaction() as db:
        rows = list_suggestions(db, session_key=session_key, include_decided=everything)
    if as_json:
        emit_json(rows)
    else:
        click.echo(render_suggestions(rows) if rows else "no suggestions")


@suggestions.command("apply")
@click.argument("suggestion_id", type=ID, metavar="ID")
@click.option("--note", help="A note to keep with the change (for contact_student: what was said).")
@pass_app
def suggestions_apply(app: App, suggestion_id: int, note: str | None) -> None:
    """Do what suggestion ID suggests (cancel, invite, promote, note, offer, no-show)."""
    from tmcaldav.hooks.suggestions import apply_suggestion

    click.echo(apply_suggestion(app.store, app.publisher, suggestion_id, note=note))


@suggestions.command("dismiss")
@click.argument("suggestion_id", type=ID, metavar="ID")
@pass_app
def suggestions_dismiss(app: App, suggestion_id: int) -> None:
    """Drop suggestion ID; the same advice is not given again."""
    from tmcaldav.hooks.suggestions import dismiss_suggestion

    click.echo(dismiss_suggestion(app.store, suggestion_id))


@cli.group()
def report() -> None:
    """Reports over the store's history."""


@report.command("no-shows")
@json_option
@pass_app
def report_no_shows(app: App, as_json: bool) -> None:
    """Students who missed sessions, and how many of those they had accepted."""
    from tmcaldav.cli.render import table
    from tmcaldav.store.reports import no_show_report

    with app.store.transaction() as db:
        rows = no_show_report(db)
    if as_json:
        emit_json(rows)
        return
    header = ("EMAIL", "NAME", "SESSIONS", "ACCEPTED", "NO-SHOWS", "ACCEPTED, NOT COME")
    click.echo(
        table(
            [header]
            + [
                (
                    r["email"],
                    r["name"] or "",
                    str(r["sessions"]),
                    str(r["accepted"]),
                    str(r["no_shows"]),
                    str(r["accepted_no_shows"]),
                )
                for r in rows
            ]
        )
        if rows
        else "no no-shows recorded"
    )
