"""Commands that talk to the calendar: invite, publish, sync, and iMIP mail."""

from __future__ import annotations

import sys

import click

from tmcaldav.app import App
from tmcaldav.cli.base import EXIT_FAILED, EXIT_USAGE, cli, fail, pass_app
from tmcaldav.words import plural


@cli.command()
@click.argument("key", required=False)
@click.argument("emails", nargs=-1, metavar="[EMAIL...]")
@click.option("--all-enrolled", is_flag=True, help="Invite every enrolled student.")
@click.option("--resend", is_flag=True, help="Send the invitation again to these students.")
@click.option(
    "--all", "every_session", is_flag=True,
    help="Every scheduled session that has not started: invite its enrolled students.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print exactly what would be sent, to whom; change nothing."
)
@pass_app
def invite(
    app: App,
    key: str | None,
    emails: tuple[str, ...],
    all_enrolled: bool,
    resend: bool,
    every_session: bool,
    dry_run: bool,
) -> None:
    """Invite students to session KEY: add them to its event (answers already given are
    kept). `invite --all` invites the enrolled students of every upcoming session."""
    if every_session:
        if key or emails or resend or dry_run:
            fail("invite --all takes no KEY, EMAIL, --resend or --dry-run", EXIT_USAGE)
        _invite_sessions(app, _awaiting(app, None))
        return
    if key is None:
        fail("name a session KEY (or use --all for every upcoming session)", EXIT_USAGE)
    if dry_run:
        from tmcaldav.preview import Previewer

        previewer = Previewer(app.config)
        app.publisher.invite(
            key, emails, all_enrolled=all_enrolled, resend=resend, preview=previewer
        )
        click.echo(previewer.render())
        return
    newly = app.publisher.invite(key, emails, all_enrolled=all_enrolled, resend=resend)
    click.echo(
        f"session {key}: invited {len(newly)} new"
        + (f" ({', '.join(newly)})" if newly else "")
        + (", invitations sent again" if resend else "")
    )


def _awaiting(app: App, keys: list[str] | None) -> list[str]:
    """Upcoming scheduled sessions with enrolled students not invited yet."""
    from tmcaldav.store.model import utcnow
    from tmcaldav.store.queries import awaiting_invitation

    with app.store.scratch() as db:
        return awaiting_invitation(db, utcnow(), keys)


def _invite_sessions(app: App, keys: list[str]) -> None:
    """Invite the enrolled students of each session; every failure is listed at the end."""
    from tmcaldav.errors import TmcaldavError

    invited, failed = 0, []
    for key in keys:
        try:
            invited += len(app.publisher.invite(key, all_enrolled=True))
        except TmcaldavError as e:
            failed.append(f"{key}: {e}")
    click.echo(f"invited {plural(invited, 'student')} in {plural(len(keys), 'session')}")
    if failed:
        fail("\n".join(failed))


@cli.command()
@click.option("--all", "everything", is_flag=True, help="Republish every session.")
@click.option(
    "--invite", "and_invite", is_flag=True,
    help="Then invite the enrolled students of every session published.",
)
@pass_app
def publish(app: App, everything: bool, and_invite: bool) -> None:
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
    click.echo(f"published {len(keys) - len(failed)} of {plural(len(keys), 'session')}")
    published = [k for k in keys if not any(f.startswith(f"{k}: ") for f in failed)]
    waiting = _awaiting(app, published)
    if and_invite and waiting:
        _invite_sessions(app, waiting)
    elif waiting:
        click.echo(
            f"{plural(len(waiting), 'session')} published with enrolled students not invited "
            "yet: invite them with `tmcaldav invite --all` (or `tmcaldav invite KEY "
            "--all-enrolled` for one session)"
        )
    if failed:
        fail("\n".join(failed))


@cli.command()
@click.option(
    "--accept-empty", is_flag=True,
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
        # The daemon's other steps, so a timer running `sync` does all its work.
        scheduled = app.send_scheduled()
        notices = app.send_notices()
    finally:
        app.close()
        lock.release()
    extra = "".join(
        f"; {name}: {text}"
        for name, text in (("invitations", str(scheduled)), ("notices", str(notices)))
        if text
    )
    click.echo(f"{result.summary()}; {dispatched.summary()}{extra}")


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
