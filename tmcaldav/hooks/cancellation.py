"""Advice when a session is cancelled: another session of the course, or a call.

`advise_cancelled_session` runs in the transaction that cancels the session (from
`Publisher.cancel`): each enrolled student gets offer_other_session for the next
scheduled session of the same course that has a free seat for them (seats handed out in
page order, so two students are never offered the last seat), or contact_student when
there is none. The session's other open suggestions are withdrawn by the same
transaction's premise check. The advice is tmcaldav's own (plugin "tmcaldav").
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from tmcaldav.domain import EnrollmentStatus, SessionStatus, SuggestionKind
from tmcaldav.hooks.outbox import bounded
from tmcaldav.hooks.premises import premise_for
from tmcaldav.hooks.snapshots import build_session_view, session_view
from tmcaldav.hooks.suggestions import record_suggestion
from tmcaldav.hooks.views import SessionView, StudentView
from tmcaldav.store.model import Enrollment, Suggestion, TrainingSession
from tmcaldav.words import plural

PLUGIN = "tmcaldav"


def _later_sessions(db: Session, cancelled: SessionView, now: datetime) -> list[SessionView]:
    """Scheduled sessions of the same course that have not started, soonest first."""
    if cancelled.course is None:
        return []
    from sqlalchemy.orm import selectinload

    sessions = db.scalars(
        select(TrainingSession)
        .where(
            TrainingSession.course == cancelled.course,
            TrainingSession.status == SessionStatus.SCHEDULED,
            TrainingSession.start_at > now,
            TrainingSession.id != cancelled.id,
        )
        .options(selectinload(TrainingSession.enrollments).selectinload(Enrollment.notes))
        .order_by(TrainingSession.start_at, TrainingSession.key)
    ).all()
    return [session_view(s) for s in sessions]


def _who(student: StudentView) -> str:
    return student.name or student.email


def advise_cancelled_session(db: Session, session: TrainingSession, now: datetime) -> int:
    """Store the advice for the students of a session just cancelled; returns how many."""
    db.flush()
    view = build_session_view(db, session.id)
    if view is None:
        return 0
    later = _later_sessions(db, view, now)
    offered: dict[str, int] = {}
    count = 0
    for student in view.students:
        if student.status != EnrollmentStatus.ENROLLED:
            continue
        other = next(
            (
                o
                for o in later
                if o.student(student.email) is None
                and (o.free_seats is None or o.free_seats - offered.get(o.key, 0) > 0)
            ),
            None,
        )
        if other is not None:
            offered[other.key] = offered.get(other.key, 0) + 1
            day = other.start.astimezone(ZoneInfo(other.tz)).date().isoformat()
            seats = (
                "has seats"
                if other.free_seats is None
                else f"has {plural(other.free_seats, 'free seat')}"
            )
            kind = SuggestionKind.OFFER_OTHER_SESSION
            reason = (
                f"{view.key} was cancelled; {other.key} ({other.title}, {day}) {seats}: "
                f"offer it to {_who(student)}"
            )
            key = f"{kind}:{view.key}:{student.email}:{other.key}"
            details = {"session": other.key}
        else:
            kind = SuggestionKind.CONTACT_STUDENT
            why = (
                "no other session of the course has a free seat"
                if view.course
                else "it belongs to no course, so no other session can be offered"
            )
            reason = f"{view.key} was cancelled and {why}; tell {_who(student)}"
            key = f"{kind}:{view.key}:{student.email}:cancelled"
            details = {}
        key = bounded(key, 500)
        if db.scalar(select(Suggestion.id).where(Suggestion.dedupe_key == key)) is not None:
            continue  # offered before (and still open, applied or dismissed)
        record_suggestion(
            db,
            Suggestion(
                session_id=view.id,
                enrollment_id=student.enrollment_id,
                kind=kind,
                reason=reason,
                plugin=PLUGIN,
                dedupe_key=key,
                details=details,
                premise=premise_for(kind, student.email, view, now, other=other),
            ),
        )
        count += 1
    return count
