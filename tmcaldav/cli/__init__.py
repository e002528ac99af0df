"""The `tmcaldav` command line: parse, call a service, render a table or `--json`.

Exit codes: 0 success, 1 a failed operation, 2 bad usage, bad config or a store that
cannot be opened. Every error is one message that says what to do next; no tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from tmcaldav import __version__
from tmcaldav.app import App
from tmcaldav.config import ConfigError, SecretError, config_path
from tmcaldav.errors import EXIT_FAILED, EXIT_USAGE, TmcaldavError

log = logging.getLogger(__name__)



def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error for the administrator and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


class TmcaldavGroup(click.Group):
    """A click group that turns domain errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except TmcaldavError as error:
            fail(error.report(), error.exit_code)


def emit_json(data: Any) -> None:
    """Print JSON for scripts (UTF-8, not ASCII-escaped)."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(cls=TmcaldavGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_file",
    metavar="PATH",
    help="Config file (else $TMCALDAV_CONFIG, else ./daemon.toml).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="tmcaldav")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int) -> None:
    """Keep enrollment records in step with students' calendars over CalDAV."""
    from tmcaldav.logs import setup_logging

    setup_logging(logging.WARNING - 10 * verbose)
    ctx.obj = App(config_path(config_file))


pass_app = click.make_pass_decorator(App)


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
    """Validate the config file (and that its password sources can be read)."""
    config = app.config
    for name in ("caldav", "smtp", "imap"):
        section = getattr(config, name)
        if section is not None and section.password.configured:
            try:
                section.password.read()
            except SecretError as e:
                raise ConfigError(config.path, [f"{name}: {e}"]) from e
    click.echo(f"{config.path}: ok (scheduling mode {config.scheduling.mode})")


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
    from tmcaldav.store import list_people
    from tmcaldav.store.pages import person_row, table

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
                click.option("--capacity", type=int, help="Seats."),
                click.option("--course", help="Course the session belongs to."),
                click.option("--description", help="Description shown in calendars."),
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
    from tmcaldav.store import list_sessions
    from tmcaldav.store.pages import session_summary, table

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
    from tmcaldav.store import get_session
    from tmcaldav.store.pages import render_page, session_page

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
    from tmcaldav.store import get_enrollment, get_session, history
    from tmcaldav.store.pages import history_rows, table

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


@cli.command()
@click.argument("key")
@click.argument("emails", nargs=-1, metavar="[EMAIL...]")
@click.option("--all-enrolled", is_flag=True, help="Invite every enrolled student.")
@click.option("--resend", is_flag=True, help="Send the invitation again to these students.")
@pass_app
def invite(app: App, key: str, emails: tuple[str, ...], all_enrolled: bool, resend: bool) -> None:
    """Invite students: add them to the session's event (answers already given are kept)."""
    newly = app.publisher.invite(key, emails, all_enrolled=all_enrolled, resend=resend)
    click.echo(
        f"session {key}: invited {len(newly)} new"
        + (f" ({', '.join(newly)})" if newly else "")
        + (", invitations sent again" if resend else "")
    )


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
    finally:
        app.close()
        lock.release()
    click.echo(f"{result.summary()}; {dispatched.summary()}")


@cli.command()
@click.option("--once", is_flag=True, help="Run exactly one tick, then exit.")
@click.pass_context
def run(ctx: click.Context, once: bool) -> None:
    """The daemon: poll, run the hooks, read mail, every [daemon] poll_interval.

    Exit codes: 0 ok, 1 the tick failed (--once), 2 config error, 75 another instance
    holds the store's lock. SIGTERM/SIGINT stop after the current step, SIGHUP reloads
    the config, SIGUSR1 polls now.
    """
    from tmcaldav.daemon import run_daemon
    from tmcaldav.logs import setup_logging

    # A service logs what it does; -v adds debug output.
    if logging.getLogger("tmcaldav").level > logging.INFO:
        setup_logging(logging.INFO)
    app: App = ctx.obj
    raise click.exceptions.Exit(run_daemon(app.path, once=once))


@cli.command()
@pass_app
def doctor(app: App) -> None:
    """Check the server: reachable, sync-collection, scheduling, and the store."""
    from tmcaldav.doctor import run_doctor

    ok = run_doctor(app.config, click.echo)
    if not ok:
        raise click.exceptions.Exit(EXIT_FAILED)


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


# ---- plugins, suggestions, reports ---------------------------------------------------------


@cli.command("plugins")
@json_option
@pass_app
def plugins_command(app: App, as_json: bool) -> None:
    """The plugins loaded, their versions and hooks, and those that failed to load.

    Exits 1 when a plugin named in [plugins] enable could not be loaded."""
    from tmcaldav.hooks.plugins import get_plugin_manager
    from tmcaldav.store.pages import table

    pm = get_plugin_manager(app.config)
    data = {
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
        rows = [("NAME", "VERSION", "HOOKS", "SOURCE")] + [
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
    from tmcaldav.hooks.suggestions import list_suggestions, render_suggestions

    app = ctx.find_object(App)
    assert app is not None
    with app.store.transaction() as db:
        rows = list_suggestions(db, session_key=session_key, include_decided=everything)
    if as_json:
        emit_json(rows)
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
@pass_app
def report_no_shows(app: App, as_json: bool) -> None:
    """Students who missed sessions, and how many of those they had accepted."""
    from tmcaldav.store.pages import table
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


def main() -> None:
    """Console entry point."""
    cli(prog_name="tmcaldav")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
