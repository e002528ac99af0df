"""The administrator's records: people, sessions (the session page), enrollments,
notes and CSV import."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tmcaldav.app import App
from tmcaldav.cli.base import cli, emit_json, json_option, pass_app
from tmcaldav.domain import CAPACITY_MAX

# ---- people ---------------------------------------------------------------------------


@cli.group()
def person() -> None:
    """Students."""


@person.command("add")
@click.argument("email")
@click.option("--name", required=True, help="Full name as it appears in invitations.")
@click.option("--phone", help="Phone number for follow-ups.")
@pass_app
def person_add(app: App, email: str, name: str, phone: str | None) -> None:
    """Add a student."""
    from tmcaldav.store.roster import add_person

    with app.store.transaction() as db:
        added = add_person(db, email, name, phone)
        click.echo(f"added {added.email}")


@person.command("list")
@json_option
@pass_app
def person_list(app: App, as_json: bool) -> None:
    """List students."""
    from tmcaldav.cli.render import table
    from tmcaldav.store import list_people
    from tmcaldav.store.pages import person_row

    with app.store.transaction() as db:
        rows = [person_row(p) for p in list_people(db)]
    if as_json:
        emit_json(rows)
    else:
        click.echo(
            table(
                [("EMAIL", "NAME", "PHONE")]
                + [(r["email"], r["name"] or "", r["phone"] or "") for r in rows]
            )
        )


# ---- sessions --------------------------------------------------------------------------


def session_options(*, required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options `session add` and `session edit` share."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            [
                click.option("--title", required=required, help="Title shown in calendars."),
                click.option(
                    "--start", required=required, help="ISO 8601 start, e.g. 2026-12-01T09:00."
                ),
                click.option("--end", required=required, help="ISO 8601 end."),
                click.option(
                    "--tz", help="IANA time zone (default: [scheduling] timezone).", metavar="ZONE"
                ),
                click.option("--location", help="Where it takes place."),
                click.option("--capacity", type=int, help=f"Seats (0 to {CAPACITY_MAX:,})."),
                click.option("--course", help="Course the session belongs to."),
                click.option("--description", help="Description shown in calendars."),
                click.option(
                    "--fold",
                    type=click.IntRange(0, 1),
                    help="When the clocks go back and a time happens twice: 0 the first, "
                    "1 the second.",
                ),
            ]
        ):
            f = option(f)
        return f

    return decorate


@cli.group()
def session() -> None:
    """Training sessions."""


@session.command("add")
@click.argument("key")
@session_options(required=True)
@pass_app
def session_add(app: App, key: str, **fields: Any) -> None:
    """Add a session with a KEY chosen by the organisation."""
    from tmcaldav.store.roster import SessionFields, add_session

    with app.store.transaction() as db:
        added = add_session(db, key, SessionFields(**fields), app.config.scheduling.timezone)
        click.echo(f"added session {added.key}")


@session.command("edit")
@click.argument("key")
@session_options(required=False)
@pass_app
def session_edit(app: App, key: str, **fields: Any) -> None:
    """Change a session. A published one is updated on the server (SEQUENCE+1); a new
    start, end or zone is a reschedule: every student is asked again."""
    from tmcaldav.store.roster import SessionFields

    changed = app.publisher.edit(key, SessionFields(**fields))
    names = {"start_at": "start", "end_at": "end"}
    listed = ", ".join(sorted(names.get(c, c) for c in changed))
    click.echo(f"session {key}: " + (f"changed {listed}" if changed else "no change"))


@session.command("cancel")
@click.argument("key")
@pass_app
def session_cancel(app: App, key: str) -> None:
    """Cancel a session; its event stays on the server, marked cancelled."""
    published = app.publisher.cancel(key)
    click.echo(f"session {key} cancelled" + (" (event updated)" if published else ""))


@session.command("list")
@json_option
@pass_app
def session_list(app: App, as_json: bool) -> None:
    """List sessions, soonest first."""
    from tmcaldav.cli.render import table
    from tmcaldav.store import list_sessions
    from tmcaldav.store.pages import session_summary

    with app.store.transaction() as db:
        rows = [session_summary(s) for s in list_sessions(db)]
    if as_json:
        emit_json(rows)
        return
    header = ("KEY", "TITLE", "START", "TZ", "SEATS", "WAIT", "STATUS", "CALENDAR")
    click.echo(
        table(
            [header]
            + [
                (
                    r["key"],
                    r["title"],
                    r["start"],
                    r["tz"],
                    f"{r['seats_taken']}/{r['capacity'] if r['capacity'] is not None else '∞'}",
                    str(r["waitlisted"]),
                    r["status"],
                    r["calendar_state"],
                )
                for r in rows
            ]
        )
    )


@session.command("show")
@click.argument("key")
@json_option
@pass_app
def session_show(app: App, key: str, as_json: bool) -> None:
    """The session page: every student with the Calendar column."""
    from tmcaldav.cli.render import render_page
    from tmcaldav.store import get_session
    from tmcaldav.store.pages import session_page

    with app.store.transaction() as db:
        page = session_page(get_session(db, key))
    if as_json:
        emit_json(page)
    else:
        click.echo(render_page(page))


@session.command("history")
@click.argument("key")
@click.argument("email")
@json_option
@pass_app
def session_history(app: App, key: str, email: str, as_json: bool) -> None:
    """Every answer of one student, with its times and source."""
    from tmcaldav.cli.render import table
    from tmcaldav.store import get_enrollment, get_session, history
    from tmcaldav.store.pages import history_rows

    with app.store.transaction() as db:
        enrollment = get_enrollment(db, get_session(db, key), email)
        rows = history_rows(list(history(db, enrollment)))
    if as_json:
        emit_json(rows)
        return
    header = ("CAL", "ANSWERED", "OBSERVED", "SEQ", "SOURCE", "REASON")
    click.echo(
        table(
            [header]
            + [
                (
                    f"{r['icon']} {r['calendar']}",
                    r["responded_at"],
                    r["observed_at"],
                    "" if r["sequence"] is None else str(r["sequence"]),
                    r["source"],
                    r["reason"] or "",
                )
                for r in rows
            ]
        )
    )


# ---- enrollments -------------------------------------------------------------------------


@cli.command()
@click.argument("key")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--waitlist", is_flag=True, help="Put them on the waitlist, in this order.")
@pass_app
def enroll(app: App, key: str, emails: tuple[str, ...], waitlist: bool) -> None:
    """Enroll students in a session (all or none)."""
    from tmcaldav.store.roster import enroll as enroll_people

    with app.store.transaction() as db:
        created = enroll_people(db, key, list(emails), waitlist=waitlist)
    what = "waitlisted" if waitlist else "enrolled"
    click.echo(f"{what} {len(created)} in {key}")


@cli.command("set-status")
@click.argument("key")
@click.argument("email")
@click.argument("status")
@click.option("--note", help="A note to keep with the change.")
@pass_app
def set_status(app: App, key: str, email: str, status: str, note: str | None) -> None:
    """Set a student's STATUS: enrolled, waitlisted, cancelled, attended, no_show.

    Cancelling an invited student removes them from the event."""
    old = app.publisher.set_status(key, email, status, note)
    click.echo(f"{email.lower()} in {key}: {old} → {status}")


@cli.command()
@click.argument("key")
@click.argument("email")
@click.argument("text")
@pass_app
def note(app: App, key: str, email: str, text: str) -> None:
    """Add a follow-up note to a student's enrollment."""
    from tmcaldav.store.roster import note as add_note

    with app.store.transaction() as db:
        add_note(db, key, email, text)
    click.echo(f"noted for {email} in {key}")


@cli.command("import")
@click.argument("file", metavar="FILE.csv")
@click.option("--kind", required=True, type=click.Choice(["sessions", "people", "enrollments"]))
@pass_app
def import_file(app: App, file: str, kind: str) -> None:
    """Import a CSV file; any bad row aborts the import and nothing is written."""
    from tmcaldav.store.csv_import import import_csv

    with app.store.transaction() as db:
        result = import_csv(db, file, kind, app.config.scheduling.timezone)
    click.echo(f"imported {result.rows} {kind}")
