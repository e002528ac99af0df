"""`tmcaldav doctor`: can this configuration work? Server, calendar, scheduling, store.

Each check prints one line starting with "ok", "warn" or "FAIL"; the run fails only
when the server or the store cannot be used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from tmcaldav.caldav import CalendarError
from tmcaldav.config import Config, SecretError

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
        f"ok   caldav: {info['url']} as {info['user']}"
        + (f" ({info['product']})" if info.get("product") else "")
    )
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
    if mode == "server" and info.get("is_schedule_default") is False:
        say(
            f"warn the calendar is not the server's default scheduling calendar "
            f"({info['schedule_default_calendar']}); the server may not apply answers to it"
        )
    calendar.close()
    return True
