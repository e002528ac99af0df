"""Commands that talk to the calendar: invite, publish, sync, and iMIP mail."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from tmcaldav.app import App
from tmcaldav.cli.base import EXIT_FAILED, EXIT_USAGE, cli, fail, pass_app

if TYPE_CHECKING:
    from tmcaldav.ical import ScheduleResult


@cli.command()
@click.argument("key")
@click.argument("emails", nargs=-1, metavar="[EMAIL...]")
@click.option("--all-enrolled", is_flag=True, help="Invite every enrolled student.")
@click.option("--resend", is_flag=True, help="Send the invitation again to these students.")
@pass_app
def invite(app: App, key: str, emails: tuple[str, ...], all_enrolled: bool, resend: bool) -> None:
    """Invite students: add them to the session's event (answers already given are kept).

    In server mode the server's word on each delivery is read back: exits 1, naming the
    students and what to check, when it did not deliver (their Calendar column shows
    ⚠ not delivered until a later delivery succeeds)."""
    from tmcaldav.domain import NOT_DELIVERED_ICON

    invitation = app.publisher.invite_checked(key, emails, all_enrolled=all_enrolled, resend=resend)
    newly = invitation.newly
    click.echo(
        f"session {key}: invited {len(newly)} new"
        + (f" ({', '.join(newly)})" if newly else "")
        + (", invitations sent again" if resend else "")
    )
    calendar = app.publisher.calendar
    if (
        resend
        and app.config.scheduling.mode == "server"
        and calendar.profile.force_send_reaches == "all"
    ):
        click.echo(
            f"note: {calendar.profile.name} sends the invitation again to every student of "
            "the session, not only to those named",
            err=True,
        )
    if invitation.undelivered:
        lines = [
            f"  {NOT_DELIVERED_ICON} {email}: {result.schedule_status or 'no SCHEDULE-STATUS'}"
            f" ({result.meaning})"
            for email, result in sorted(invitation.undelivered.items())
        ]
        fail(
            f"session {key}: the CalDAV server did not deliver the invitation to "
            f"{len(invitation.undelivered)} student(s):\n"
            + "\n".join(lines)
            + "\n"
            + _what_to_check(invitation.undelivered.values())
            + f"\nthen send it again: tmcaldav invite {key} "
            + " ".join(sorted(invitation.undelivered))
            + " --resend"
        )


def _what_to_check(results: Iterable[ScheduleResult]) -> str:
    """Advice for failed deliveries, by what the server said."""
    codes = {r.code for r in results}
    advice = []
    if None in codes:
        advice.append(
            "no SCHEDULE-STATUS means the server scheduled nothing: [scheduling] "
            "organizer_email must be one of the login's calendar addresses "
            "(`tmcaldav doctor` lists them)"
        )
    if any(c and c.startswith("3.") for c in codes):
        advice.append(
            "3.x: the server does not know these addresses as calendar users: check the "
            "spelling, and that each student has an account there (on Xandikos, one that "
            "logged in since the server started)"
        )
    if any(c and c.startswith("5.") for c in codes):
        advice.append("5.x: the server could not deliver now: try again later, check its logs")
    return "check: " + "; ".join(advice or ["the server's logs"])


@cli.command()
@click.option("--all", "everything", is_flag=True, help="Republish every session.")
@pass_app
def publish(app: App, everything: bool) -> None:
    """Publish sessions that are not on the server yet (or, with --all, every session)."""
    from tmcaldav.publish import PublishError

    keys = app.publisher.keys_to_publish(everything)
    failed = []
    with click.progressbar(
        keys,
        label="publishing",
        file=sys.stderr,
        show_pos=True,
        item_show_func=lambda k: k or "",
    ) as bar:
        for key in bar:
            try:
                app.publisher.publish(key)
            except PublishError as e:
                failed.append(f"{key}: {e}")
    click.echo(f"published {len(keys) - len(failed)} of {len(keys)} session(s)")
    if failed:
        fail("\n".join(failed))


@cli.command()
@click.option(
    "--accept-empty",
    is_flag=True,
    help="Accept that the calendar lost every event (after checking URL and permissions).",
)
@pass_app
def sync(app: App, accept_empty: bool) -> None:
    """One tick: poll the students' answers into the store, then run the hooks.

    Exits 75 while the daemon runs on the same store (it polls by itself; SIGUSR1 makes
    it poll now)."""
    from tmcaldav.store.lock import AlreadyRunning
    from tmcaldav.sync import EmptyCalendar

    lock = app.lock()
    try:
        lock.acquire()
    except AlreadyRunning as e:
        fail(f"{e}; it polls by itself (`systemctl kill -s USR1 tmcaldav` polls now)", 75)
    try:
        try:
            result = app.poll(accept_empty=accept_empty)
        except EmptyCalendar as e:
            fail(str(e))
        dispatched = app.run_hooks()
    finally:
        app.close()
        lock.release()
    click.echo(f"{result.summary()}; {dispatched.summary()}")


@cli.group()
def mail() -> None:
    """iMIP mail (scheduling.mode = "imip"): students' answers by e-mail."""


@mail.command("ingest")
@click.argument("file", required=False, metavar="[FILE|-]")
@click.option("--sender", metavar="ADDRESS", help="The envelope sender (e.g. Postfix ${sender}).")
@pass_app
def mail_ingest(app: App, file: str | None, sender: str | None) -> None:
    """Process one iMIP message from FILE or stdin (-), e.g. piped in by the MTA; without
    FILE, read the configured [imap] or [maildir] mailbox once.

    Exit codes for an MTA: 0 processed, refused or not an iMIP message (all final);
    75 (EX_TEMPFAIL) the CalDAV server could not be reached: deliver it again later.
    """
    from tmcaldav.imip.replies import TemporaryFailure
    from tmcaldav.store.model import utcnow

    service = app.mail
    if service is None:
        fail('mail ingest needs scheduling.mode = "imip"', EXIT_USAGE)
    if file is None:
        if app.config.imap is None and app.config.maildir is None:
            fail("no [imap] or [maildir] section; name a FILE or - for stdin", EXIT_USAGE)
        result = app.read_mail()
        assert result is not None
        click.echo(result.summary())
        if result.errors and not result.read:
            raise click.exceptions.Exit(EXIT_FAILED)
        return
    if file == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            with open(file, "rb") as f:
                raw = f.read()
        except OSError as e:
            fail(f"cannot read {file}: {e.strerror}", EXIT_USAGE)
    app.publisher  # noqa: B018 - answers are written with the app's publisher
    try:
        processed = service.ingest(raw, envelope_sender=sender)
    except TemporaryFailure as e:
        fail(f"{e}; the message was not applied, deliver it again later", 75)
    if processed.outcome == "refresh":
        service.send_due(utcnow(), session_key=processed.session_key)
    who = f" ({processed.email} in {processed.session_key})" if processed.email else ""
    click.echo(f"{processed.outcome}{who}" + (f": {processed.detail}" if processed.detail else ""))
