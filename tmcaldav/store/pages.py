"""Read models: the session page, a student's history and a person, as the JSON objects
of the contract (DESIGN §5) that the CLI's `--json` and the web API both print.

Rendering them for people (tables, HTML) belongs to the front ends, not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tmcaldav.domain import (
    ANSWERS,
    ICONS,
    SEAT_STATUSES,
    CalendarStatus,
    DeliveryState,
    EnrollmentStatus,
    SessionStatus,
)
from tmcaldav.store.model import (
    Delivery,
    Enrollment,
    Person,
    Reminder,
    Response,
    TrainingSession,
)
from tmcaldav.store.queries import page_order, waitlist_positions
from tmcaldav.store.roster import seats_taken


def iso(value: datetime | None, tz: str | None = None) -> str | None:
    """ISO 8601 with offset (in `tz` when given), or None."""
    if value is None:
        return None
    if tz is not None:
        value = value.astimezone(ZoneInfo(tz))
    return value.isoformat(timespec="seconds")


#: The order counts are shown in: answers first, then who has not answered.
COUNT_ORDER = (
    CalendarStatus.ACCEPTED,
    CalendarStatus.TENTATIVE,
    CalendarStatus.DECLINED,
    CalendarStatus.INVITED,
    CalendarStatus.NOT_INVITED,
    CalendarStatus.DELEGATED,
)


def calendar_counts(session: TrainingSession) -> dict[str, int]:
    """How many students (not cancelled) have each calendar status; every status listed."""
    counts = {str(status): 0 for status in COUNT_ORDER}
    for e in session.enrollments:
        if e.status != "cancelled":
            counts[e.calendar_status] = counts.get(e.calendar_status, 0) + 1
    return counts


def session_summary(
    session: TrainingSession,
    seats: int | None = None,
    waiting: int | None = None,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The session's own fields, as in the session page's JSON (`seats`, `waiting` and
    `counts` when already counted, else counted from its enrollments)."""
    if seats is None:
        seats = seats_taken(session)
    if waiting is None:
        waiting = sum(1 for e in session.enrollments if e.status == "waitlisted")
    if counts is None:
        counts = calendar_counts(session)
    return {
        "key": session.key,
        "title": session.title,
        "course": session.course,
        "start": iso(session.start_at, session.tz),
        "end": iso(session.end_at, session.tz),
        "tz": session.tz,
        "location": session.location,
        "capacity": session.capacity,
        "status": session.status,
        "uid": session.uid,
        "sequence": session.sequence,
        "calendar_state": session.calendar_state,
        "seats_taken": seats,
        "waitlisted": waiting,
        # A cancelled session has no seats to give; None: unlimited.
        "free_seats": _free_seats(session, seats),
        "counts": counts,
        "invite_at": iso(session.invite_at, session.tz),
    }


def _free_seats(session: TrainingSession, seats: int) -> int | None:
    if session.status == SessionStatus.CANCELLED:
        return 0
    if session.capacity is None:
        return None
    return max(session.capacity - seats, 0)


def session_list(db: Session) -> list[dict[str, Any]]:
    """Every session's summary, soonest first, counted in SQL: listing 1,000 sessions
    must not load their 30,000 enrollments."""
    seated = func.sum(case((Enrollment.status.in_(list(SEAT_STATUSES)), 1), else_=0))
    waiting = func.sum(case((Enrollment.status == EnrollmentStatus.WAITLISTED, 1), else_=0))
    counts = (
        select(Enrollment.session_id, seated.label("seats"), waiting.label("waiting"))
        .group_by(Enrollment.session_id)
        .subquery()
    )
    rows = db.execute(
        select(TrainingSession, counts.c.seats, counts.c.waiting)
        .outerjoin(counts, counts.c.session_id == TrainingSession.id)
        .order_by(TrainingSession.start_at, TrainingSession.key)
    ).all()
    by_status: dict[int, dict[str, int]] = {}
    for session_id, status, n in db.execute(
        select(Enrollment.session_id, Enrollment.calendar_status, func.count())
        .where(Enrollment.status != EnrollmentStatus.CANCELLED)
        .group_by(Enrollment.session_id, Enrollment.calendar_status)
    ):
        by_status.setdefault(session_id, {str(c): 0 for c in COUNT_ORDER})[status] = n
    empty = {str(c): 0 for c in COUNT_ORDER}
    return [
        session_summary(s, seats or 0, waiting or 0, by_status.get(s.id, dict(empty)))
        for s, seats, waiting in rows
    ]


