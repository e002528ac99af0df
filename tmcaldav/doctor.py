"""`tmcaldav doctor`: can this configuration work? Server, calendar, scheduling, store.

Each check prints one line starting with "ok", "warn" or "FAIL"; the run fails only
when the server or the store cannot be used, or (server mode) when the server would
schedule nothing because organizer_email is not one of the login's addresses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from tmcaldav.caldav import CalendarError
from tmcaldav.caldav.profiles import GENERIC
from tmcaldav.config import Config, SecretError
from tmcaldav.domain import normalise_address
from tmcaldav.words import plural

if TYPE_CHECKING:
    from tmcaldav.store import Store


def run_doctor(config: Config, say: Callable[[str], None]) -> bool:
    """Run every check, printing one line each; False when something is unusable."""
    from tmcaldav.store import Store, StoreError

    try:
        store = Store(config.store.url)
        store.check_schema()
    except StoreError as e:
        say(f"FAIL store: {e}")
        store_ok = False
    else:
        try:
            store_ok = _check_store(store, say)
            _check_private_files(config, store, say)
            _check_plugins(store, say)
            _check_unreadable(store, say)
            _check_daemons(store, config, say)
            if config.scheduling.mode == "imip":
                from tmcaldav.imip.service import doctor_mail

                store_ok = doctor_mail(config, store, say) and store_ok
        finally:
            store.close()
    if config.caldav is None:
        say("FAIL caldav: no [caldav] section; sessions cannot be published")
        return False
    return _check_server(config, say) and store_ok


def _check_store(store: Store, say: Callable[[str], None]) -> bool:
    from tmcaldav.store.model import TrainingSession

    with store.scratch() as db:
        missing = db.scalars(
            select(TrainingSession.key).where(TrainingSession.calendar_state == "missing")
        ).all()
    say(f"ok   store: {store.safe_url} ({store.backend})")
    if missing:
        say(
            f"warn sessions whose event is missing on the server: {', '.join(missing)} "
            "(`tmcaldav invite KEY` recreates it)"
        )
    return True


def _check_private_files(config: Config, store: Store, say: Callable[[str], None]) -> None:
    """Warn about tmcaldav's files that others can read (made before 0600 was the rule,
    or by hand)."""
    from sqlalchemy.engine import make_url

    from tmcaldav.files import exposed
    from tmcaldav.store.lock import StoreLock

    paths: list[str] = []
    if store.backend == "sqlite":
        database = make_url(store.url).database
        if database and database != ":memory:":
            paths += [database, f"{database}-wal", f"{database}-shm"]
            paths.append(str(StoreLock(store, config.daemon.lock_file).path()))
    elif config.daemon.lock_file:
        paths.append(config.daemon.lock_file)
    if config.maildir is not None:
        paths.append(str(Path(config.maildir.path) / f".{config.maildir.processed_folder}"))
    found = [(path, mode) for path in paths if (mode := exposed(path)) is not None]
    for path, mode in found:
        fix = "chmod 700" if mode.startswith("d") else "chmod 600"
        say(f"warn {path} can be read by others ({mode}); run: {fix} {path}")
    if not found:
        say("ok   tmcaldav's files are private")


def _check_plugins(store: Store, say: Callable[[str], None]) -> None:
    """Plugins parked for events after failing them [plugins] max_attempts times."""
    from sqlalchemy import func

    from tmcaldav.store.model import Outbox, PluginAttempt

    with store.scratch() as db:
        rows = db.execute(
            select(PluginAttempt.plugin, func.count(), func.max(PluginAttempt.parked_at))
            .where(PluginAttempt.parked_at.is_not(None))
            .group_by(PluginAttempt.plugin)
            .order_by(PluginAttempt.plugin)
        ).all()
        for plugin, count, _last in rows:
            latest = db.execute(
                select(Outbox.event_id, PluginAttempt.hook, PluginAttempt.last_error)
                .join(Outbox, Outbox.id == PluginAttempt.outbox_id)
                .where(PluginAttempt.plugin == plugin, PluginAttempt.parked_at.is_not(None))
                .order_by(PluginAttempt.parked_at.desc(), PluginAttempt.id.desc())
                .limit(1)
            ).one()
            say(
                f"warn plugin {plugin} is parked for {plural(count, 'event')} after failing them "
                f"repeatedly; the last: {latest.hook} for event {latest.event_id} "
                f"({latest.last_error}); fix the plugin (see the log)"
            )


def _check_unreadable(store: Store, say: Callable[[str], None]) -> None:
    """Objects of ours on the server that the poll could not read (the retry list)."""
    from tmcaldav.store.model import SyncRetry

    with store.scratch() as db:
        retries = db.execute(
            select(
                SyncRetry.href, SyncRetry.attempts, SyncRetry.first_seen_at, SyncRetry.last_error
            ).order_by(SyncRetry.first_seen_at)
        ).all()
    for retry in retries[:10]:
        say(
            f"warn {retry.href} on the server could not be read in "
            f"{plural(retry.attempts, 'poll')} "
            f"since {retry.first_seen_at:%Y-%m-%d %H:%M} UTC ({retry.last_error}); it is "
            "read again each poll"
        )
    if len(retries) > 10:
        say(f"warn ... and {plural(len(retries) - 10, 'more unreadable object')}")


def _check_daemons(store: Store, config: Config, say: Callable[[str], None]) -> None:
    """Which daemon is active on the store and which stand by (the `daemons` table)."""
    from datetime import timedelta

    from tmcaldav.domain import DaemonRole
    from tmcaldav.store.daemons import list_daemons
    from tmcaldav.words import duration

    takeover = config.daemon.takeover_seconds
    daemons = list_daemons(store)
    if not any(d.role == DaemonRole.ACTIVE for d in daemons):
        say(
            "warn daemon: no daemon is active on this store (start one: tmcaldav run; "
            "none is needed when tmcaldav-once.timer runs `run --once`)"
        )
    for d in daemons:
        since = d.active_since if d.role == DaemonRole.ACTIVE else d.started_at
        where = f"on {d.host} (pid {d.pid}) since {since:%Y-%m-%d %H:%M:%S} UTC" if since else ""
        silent = duration(timedelta(seconds=d.silent_for))
        if d.silent_for <= takeover:
            doing = "active" if d.role == DaemonRole.ACTIVE else "standing by"
            say(f"ok   daemon: {doing} {where}, heard from {silent} ago")
        elif d.role == DaemonRole.ACTIVE:
            say(
                f"warn daemon: the active daemon {where} has been silent for {silent} (more "
                f"than takeover_after = {takeover:g} s): paused, hung or its machine gone; "
                "a standby takes over, else restart it"
            )
        else:
            say(f"warn daemon: the standby {where} has been silent for {silent}: it is gone")


def _check_server(config: Config, say: Callable[[str], None]) -> bool:
    from tmcaldav.publish import connect_calendar

    assert config.caldav is not None
    try:
        calendar = connect_calendar(config)
    except (CalendarError, SecretError) as e:
        say(f"FAIL caldav: {e}")
        return False
    try:
        info = calendar.server_info()
    except CalendarError as e:
        say(f"FAIL caldav: {e}")
        calendar.close()
        return False
    say(
        f"ok   caldav: {info['url']} as {info['user']} (login: {info['auth']})"
        + (f" ({info['product']})" if info.get("product") else "")
    )
    profile = calendar.profile
    say(f"ok   server profile: {profile.name} ({profile.notes})")
    if info["sync_collection"]:
        say("ok   sync-collection (RFC 6578): polls fetch only what changed")
    else:
        say("warn no sync-collection: polls compare ETags of the whole calendar (slower)")
    schedules = bool(info["calendar_auto_schedule"])
    mode = config.scheduling.mode
    if schedules:
        say("ok   the server does scheduling (calendar-auto-schedule)")
    else:
        say("ok   the server does no scheduling")
    if mode == "server" and not schedules:
        say(
            'warn scheduling.mode = "server" but the server does no scheduling: students '
            'receive nothing; use mode = "imip" with [smtp] and [imap] or [maildir]'
        )
    elif mode == "imip" and schedules:
        say(
            'warn scheduling.mode = "imip" on a scheduling server: tmcaldav mails the '
            'invitations itself (SCHEDULE-AGENT=CLIENT); mode = "server" would let the '
            "server do it"
        )
    calendar_ok = True
    if mode == "server" and info.get("is_schedule_default") is False:
        default = info["schedule_default_calendar"]
        if profile.replies_in_any_calendar:
            say(
                f"ok   the calendar is not the default scheduling calendar, and "
                f"{profile.name} schedules from any calendar and brings answers back to it"
            )
        elif profile is not GENERIC:
            calendar_ok = False
            say(
                f"FAIL {profile.name} sends invitations from this calendar but brings the "
                f"students' answers back only into the default scheduling calendar "
                f"({default}): remove [caldav] calendar (tmcaldav then uses the default) "
                f"or set it to that calendar's id"
            )
        else:
            say(
                f"warn the calendar is not the server's default scheduling calendar "
                f"({default}); the server may not apply answers to it"
            )
    organizer_ok = True
    if mode == "server" and calendar.schedules:
        organizer_ok = check_organizer(
            config.scheduling.organizer_email,
            calendar.user_addresses,
            ignore_case=profile.organizer_match_ignores_case,
            user=str(info["user"]),
            say=say,
        )
    calendar.close()
    return organizer_ok and calendar_ok


def check_organizer(
    organizer_email: str,
    addresses: tuple[str, ...],
    *,
    ignore_case: bool,
    user: str,
    say: Callable[[str], None],
) -> bool:
    """Is organizer_email one of the login's calendar addresses, spelled as the server
    matches it? A scheduling server schedules nothing for any other ORGANIZER: events
    are stored, and nobody is invited (and no error says so)."""
    wanted = normalise_address(organizer_email)
    if not addresses:
        say(
            "warn the server lists no calendar-user-address-set for the login: cannot check "
            "that it schedules for [scheduling] organizer_email"
        )
        return True
    listed = ", ".join(addresses)
    # tmcaldav writes every address in lower case (DESIGN §6).
    if wanted in addresses or (ignore_case and wanted in {a.lower() for a in addresses}):
        say(f"ok   organizer_email {wanted} is one of the login's calendar addresses")
        return True
    if wanted in {a.lower() for a in addresses}:
        say(
            f"FAIL organizer_email {wanted}: the server spells the login's address "
            f"differently ({listed}) and matches addresses exactly, case included, while "
            "tmcaldav writes addresses in lower case; change the address on the server to "
            "lower case"
        )
        return False
    say(
        f"FAIL organizer_email {wanted} is not one of the calendar addresses of login "
        f"{user!r} ({listed}): the server stores the events but invites nobody; set "
        f"[scheduling] organizer_email to one of them, or log in as the account that owns "
        f"{wanted}"
    )
    return False
