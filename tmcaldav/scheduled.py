"""Scheduled invitations: the daemon invites a session's enrolled students by itself,
`[invitation] send_days_before` days before the start, or at the session's own
`invite_at` (`session add --invite-at`).

A step of every tick (the daemon's and `tmcaldav sync`'s). Each student is invited once:
only enrolled students who were never invited are picked (`invited_at` is set by the
invitation itself, in the transaction that records it), so a restart, a second tick or
a crash after the write never sends twice; a student enrolled after the time is invited
on the next tick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select

from tmcaldav.caldav import CalendarError
from tmcaldav.config import Config
from tmcaldav.errors import TmcaldavError
from tmcaldav.publish import Publisher
from tmcaldav.store import Store
from tmcaldav.store.model import Enrollment, Person, TrainingSession, utcnow

log = logging.getLogger(__name__)


@dataclass
class ScheduledResult:
    """What one pass invited, per session, and what failed."""

    invited: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """One line for the tick's log; empty when nothing was due."""
        if not self.invited and not self.failed:
            return ""
        parts = [f"{len(emails)} invited to {key}" for key, emails in self.invited.items()]
        parts += [f"{key} failed ({error})" for key, error in self.failed.items()]
        return ", ".join(parts)


def due(store: Store, config: Config, now: datetime) -> dict[str, list[str]]:
    """Session key → addresses to invite now: enrolled, never invited, in a scheduled
    session that has not started and whose invitation time has come."""
    days = config.invitation.send_days_before
    when: ColumnElement[bool] = TrainingSession.invite_at.is_not(None) & (
        TrainingSession.invite_at <= now
    )
    if days is not None:
        when = or_(
            when,
            and_(
                TrainingSession.invite_at.is_(None),
                TrainingSession.start_at <= now + timedelta(days=days),
            ),
        )
    with store.scratch() as db:
        rows = db.execute(
            select(TrainingSession.key, Person.email)
            .join(Enrollment, Enrollment.session_id == TrainingSession.id)
            .join(Person, Person.id == Enrollment.person_id)
            .where(
                TrainingSession.status == "scheduled",
                TrainingSession.start_at > now,
                when,
                Enrollment.status == "enrolled",
                Enrollment.calendar_status == "not_invited",
                Enrollment.invited_at.is_(None),
            )
            .order_by(TrainingSession.start_at, TrainingSession.key, Person.email)
        )
        found: dict[str, list[str]] = {}
        for key, email in rows:
            found.setdefault(key, []).append(email)
    return found


def send_scheduled(
    store: Store, publisher: Publisher, config: Config, now: datetime | None = None
) -> ScheduledResult:
    """Invite every student whose scheduled invitation is due; one session failing (the
    server, a full event) is logged and does not stop the others."""
    now = now or utcnow()
    result = ScheduledResult()
    for key, emails in due(store, config, now).items():
        try:
            invited = publisher.invite(key, emails)
        except CalendarError:
            raise  # the server is failing: the tick says so and tries again later
        except TmcaldavError as e:
            log.error("session %s: the scheduled invitation failed: %s", key, e)
            result.failed[key] = str(e)
            continue
        if invited:
            result.invited[key] = invited
            log.info(
                "session %s: scheduled invitation sent to %d student(s): %s",
                key,
                len(invited),
                ", ".join(invited),
            )
    return result
