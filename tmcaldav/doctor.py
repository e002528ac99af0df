"""`tmcaldav doctor`: can this configuration work? Server, calendar, scheduling, store.

Each check prints one line starting with "ok", "warn" or "FAIL"; the run fails only
when the server or the store cannot be used.
"""

from __future__ import annotations

from collections.abc import Callable

from tmcaldav.calendar import CalendarError
from tmcaldav.config import Config, SecretError


def run_doctor(config: Config, say: Callable[[str], None]) -> bool:
    """Run every check, printing one line each; False when something is unusable."""
    ok = _check_store(config, say)
    if ok and config.scheduling.mode == "imip":
        from tmcaldav.mail import doctor_mail
        from tmcaldav.store import Store

        store = Store(config.store.url)
        ok = doctor_mail(config, store, say) and ok
        store.close()
    if config.caldav is None:
        say("FAIL caldav: no [caldav] section; sessions cannot be published")
        return False
    return _check_server(config, say) and ok


def _check_store(config: Config, say: Callable[[str], None]) -> bool:
    from tmcaldav.store import Store, StoreError

    try:
        store = Store(config.store.url)
        store.check_schema()
    except StoreError as e:
        say(f"FAIL store: {e}")
        return False
    with store.transaction() as db:
        from sqlalchemy import select

        from tmcaldav.model import TrainingSession

        missing = db.scalars(
            select(TrainingSession.key).where(TrainingSession.calendar_state == "missing")
        ).all()
    say(f"ok   store: {store.safe_url} ({store.backend})")
    if missing:
        say(
            f"warn sessions whose event is missing on the server: {', '.join(missing)} "
            "(`tmcaldav invite KEY` recreates it)"
        )
    store.close()
    return True


def _check_server(config: Config, say: Callable[[str], None]) -> bool:
    from tmcaldav.publish import connect_calendar

    assert config.caldav is not None
    try:
        calendar = connect_calendar(config)
        info = calendar.server_info()
    except (CalendarError, SecretError) as e:
        say(f"FAIL caldav: {e}")
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
