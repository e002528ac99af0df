"""The administrator's records: people, sessions (the session page), enrollments,
notes and CSV import."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tmcaldav.app import App
from tmcaldav.cli.base import cli, emit_json, json_option, pass_app, reading
from tmcaldav.cli.export import emit_for_scripts, script_formats
from tmcaldav.domain import CAPACITY_MAX
from tmcaldav.words import plural

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
                    "--invite-at",
                    metavar="TIME",
                    help="When the daemon invites the enrolled students (ISO 8601; "
                    "overrides [invitation] send_days_before; empty clears it).",
                ),
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
def session_add(app: App, /, key: str, **fields: Any) -> None:
    """Add a session with a KEY chosen by the organisation."""
    from tmcaldav.store.roster import SessionFields, add_session

    with app.store.transaction() as db:
        added = add_session(db, key, SessionFields(**fields), app.config.scheduling.timezone)
        click.echo(f"added session {added.key}")


@session.command("edit")
@click.argument("key")
@session_options(required=False)
@pass_app
def session_edit(app: App, /, key: str, **fields: Any) -> None:
    """Change a session. A published one is updated on the server (SEQUENCE+1); a new
    start, end or zone is a reschedule: every student is asked again."""
    from tmcaldav.store.roster import SessionFields

    changed = app.publisher.edit(key, SessionFields(**fields))
    names = {"start_at": "start", "end_at": "end"}
    listed = ", ".join(sorted(names.get(c, c) for c in changed))
    click.echo(f"session {key}: " + (f"changed {listed}" if changed else "no change"))
    if changed & {"start_at", "end_at"}:
        _tell_about_reschedule(app, key)


def _tell_about_reschedule(app: App, key: str) -> None:
    """Server mode: say when the server did not deliver the new time, or leaves the
    students' old answers standing in their own calendars."""
    from tmcaldav.domain import ServerDelivery
    from tmcaldav.store import get_session

    if app.config.scheduling.mode != "server":
        return
    with app.store.scratch() as db:
        failed = sorted(
            e.person.email
            for e in get_session(db, key, notes=False).enrollments
            if e.delivery_status == ServerDelivery.NOT_DELIVERED and e.calendar_status == "invited"
        )
    if failed:
        click.echo(
            f"warning: the CalDAV server did not deliver the new time to {', '.join(failed)} "
            f"(`tmcaldav session show {key}` says why)",
            err=True,
        )
    profile = app.publisher.calendar.profile
    if app.publisher.calendar.schedules and not profile.reschedule_resets_student_copy:
        click.echo(
            f"note: {profile.name} leaves each student's old answer in their own calendar: "
            "the Calendar column here waits for a new answer, but a student who keeps the "
            "old one sends nothing; ask them to answer again",
            err=True,
        )


@session.command("cancel")
@click.argument("key")
@pass_app
def session_cancel(app: App, key: str) -> None:
    """Cancel a session; its event stays on the server, marked cancelled."""
    from tmcaldav.hooks.suggestions import list_suggestions

    published = app.publisher.cancel(key)
    click.echo(f"session {key} cancelled" + (" (event updated)" if published else ""))
    with app.store.transaction() as db:
        advice = list_suggestions(db, session_key=key)
    if advice:
        click.echo(
            f"{plural(len(advice), 'suggestion')} for its students: "
            f"tmcaldav suggestions --session {key}"
        )


#: The CSV columns of `session list` (the JSON fields, `counts` one column each).
SESSION_COLUMNS = (
    "key",
    "title",
    "course",
    "start",
    "end",
    "tz",
    "location",
    "capacity",
    "status",
    "uid",
    "sequence",
    "calendar_state",
    "seats_taken",
    "waitlisted",
    "counts.accepted",
    "counts.tentative",
    "counts.declined",
    "counts.invited",
    "counts.not_invited",
    "counts.delegated",
    "invite_at",
)
#: The CSV columns of `session show`: the session's key, then each student's fields.
STUDENT_COLUMNS = (
    "session",
    "email",
    "name",
    "status",
    "calendar",
    "icon",
    "responded_at",
    "waitlist_position",
    "notes",
    "calendar_reason",
    "invited_at",
    "phone",
    "by_hand",
)


@session.command("list")
@script_formats
@pass_app
def session_list(app: App, as_json: bool, as_csv: bool) -> None:
    """List sessions, soonest first, with the count of each calendar status."""
    from tmcaldav.cli.render import counts_line, table
    from tmcaldav.store.pages import session_list

    with reading(app) as db:
        rows = session_list(db)
    if emit_for_scripts(rows, as_json, as_csv, SESSION_COLUMNS):
        return
    header = ("KEY", "TITLE", "START", "TZ", "SEATS", "WAIT", "STATUS", "CALENDAR", "ANSWERS")
    click.echo(
        table(
            [header]
            + [
                (
                    r["key"],
                    r["title"],
                    r["start"],
                    r["tz"],
                    _seats(r),
                    str(r["waitlisted"]),
                    r["status"],
                    r["calendar_state"],
                    counts_line(r["counts"]),
                )
                for r in rows
            ]
        )
    )


def _seats(row: dict[str, Any]) -> str:
    """The SEATS column: taken/capacity, or "cancelled" (a cancelled session has none)."""
    if row["status"] == "cancelled":
        return "cancelled"
    return f"{row['seats_taken']}/{row['capacity'] if row['capacity'] is not None else '∞'}"


@session.command("show")
@click.argument("key")
@script_formats
@pass_app
def session_show(app: App, key: str, as_json: bool, as_csv: bool) -> None:
    """The session page: every student with the Calendar column, and the counts.

    --csv prints one row per student (the JSON's student fields, after the session key).
    """
    from tmcaldav.cli.render import render_page
    from tmcaldav.store.model import utcnow
    from tmcaldav.store.outcomes import session_page_with_forecast

    with reading(app) as db:
        page = session_page_with_forecast(db, key, utcnow())
    students = ({"session": page["key"], **s} for s in page["students"])
    if not emit_for_scripts(page, as_json, as_csv, STUDENT_COLUMNS, students):
        click.echo(render_page(page))


@session.command("history")
@click.argument("key")
@click.argument("email")
@json_option
@pass_app
def session_history(app: App, key: str, email: str, as_json: bool) -> None:
    """Every answer of one student (and every reminder sent), with its times (in the
    session's zone), source and the evidence of its time; in server mode also what the
    server said about delivering the invitation; then what was suggested about her."""
    from tmcaldav.cli.render import render_history, render_suggestions
    from tmcaldav.hooks.suggestions import list_suggestions
    from tmcaldav.store import get_enrollment, get_session, history, reminders, schedule_history
    from tmcaldav.store.pages import history_rows

    with app.store.transaction() as db:
        session = get_session(db, key)
        enrollment = get_enrollment(db, session, email)
        rows = history_rows(
            list(history(db, enrollment)),
            list(reminders(db, enrollment)),
            list(schedule_history(db, enrollment)),
        )
        advice = list_suggestions(db, session_key=key, include_decided=True, email=email)
        tz = session.tz
    if as_json:
        emit_json(rows)
        return
    click.echo(render_history(rows, tz) + f"\n(times in {tz})")
    if advice:
        # What was suggested about her, and what became of it (withdrawn ones say why).
        click.echo("\nsuggestions:\n" + render_suggestions(advice))


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