def student_row(
    enrollment: Enrollment,
    position: int | None,
    delivery: dict[str, Any] | None = None,
    last_answer: Response | None = None,
) -> dict[str, Any]:
    """One student's line of the session page; `delivery`: the last iMIP mail to them.

    A student cancelled and taken off the event (`calendar_reason` "removed") still
    shows `last_answer`, the last answer she gave (✗ declined, with its time).
    """
    person = enrollment.person
    calendar, responded_at = enrollment.calendar_status, enrollment.responded_at
    if last_answer is not None and enrollment.calendar_reason == "removed":
        calendar, responded_at = last_answer.calendar_status, last_answer.responded_at
    return {
        "email": person.email,
        "name": person.name,
        "status": enrollment.status,
        "calendar": calendar,
        "icon": ICONS[calendar],
        "responded_at": iso(responded_at),
        "waitlist_position": position,
        "notes": [{"text": n.text, "created_at": iso(n.created_at)} for n in enrollment.notes],
        "calendar_reason": enrollment.calendar_reason,
        "invited_at": iso(enrollment.invited_at),
        "phone": person.phone,
        "delivery": delivery,
        # The answer shown was recorded by an administrator (`tmcaldav answer`).
        "by_hand": enrollment.calendar_seen is not None,
    }


def session_page(session: TrainingSession) -> dict[str, Any]:
    """The session page as the JSON object of DESIGN.md §5 (plus a few added fields)."""
    from sqlalchemy.orm import object_session

    positions = waitlist_positions(session)
    db = object_session(session)
    mailed = latest_deliveries(db, [e.id for e in session.enrollments]) if db else {}
    page = session_summary(session)
    page["description"] = session.description
    answers = _last_answers(db, session) if db else {}
    page["students"] = [
        student_row(e, positions.get(e.id), delivery_view(mailed.get(e.id)), answers.get(e.id))
        for e in page_order(session, positions)
    ]
    return page


def _last_answers(db: Any, session: TrainingSession) -> dict[int, Response]:
    """The last answer of each student taken off the event (one query)."""
    removed = [e.id for e in session.enrollments if e.calendar_reason == "removed"]
    if not removed:
        return {}
    from sqlalchemy import select

    last: dict[int, Response] = {}
    for response in db.scalars(
        select(Response)
        .where(
            Response.enrollment_id.in_(removed),
            Response.calendar_status.in_(sorted(ANSWERS)),
        )
        .order_by(Response.observed_at, Response.id)
    ):
        last[response.enrollment_id] = response
    return last


def history_rows(
    responses: list[Response], reminders: list[Reminder] | None = None
) -> list[dict[str, Any]]:
    """A student's answers (and the reminders sent to them) as JSON-ready rows, in the
    order they happened. `event` says which: "answer" or "reminder"."""
    rows = [
        (
            r.observed_at,
            {
                "event": "answer",
                "calendar": r.calendar_status,
                "icon": ICONS[r.calendar_status],
                "responded_at": iso(r.responded_at),
                "observed_at": iso(r.observed_at),
                "sequence": r.sequence,
                "source": r.source,
                "reason": r.reason,
            },
        )
        for r in responses
    ]
    rows += [
        (
            m.sent_at,
            {
                "event": "reminder",
                # The calendar status the student had when reminded.
                "calendar": m.calendar_status,
                "icon": ICONS[m.calendar_status],
                "responded_at": None,
                "observed_at": iso(m.sent_at),
                "sequence": m.sequence,
                "source": m.channel,
                "reason": "reminder",
            },
        )
        for m in reminders or []
    ]
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def person_row(person: Person) -> dict[str, Any]:
    """A person as JSON."""
    return {"email": person.email, "name": person.name, "phone": person.phone}


def delivery_view(delivery: Delivery | None) -> dict[str, Any] | None:
    """One delivery as the session page shows it (None: nothing was ever mailed)."""
    if delivery is None:
        return None

    return {
        "state": delivery.state,
        "method": delivery.method,
        "reason": delivery.reason,
        "sequence": delivery.sequence,
        "attempts": delivery.attempts,
        "sent_at": iso(delivery.sent_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "error": delivery.last_error,
        # Set when it went to an address the person no longer has (a replaced one).
        "address": delivery.address,
    }


def latest_deliveries(db: Session, enrollment_ids: Iterable[int]) -> dict[int, Delivery]:
    """The newest delivery that counts (not superseded) of each enrollment."""
    ids = list(enrollment_ids)
    if not ids:
        return {}
    rows = db.scalars(
        select(Delivery)
        .where(Delivery.enrollment_id.in_(ids), Delivery.state != DeliveryState.SUPERSEDED)
        .order_by(Delivery.id)
    ).all()
    return {d.enrollment_id: d for d in rows}  # later rows overwrite earlier ones
