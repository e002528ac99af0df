"""The typed queries services use: sessions, people, enrollments, history, waitlist order."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from tmcaldav.domain import PAGE_RANK, CalendarStatus, EnrollmentStatus, SessionStatus
from tmcaldav.store.engine import NotFoundError
from tmcaldav.store.model import (
    Enrollment,
    Note,
    Person,
    Reminder,
    Response,
    ScheduleCheck,
    TrainingSession,
)


def get_session(
    db: Session, key: str, *, lock: bool = False, notes: bool = True
) -> TrainingSession:
    """The session with this key, with its enrollments (and their notes, unless told
    otherwise); NotFoundError if there is none."""
    found = db.scalars(_session_by_key(lock=lock, notes=notes), {"key": key}).one_or_none()
    if found is None:
        raise NotFoundError(f"no session with key {key!r}; see: tmcaldav session list")
    return found


@functools.cache
def _session_by_key(*, lock: bool, notes: bool) -> Select[TrainingSession]:
    """`get_session`'s statement, built once: a publish reads its session twice, and
    building the statement and its loader options costs more than running it."""
    enrollments = selectinload(TrainingSession.enrollments)
    stmt = (
        select(TrainingSession)
        .where(TrainingSession.key == bindparam("key"))
        .options(enrollments.selectinload(Enrollment.notes) if notes else enrollments)
    )
    return stmt.with_for_update() if lock else stmt


def list_sessions(db: Session) -> Sequence[TrainingSession]:
    """Every session, soonest first."""
    return db.scalars(
        select(TrainingSession)
        .options(selectinload(TrainingSession.enrollments))
        .order_by(TrainingSession.start_at, TrainingSession.key)
    ).all()


def find_person(db: Session, email: str) -> Person | None:
    """The person with this address (any case), or None."""
    return db.scalars(select(Person).where(Person.email == email.strip().lower())).one_or_none()


def get_person(db: Session, email: str) -> Person:
    """The person with this address; NotFoundError if unknown."""
    person = find_person(db, email)
    if person is None:
        raise NotFoundError(f"no person with e-mail {email!r}; add them: tmcaldav person add EMAIL")
    return person


def list_people(db: Session) -> Sequence[Person]:
    """Every person, by e-mail address."""
    return db.scalars(select(Person).order_by(Person.email)).all()


def get_enrollment(db: Session, session: TrainingSession, email: str) -> Enrollment:
    """The enrollment of this address in this session; NotFoundError if there is none."""
    address = email.strip().lower()
    for enrollment in session.enrollments:
        if enrollment.person.email == address:
            return enrollment
    raise NotFoundError(f"{email} is not enrolled in session {session.key}")


def waitlist(session: TrainingSession) -> list[Enrollment]:
    """The session's waitlisted enrollments in waitlist order (earliest first)."""
    waiting = [e for e in session.enrollments if e.status == "waitlisted"]
    return sorted(waiting, key=lambda e: (e.waitlisted_at or e.created_at, e.id))


def waitlist_positions(session: TrainingSession) -> dict[int, int]:
    """Enrollment id → 1-based waitlist position."""
    return {e.id: i for i, e in enumerate(waitlist(session), start=1)}


def history(db: Session, enrollment: Enrollment) -> Sequence[Response]:
    """Every recorded answer of one enrollment, in the order they were observed."""
    return _of_enrollment(db, Response, enrollment, Response.observed_at)


def reminders(db: Session, enrollment: Enrollment) -> Sequence[Reminder]:
    """Every reminder sent to one enrollment, oldest first."""
    return _of_enrollment(db, Reminder, enrollment, Reminder.sent_at)


def schedule_history(db: Session, enrollment: Enrollment) -> Sequence[ScheduleCheck]:
    """What the server said about delivering one student's invitation, oldest first."""
    return _of_enrollment(db, ScheduleCheck, enrollment, ScheduleCheck.checked_at)


_Row = TypeVar("_Row", Response, Reminder, ScheduleCheck)


def _of_enrollment(
    db: Session, table: type[_Row], enrollment: Enrollment, at: InstrumentedAttribute[datetime]
) -> Sequence[_Row]:
    """One enrollment's rows of `table`, by their time `at` (the id breaks ties)."""
    return db.scalars(
        select(table).where(table.enrollment_id == enrollment.id).order_by(at, table.id)
    ).all()


def add_note(
    db: Session,
    enrollment: Enrollment,
    text: str,
    *,
    author: str | None = None,
    at: datetime | None = None,
) -> Note:
    """Attach a note to an enrollment."""
    note = Note(text=text, author=author)
    if at is not None:
        note.created_at = at
    enrollment.notes.append(note)
    db.flush()
    return note


def count_sessions(db: Session) -> int:
    """How many sessions the store holds."""
    return db.scalar(select(func.count()).select_from(TrainingSession)) or 0


def page_order(session: TrainingSession, positions: Mapping[int, int]) -> list[Enrollment]:
    """Seated students first, then the waitlist in order (`positions`), then the rest."""
    return sorted(
        session.enrollments,
        key=lambda e: (PAGE_RANK.get(e.status, 3), positions.get(e.id, 0), e.person.email),
    )


def awaiting_invitation(db: Session, now: datetime, keys: Sequence[str] | None = None) -> list[str]:
    """Keys of scheduled sessions that have not started and have enrolled students not
    invited yet (of `keys` when given), soonest first."""
    stmt = (
        select(TrainingSession.key)
        .join(Enrollment, Enrollment.session_id == TrainingSession.id)
        .where(
            TrainingSession.status == SessionStatus.SCHEDULED,
            TrainingSession.start_at > now,
            Enrollment.status == EnrollmentStatus.ENROLLED,
            Enrollment.calendar_status == CalendarStatus.NOT_INVITED,
        )
        .group_by(TrainingSession.key, TrainingSession.start_at)
        .order_by(TrainingSession.start_at, TrainingSession.key)
    )
    if keys is not None:
        stmt = stmt.where(TrainingSession.key.in_(list(keys)))
    return list(db.scalars(stmt))
