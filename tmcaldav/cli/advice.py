"""What the plugins suggest, and the reports."""

from __future__ import annotations

import click

from tmcaldav.app import App
from tmcaldav.cli.base import cli, emit_json, json_option, pass_app
from tmcaldav.cli.export import check_formats, csv_option, emit_csv

#: The CSV columns of `suggestions` and `report no-shows` (their JSON fields).
SUGGESTION_COLUMNS = (
    "id",
    "session",
    "email",
    "kind",
    "reason",
    "plugin",
    "state",
    "created_at",
    "decided_at",
)
NO_SHOW_COLUMNS = ("email", "name", "sessions", "accepted", "no_shows", "accepted_no_shows")


@cli.group(invoke_without_command=True)
@click.option("--session", "session_key", metavar="KEY", help="Only this session's.")
@click.option("--all", "everything", is_flag=True, help="Include applied and dismissed ones.")
@json_option
@csv_option
@click.pass_context
def suggestions(
    ctx: click.Context, session_key: str | None, everything: bool, as_json: bool, as_csv: bool
) -> None:
    """What the plugins suggest (open ones); `apply ID` does it, `dismiss ID` drops it."""
    if ctx.invoked_subcommand is not None:
        return
    from tmcaldav.cli.render import render_suggestions
    from tmcaldav.hooks.suggestions import list_suggestions

    check_formats(as_json, as_csv)
    app = ctx.find_object(App)
    assert app is not None
    with app.store.transaction() as db:
        rows = list_suggestions(db, session_key=session_key, include_decided=everything)
    if as_json:
        emit_json(rows)
    elif as_csv:
        emit_csv(rows, SUGGESTION_COLUMNS)
    else:
        click.echo(render_suggestions(rows) if rows else "no suggestions")


@suggestions.command("apply")
@click.argument("suggestion_id", type=int, metavar="ID")
@click.option("--note", help="A note to keep with the change (for contact_student: what was said).")
@pass_app
def suggestions_apply(app: App, suggestion_id: int, note: str | None) -> None:
    """Do what suggestion ID suggests (cancel, invite, promote, note, offer, no-show)."""
    from tmcaldav.hooks.suggestions import apply_suggestion

    click.echo(apply_suggestion(app.store, app.publisher, suggestion_id, note=note))


@suggestions.command("dismiss")
@click.argument("suggestion_id", type=int, metavar="ID")
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
@csv_option
@pass_app
def report_no_shows(app: App, as_json: bool, as_csv: bool) -> None:
    """Students who missed sessions, and how many of those they had accepted."""
    from tmcaldav.cli.render import table
    from tmcaldav.store.reports import no_show_report

    check_formats(as_json, as_csv)
    with app.store.transaction() as db:
        rows = no_show_report(db)
    if as_json:
        emit_json(rows)
        return
    if as_csv:
        emit_csv(rows, NO_SHOW_COLUMNS)
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
