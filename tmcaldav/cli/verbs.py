"""The administrator's corrections and follow-ups: `person edit`, `person remove`,
`session delete`, `answer` (given by phone) and `remind`."""

from __future__ import annotations

import click

from tmcaldav.app import App
from tmcaldav.cli.base import cli, pass_app
from tmcaldav.cli.roster import person, session
from tmcaldav.domain import ICONS, MANUAL_ANSWERS
from tmcaldav.words import plural

# ---- people ---------------------------------------------------------------------------


@person.command("edit")
@click.argument("email")
@click.option("--name", help="The full name as it appears in invitations.")
@click.option("--phone", help="Phone number for follow-ups (empty: none).")
@click.option("--email", "new_email", metavar="NEW", help="A corrected e-mail address.")
@pass_app
def person_edit(
    app: App, email: str, name: str | None, phone: str | None, new_email: str | None
) -> None:
    """Correct a student's name, phone or address.

    A new address replaces the old one on the event of every upcoming session the student
    is invited to (the old address is taken off, and in imip mode gets a CANCEL; the new
    one is invited, keeping the answer given). The history stays with the student.
    """
    from tmcaldav.corrections import edit_person_everywhere

    done = edit_person_everywhere(
        app.store, app.publisher, email, name=name, phone=phone, new_email=new_email
    )
    what = ", ".join(done.changed) or "nothing"
    line = f"{done.email}: changed {what}"
    if done.email != done.old_email:
        line += f" (was {done.old_email})"
    if done.readdressed:
        line += f"; the new address is on the event of {', '.join(done.readdressed)}"
    click.echo(line)
    if done.failed:
        click.echo(
            "error: these events still list the old address (the store has the new one; "
            "`tmcaldav publish --all` brings them in line):\n  " + "\n  ".join(done.failed),
            err=True,
        )
        raise click.exceptions.Exit(1)


@person.command("remove")
@click.argument("email")
@click.option(
    "--cancel-enrollments",
    is_flag=True,
    help="First cancel their upcoming enrollments (and take them off those events).",
)
@pass_app
def person_remove(app: App, email: str, cancel_enrollments: bool) -> None:
    """Remove a student with their enrollments and answers.

    Refused while they are in an upcoming session, unless --cancel-enrollments."""
    from tmcaldav.corrections import remove_person_everywhere

    cancelled, enrollments, answers = remove_person_everywhere(
        app.store, app.publisher, email, cancel_enrollments=cancel_enrollments
    )
    line = (
        f"removed {email.strip().lower()} "
        f"({plural(enrollments, 'enrollment')}, {plural(answers, 'answer')})"
    )
    if cancelled:
        line += f"; cancelled in {', '.join(cancelled)} first"
    click.echo(line)


# ---- sessions ---------------------------------------------------------------------------


@session.command("delete")
@click.argument("key")
@pass_app
def session_delete(app: App, key: str) -> None:
    """Delete a session that was never published or is cancelled, with everything in
    the store about it; its event leaves the server.

    A published session must be cancelled first; a session with attendance records is
    kept (they feed the no-show report)."""
    from tmcaldav.corrections import delete_session_everywhere

    deleted = delete_session_everywhere(app.store, app.publisher, key)
    click.echo(f"session {key} deleted" + (" (and its event on the server)" if deleted else ""))


# ---- answers and reminders -----------------------------------------------------------------


@cli.command()
@click.argument("key")
@click.argument("email")
@click.argument("status", type=click.Choice([str(s) for s in MANUAL_ANSWERS]))
@click.option("--note", help="What they said, kept as a note.")
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="When they answered (ISO 8601, in the session's zone without an offset; "
    "default now).",
)
@pass_app
def answer(
    app: App, key: str, email: str, status: str, note: str | None, at: str | None
) -> None:
    """Record an answer a student gave another way (phone, mail, in person).

    It counts as their answer (the same hooks fire) until a later one comes from their
    calendar; their calendar itself is not changed."""
    from tmcaldav.cli.render import local_time
    from tmcaldav.corrections import record_answer
    from tmcaldav.store import get_session
    from tmcaldav.store.roster import parse_time

    when = None
    with app.store.scratch() as db:
        tz = get_session(db, key).tz
    if at is not None:
        when = parse_time(at, tz)
    done = record_answer(app.store, key, email, status, note=note, at=when)
    stamp = local_time(done.responded_at.isoformat(), tz)
    if done.shown:
        click.echo(
            f"{done.email} in {key}: {ICONS[status]} {status} by hand at {stamp} ({tz}) "
            f"(was {ICONS[done.old]} {done.old})"
        )
    else:
        click.echo(
            f"{done.email} in {key}: {ICONS[status]} {status} at {stamp} kept in the history; "
            f"a later answer ({ICONS[done.old]} {done.old}) is shown"
        )


@cli.command()
@click.argument("key")
@click.argument("emails", nargs=-1, metavar="[EMAIL...]")
@click.option("--no-answer", is_flag=True, help="Those who have not answered (✉ invited).")
@click.option("--tentative", is_flag=True, help="Those who answered Maybe (? tentative).")
@click.option(
    "--dry-run", is_flag=True, help="Print exactly what would be sent, to whom; change nothing."
)
@click.option(
    "--force", is_flag=True, help="Also those reminded within [invitation] remind_min_interval."
)
@pass_app
def remind(
    app: App,
    key: str,
    emails: tuple[str, ...],
    no_answer: bool,
    tentative: bool,
    dry_run: bool,
    force: bool,
) -> None:
    """Send the invitation again to students who have not answered or are unsure.

    Name them, or pick them with --no-answer and/or --tentative (among the named ones,
    if any). imip mode: a fresh invitation mail; server mode: the server is asked to
    send it again. Each reminder is kept in the student's history."""
    from tmcaldav.reminders import remind as send_reminders

    result = send_reminders(
        app.config,
        app.publisher,
        key,
        list(emails),
        no_answer=no_answer,
        tentative=tentative,
        force=force,
        dry_run=dry_run,
    )
    if result.preview is not None:
        click.echo(result.preview)
    elif result.reminded:
        click.echo(f"session {key}: reminded {len(result.reminded)}: {', '.join(result.reminded)}")
    else:
        click.echo(f"session {key}: nobody to remind")
    for email, why in result.skipped:
        click.echo(f"  not {email}: {why}")
