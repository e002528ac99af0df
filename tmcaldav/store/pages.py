"""Read models: the session page, a student's history and a person, as the JSON objects
of the contract (DESIGN §5) that the CLI's `--json` and the web API both print.

Rendering them for people (tables, HTML) belongs to the front ends, not here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ANSWERS, ICONS, SessionStatus
from tmcaldav.store.model import Enrollment, Person, Response, TrainingSession
from tmcaldav.store.queries import page_order, waitlist_positions
from tmcaldav.store.roster import seats_taken


def iso(value: datetime | None, tz: str | None = None) -> str | None:
    """ISO 8601 with offset (in `tz` when given), or None."""
    if value is None:
        return None
    if tz is not None:
        value = value.astimezone(ZoneInfo(tz))
    return value.isoformat(timespec="seconds")


def session_summary(session: TrainingSession) -> dict[str, Any]:
    """The session's own fields, as in the session page's JSON."""
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
        "seats_taken": seats_taken(session),
        "waitlisted": sum(1 for e in session.enrollments if e.status == "waitlisted"),
        # A cancelled session has no seats to give; None: unlimited.
        "free_seats": _free_seats(session),
    }


def _free_seats(session: TrainingSession) -> int | None:
    if session.status == SessionStatus.CANCELLED:
        return 0
    if session.capacity is None:
        return None
    return max(session.capacity - seats_taken(session), 0)


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
    }


def session_page(session: TrainingSession) -> dict[str, Any]:
    """The session page as the JSON object of DESIGN.md §5 (plus a few added fields)."""
    from sqlalchemy.orm import object_session

    from tmcaldav.imip.deliveries import delivery_view, latest_deliveries

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


def history_rows(responses: list[Response]) -> list[dict[str, Any]]:
    """A student's answers as JSON-ready rows."""
    return [
        {
            "calendar": r.calendar_status,
            "icon": ICONS[r.calendar_status],
            "responded_at": iso(r.responded_at),
            "observed_at": iso(r.observed_at),
            "sequence": r.sequence,
            "source": r.source,
            "reason": r.reason,
        }
        for r in responses
    ]


def person_row(person: Person) -> dict[str, Any]:
    """A person as JSON."""
    return {"email": person.email, "name": person.name, "phone": person.phone}
