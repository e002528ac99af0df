"""Read models: the session page, a student's history and a person, as the JSON objects
of the contract (DESIGN §5) that the CLI's `--json` and the web API both print.

Rendering them for people (tables, HTML) belongs to the front ends, not here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tmcaldav.domain import (
    ANSWERS,
    ICONS,
    NOT_DELIVERED_ICON,
    SEAT_STATUSES,
    CalendarStatus,
    DeliveryState,
    EnrollmentStatus,
    ServerDelivery,
    SessionStatus,
)
from tmcaldav.store.model import (
    Delivery,
    Enrollment,
    Person,
    Reminder,
    Response,
    ScheduleCheck,
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


def calendar_cell(row: Mapping[str, Any]) -> str:
    """The Calendar column for people: the icon and status; ``⚠ not delivered`` for an
    invitation the server did not deliver (its own state; the JSON keeps ``invited``);
    "by hand" after an answer an administrator recorded."""
    if row.get("delivery_status") == ServerDelivery.NOT_DELIVERED and row["calendar"] == "invited":
        return f"{NOT_DELIVERED_ICON} not delivered"
    text = f"{row['icon']} {row['calendar']}"
    return text + " by hand" if row.get("by_hand") else text


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
    responses: list[Response],
    reminders: list[Reminder] | None = None,
    checks: list[ScheduleCheck] | None = None,
) -> list[dict[str, Any]]:
    """A student's answers as JSON-ready rows, with the reminders sent to them and (server
    mode) what the server said about delivering their invitation, in the order they
    happened.

    ``event`` tells them apart: ``answer`` rows carry ``evidence`` (where
    ``responded_at`` comes from: ``reply-dtstamp``, ``server-dtstamp`` or ``observed``);
    ``reminder`` rows the calendar status the student had when reminded; ``delivery``
    rows carry ``delivery_status``, ``schedule_status`` and its meaning, with
    ``observed_at`` the time it was checked and ``calendar`` null.
    """
    rows: list[tuple[datetime, int, dict[str, Any]]] = [
        (
            r.observed_at,
            0,
            {
                "event": "answer",
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
    rows += [
        (
            m.sent_at,
            1,
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
                "evidence": None,
            },
        )
        for m in reminders or []
    ]
    for check in checks or ():
        fields = delivery_fields(check.delivery_status, check.schedule_status, check.checked_at)
        rows.append(
            (
                check.checked_at,
                2,
                {
                    "event": "delivery",
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
