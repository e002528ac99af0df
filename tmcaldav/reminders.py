"""Reminders: send the invitation again to students who have not answered (or are
unsure), at most once per `[invitation] remind_min_interval` each unless forced.

In `imip` mode a reminder is a fresh iTIP REQUEST mail through the deliveries queue; in
`server` mode a conditional PUT of the event with ``SCHEDULE-FORCE-SEND=REQUEST`` on
those ATTENDEEs, which the server acts on and strips (RFC 6638 §7.3). Each is recorded
per student (`reminders` table) and shown in `session history`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tmcaldav.config import Config
from tmcaldav.domain import ICONS, normalise_address
from tmcaldav.errors import UsageError
from tmcaldav.preview import Previewer
from tmcaldav.publish import Publisher
from tmcaldav.store.model import Enrollment, Reminder, TrainingSession, utcnow
from tmcaldav.store.roster import RosterError


@dataclass
class RemindResult:
    """Who was (or would be) reminded, who was left out and why, and a dry run's text."""

    reminded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    preview: str | None = None


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 90:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"


def remind(
    config: Config,
    publisher: Publisher,
    key: str,
    emails: list[str],
    *,
    no_answer: bool = False,
    tentative: bool = False,
    force: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RemindResult:
    """Remind the named students, or with `no_answer` / `tentative` those whose calendar
    status is invited / tentative (among the named ones, if any are named)."""
    if not emails and not (no_answer or tentative):
        raise UsageError("name the students to remind, or use --no-answer and/or --tentative")
    wanted = list(dict.fromkeys(normalise_address(e) for e in emails))
    statuses = {s for s, on in (("invited", no_answer), ("tentative", tentative)) if on}
    interval = timedelta(seconds=config.invitation.remind_min_interval)
    result = RemindResult()

    def check(db: Session, session: TrainingSession) -> list[Enrollment]:
        moment = now or utcnow()
        result.skipped.clear()
        if session.status == "cancelled":
            raise RosterError(f"session {key} is cancelled; nobody is reminded")
        if session.calendar_state == "unpublished":
            raise RosterError(f"session {key} is not published; invite first: tmcaldav invite")
        if session.start_at <= moment:
            raise RosterError(f"session {key} has started; a reminder is too late")
        by_email = {e.person.email: e for e in session.enrollments}
        if wanted:
            unknown = [a for a in wanted if a not in by_email]
            if unknown:
                raise RosterError(f"not in session {key}: {', '.join(unknown)}; nothing sent")
            candidates = [by_email[a] for a in wanted]
            out = [
                e.person.email
                for e in candidates
                if e.status == "cancelled" or e.calendar_status == "not_invited"
            ]
            if out:
                raise RosterError(
                    f"not invited to session {key}: {', '.join(out)}; invite them first "
                    f"(tmcaldav invite {key} EMAIL...); nothing sent"
                )
        else:
            candidates = [
                e
                for e in session.enrollments
                if e.status != "cancelled" and e.calendar_status != "not_invited"
            ]
        if statuses:
            for e in candidates:
                if e.calendar_status not in statuses:
                    result.skipped.append(
                        (
                            e.person.email,
                            f"answered {ICONS[e.calendar_status]} {e.calendar_status}",
                        )
                    )
            candidates = [e for e in candidates if e.calendar_status in statuses]
        last: dict[int, datetime] = {
            enrollment_id: sent
            for enrollment_id, sent in db.execute(
                select(Reminder.enrollment_id, func.max(Reminder.sent_at))
                .where(Reminder.enrollment_id.in_([e.id for e in candidates] or [-1]))
                .group_by(Reminder.enrollment_id)
            )
        }
        picked = []
        for e in candidates:
            sent = last.get(e.id)
            if sent is not None and moment - sent < interval and not force:
                result.skipped.append(
                    (e.person.email, f"reminded {_ago(moment - sent)}; --force sends anyway")
                )
                continue
            picked.append(e)
        return picked

    previewer = Previewer(config) if dry_run else None
    result.reminded = publisher.remind(key, check, preview=previewer)
    if previewer is not None:
        result.preview = previewer.render()
    return result
