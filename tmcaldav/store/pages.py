"""Read models: the session page, a student's history and a person, as the JSON objects
of the contract (DESIGN §5) that the CLI's `--json` and the web API both print.

Rendering them for people (tables, HTML) belongs to the front ends, not here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ICONS, NOT_DELIVERED_ICON, ServerDelivery
from tmcaldav.store.model import Enrollment, Person, Response, ScheduleCheck, TrainingSession
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
        **delivery_fields(
            enrollment.delivery_status, enrollment.schedule_status, enrollment.delivery_checked_at
        ),
    }


def delivery_fields(
    status: str | None, schedule_status: str | None, checked_at: datetime | None
) -> dict[str, Any]:
    """Server mode: what the CalDAV server said it did with the invitation.

    ``delivery_status`` is ``delivered``, ``sent`` or ``not_delivered`` (None: never
    checked: iMIP mode, a server that does not schedule, or not invited);
    ``schedule_status`` the server's SCHEDULE-STATUS as stored; ``schedule_status_meaning``
    that code in words.
    """
    if status is None:
        meaning = None
    elif schedule_status is None and status != ServerDelivery.NOT_DELIVERED:
        meaning = "answered, so it was delivered"
    else:
        from tmcaldav.ical.schedule import read_schedule_status

        meaning = read_schedule_status(schedule_status).meaning
    return {
        "delivery_status": status,
        "schedule_status": schedule_status,
        "schedule_status_meaning": meaning,
        "delivery_checked_at": iso(checked_at),
    }


def calendar_cell(row: dict[str, Any]) -> str:
    """The Calendar column for people: the icon and status, or ``⚠ not delivered`` for an
    invitation the server did not deliver (its own state; the JSON keeps ``invited``)."""
    if row.get("delivery_status") == ServerDelivery.NOT_DELIVERED and row["calendar"] == "invited":
        return f"{NOT_DELIVERED_ICON} not delivered"
    return f"{row['icon']} {row['calendar']}"


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
    responses: list[Response], checks: list[ScheduleCheck] | None = None
) -> list[dict[str, Any]]:
    """A student's answers as JSON-ready rows, and (server mode) what the server said about
    delivering their invitation, in the order they happened.

    ``entry`` tells the two apart: ``answer`` rows carry ``evidence`` (where
    ``responded_at`` comes from: ``reply-dtstamp``, ``server-dtstamp`` or ``observed``);
    ``delivery`` rows carry ``delivery_status``, ``schedule_status`` and its meaning, with
    ``observed_at`` the time it was checked and ``calendar`` null.
    """
    rows: list[tuple[datetime, int, dict[str, Any]]] = [
        (
            r.observed_at,
            0,
            {
                "entry": "answer",
                "calendar": r.calendar_status,
                "icon": ICONS[r.calendar_status],
                "responded_at": iso(r.responded_at),
                "observed_at": iso(r.observed_at),
                "sequence": r.sequence,
                "source": r.source,
                "reason": r.reason,
                "evidence": r.evidence,
            },
        )
        for r in responses
    ]
    for check in checks or ():
        fields = delivery_fields(check.delivery_status, check.schedule_status, check.checked_at)
        rows.append(
            (
                check.checked_at,
                1,
                {
                    "entry": "delivery",
                    "calendar": None,
                    "icon": NOT_DELIVERED_ICON
                    if check.delivery_status == ServerDelivery.NOT_DELIVERED
                    else ICONS["invited"],
                    "responded_at": None,
                    "observed_at": iso(check.checked_at),
                    "sequence": check.sequence,
                    "source": None,
                    "reason": check.reason,
                    "evidence": None,
                    **fields,
                },
            )
        )
    # Stable: answers keep their order, a check lands after what was seen at its time.
    rows.sort(key=lambda row: (row[0], row[1]))
    return [row for _, _, row in rows]


def person_row(person: Person) -> dict[str, Any]:
    """A person as JSON."""
    return {"email": person.email, "name": person.name, "phone": person.phone}
