"""What the plugins suggest, and the reports."""

from __future__ import annotations

import click

from tmcaldav.app import App
from tmcaldav.cli.base import ID, cli, json_option, pass_app, reading
from tmcaldav.cli.export import check_formats, csv_option, emit_for_scripts, script_formats
from tmcaldav.words import plural

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
@click.option(
    "--all", "everything", is_flag=True, help="Include applied, dismissed and withdrawn ones."
)
@json_option
@csv_option
@click.pass_context
def suggestions(
    ctx: click.Context, session_key: str | None, everything: bool, as_json: bool, as_csv: bool
) -> None:
    """What the plugins suggest (open ones); `apply ID` does it, `dismiss ID` drops it.

    A suggestion whose reason went away (a new answer, a reschedule, the session
    cancelled or ended, the seat taken) is withdrawn: `--all` shows it with why."""
    if ctx.invoked_subcommand is not None:
        return
    from tmcaldav.cli.render import render_suggestions
    from tmcaldav.hooks.premises import withdraw_due
    from tmcaldav.hooks.suggestions import list_suggestions
    from tmcaldav.store.model import utcnow

    check_formats(as_json, as_csv)
    app = ctx.find_object(App)
    assert app is not None
    with app.store.transaction() as db:
        # Advice that time made untrue (the session ended) is not shown as open.
        withdraw_due(db, utcnow())
        rows = list_suggestions(db, session_key=session_key, include_decided=everything)
    if not emit_for_scripts(rows, as_json, as_csv, SUGGESTION_COLUMNS):
        click.echo(render_suggestions(rows) if rows else "no suggestions")


@suggestions.command("apply")
@click.argument("suggestion_id", type=ID, metavar="ID")
@click.option("--note", help="A note to keep with the change (for contact_student: what was said).")
@click.option(
    "--force",
    is_flag=True,
    help="Apply it even though its reason went away (withdrawn, or no longer true).",
)
@pass_app
def suggestions_apply(app: App, suggestion_id: int, note: str | None, force: bool) -> None:
    """Do what suggestion ID suggests (cancel, invite, promote, note, offer, no-show).

    Refused (exit 1, nothing changed) when what it was made from no longer holds; the
    message says what changed. `--force` does it anyway."""
    from tmcaldav.hooks.suggestions import apply_suggestion

    click.echo(apply_suggestion(app.store, app.publisher, suggestion_id, note=note, force=force))


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
@script_formats
@pass_app
def report_no_shows(app: App, as_json: bool, as_csv: bool) -> None:
    """Students who missed sessions, and how many of those they had accepted."""
    from tmcaldav.cli.render import table
    from tmcaldav.store.reports import no_show_report

    with app.store.transaction() as db:
        rows = no_show_report(db)
    if emit_for_scripts(rows, as_json, as_csv, NO_SHOW_COLUMNS):
        return
    header = ("EMAIL", "NAME", "SESSIONS", "ACCEPTED", "NO-SHOWS", "ACCEPTED BUT ABSENT")
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


#: The CSV columns of `report forecast`: one row per student of each session.
FORECAST_COLUMNS = (
    "session",
    "start",
    "capacity",
    "enrolled",
    "expected",
    "low",
    "high",
    "p_over_capacity",
    "email",
    "calendar",
    "p_attend",
)


@report.command("forecast")
@click.argument("key", required=False)
@script_formats
@pass_app
def report_forecast(app: App, key: str | None, as_json: bool, as_csv: bool) -> None:
    """Expected turnout of each upcoming session (or of KEY): how many will likely come,
    the 80% interval, the chance of overbooking, and who pulls the forecast down."""
    from tmcaldav.cli.render import table
    from tmcaldav.store.model import utcnow
    from tmcaldav.store.outcomes import forecast_report

    with reading(app) as db:
        report = forecast_report(db, utcnow(), key)
    # CSV: the JSON's fields, one row per student (a session with nobody: one row).
    per_student = (
        {**{k: v for k, v in r.items() if k != "students"}, **student}
        for r in report.rows
        for student in (r["students"] or [{}])
    )
    if emit_for_scripts(report.rows, as_json, as_csv, FORECAST_COLUMNS, per_student):
        return
    model = report.model
    click.echo(
        model.note or f"fitted on {plural(model.past_seats, 'past seat')} with a recorded outcome"
    )
    if not report.rows:
        click.echo("no upcoming sessions")
        return
    header = (
        "SESSION",
        "START",
        "SEATS",
        "ENROLLED",
        "EXPECTED",
        "80%",
        "OVERBOOKED",
        "LIKELY AWAY",
    )
    rows = [header]
    for r in report.rows:
        away = [s["email"] for s in r["students"] if s["p_attend"] < 0.5]
        rows.append(
            (
                r["session"],
                r["start"],
                "∞" if r["capacity"] is None else str(r["capacity"]),
                str(r["enrolled"]),
                f"{r['expected']:.1f}",
                f"{r['low']}–{r['high']}",
                f"{r['p_over_capacity']:.0%}",
                ", ".join(away[:3]) + (f" +{len(away) - 3}" if len(away) > 3 else ""),
            )
        )
    click.echo(table(rows))
