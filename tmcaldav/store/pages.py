"""Read models: the session page, a student's history and a person, as the JSON objects
of the contract (DESIGN §5) that the CLI's `--json` and the web API both print.

Rendering them for people (tables, HTML) belongs to the front ends, not here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ICONS, CalendarStatus
from tmcaldav.store.model import Enrollment, Person, Reminder, Response, TrainingSession
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
        "counts": calendar_counts(session),
        "invite_at": iso(session.invite_at, session.tz),
    }


def student_row(
    enrollment: Enrollment, position: int | None, delivery: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One student's line of the session page; `delivery`: the last iMIP mail to them."""
    person = enrollment.person
    return {
        "email": person.email,
        "name": person.name,
        "status": enrollment.status,
        "calendar": enrollment.calendar_status,
        "icon": ICONS[enrollment.calendar_status],
        "responded_at": iso(enrollment.responded_at),
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

    from tmcaldav.imip.deliveries import delivery_view, latest_deliveries

    positions = waitlist_positions(session)
    db = object_session(session)
    mailed = latest_deliveries(db, [e.id for e in session.enrollments]) if db else {}
    page = session_summary(session)
    page["description"] = session.description
    page["students"] = [
        student_row(e, positions.get(e.id), delivery_view(mailed.get(e.id)))
        for e in page_order(session, positions)
    ]
    return page


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
