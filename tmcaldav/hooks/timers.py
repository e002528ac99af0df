"""Time hooks: `on_no_response`, `on_session_ended` and `on_daily` become outbox rows
when they are due.

Each gets a deterministic event id ("no_response:<enrollment>:<plugin>",
"session_ended:<session>", "daily:<plugin>:<local day>"), so it fires once however many
ticks find it due.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import String, cast, exists, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tmcaldav.hooks.outbox import (
    EVENT_ID_LENGTH,
    DailyEvent,
    NoResponseEvent,
    SessionEndedEvent,
    bounded,
    to_row,
)
from tmcaldav.hooks.plugins import DEFAULT_DAYS_BEFORE, TmcaldavPluginManager
from tmcaldav.store import Store
from tmcaldav.store.model import Enrollment, Outbox, Person, TrainingSession

log = logging.getLogger(__name__)

# Sessions that ended longer ago than this do not fire on_session_ended.
ENDED_LOOKBACK = timedelta(days=30)


def schedule_time_hooks(
    store: Store, pm: TmcaldavPluginManager, now: datetime, tz: str = "UTC"
) -> int:
    """Outbox rows for time hooks that are due and have not fired; returns how many.

    `tz` is the zone of `on_daily`'s hours and days ([scheduling] timezone).

    The queries leave out what has fired (NOT EXISTS an outbox row with the same
    deterministic event id, found through its unique index), so an idle tick reads
    nothing however many sessions are in the window.
    """
    due: dict[str, Outbox] = {}
    with store.scratch() as db:
        due.update(_due_no_response(db, pm, now))
        due.update(_due_session_ended(db, pm, now))
        due.update(_due_daily(pm, now, tz))
        if not due:
            return 0
        # Fired meanwhile by another process, or ids too long to check in SQL.
        existing: set[str] = set()
        ids = list(due)
        for i in range(0, len(ids), 500):
            existing.update(
                db.scalars(select(Outbox.event_id).where(Outbox.event_id.in_(ids[i : i + 500])))
            )
    fresh = [row for event_id, row in due.items() if event_id not in existing]
    if not fresh:
        return 0
    try:
        with store.transaction() as db:
            db.add_all(fresh)
    except IntegrityError:
        # Another process scheduled them between our read and our write.
        log.info("time hooks were scheduled by another process meanwhile")
        return 0
    return len(fresh)

def _plugins_with(pm: TmcaldavPluginManager, hook: str) -> list[str]:
    return sorted({impl.plugin_name for impl in getattr(pm.hook, hook).get_hookimpls()})

def _due_no_response(db: Session, pm: TmcaldavPluginManager, now: datetime) -> dict[str, Outbox]:
    due = {}
    # One query per plugin: each has its own window (and its own event ids).
    for plugin in _plugins_with(pm, "on_no_response"):
        window = timedelta(days=pm.days_before.get(plugin, DEFAULT_DAYS_BEFORE))
        # The sessions in the window as a subquery, not a join: SQLite then starts
        # from them (and the enrollments' session index) instead of checking every
        # enrollment of the store against the outbox.
        starting = select(TrainingSession.id).where(
            TrainingSession.status == "scheduled",
            TrainingSession.calendar_state == "published",
            TrainingSession.start_at > now,
            TrainingSession.start_at <= now + window,
        )
        stmt = (
            select(Enrollment.id, Enrollment.session_id, Person.email)
            .join(Person, Person.id == Enrollment.person_id)
            .where(
                Enrollment.session_id.in_(starting),
                Enrollment.status.in_(("enrolled", "waitlisted")),
                Enrollment.calendar_status.in_(("invited", "tentative")),
            )
        )
        if len(NoResponseEvent.event_id_for(2**63, plugin)) <= EVENT_ID_LENGTH:
            # The id is never shortened for this plugin, so SQL can build it.
            fired = literal("no_response:") + cast(Enrollment.id, String) + f":{plugin}"
            stmt = stmt.where(~exists().where(Outbox.event_id == fired))
        for row in db.execute(stmt):
            event_id = bounded(NoResponseEvent.event_id_for(row.id, plugin), EVENT_ID_LENGTH)
            due[event_id] = to_row(
                NoResponseEvent(plugin, row.email),
                session_id=row.session_id,
                enrollment_id=row.id,
                event_id=event_id,
            )
    return due

def _due_daily(pm: TmcaldavPluginManager, now: datetime, tz: str) -> dict[str, Outbox]:
    local = now.astimezone(ZoneInfo(tz))
    due = {}
    for plugin in _plugins_with(pm, "on_daily"):
        if local.hour < pm.daily_hour.get(plugin, 7):
            continue
        day = local.date().isoformat()
        event_id = bounded(DailyEvent.event_id_for(plugin, day), EVENT_ID_LENGTH)
        due[event_id] = to_row(DailyEvent(plugin, day), session_id=None, event_id=event_id)
    return due


def _due_session_ended(db: Session, pm: TmcaldavPluginManager, now: datetime) -> dict[str, Outbox]:
    if not _plugins_with(pm, "on_session_ended"):
        return {}
    fired = literal("session_ended:") + cast(TrainingSession.id, String)
    rows = db.execute(
        select(TrainingSession.id, TrainingSession.key).where(
            TrainingSession.status == "scheduled",
            TrainingSession.end_at <= now,
            TrainingSession.end_at > now - ENDED_LOOKBACK,
            ~exists().where(Outbox.event_id == fired),
        )
    )
    return {
        SessionEndedEvent.event_id_for(row.id): to_row(
            SessionEndedEvent(row.key),
            session_id=row.id,
            event_id=SessionEndedEvent.event_id_for(row.id),
        )
        for row in rows
    }
