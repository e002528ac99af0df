"""The session page: a session's students with their Calendar column, as data and as text.

`session_page` builds the JSON object of DESIGN.md §5 from the store; `render_page`
turns it into the table administrators read in a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ICONS
from tmcaldav.store import waitlist_positions
from tmcaldav.store.model import Enrollment, Person, Response, TrainingSession
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


def page_order(session: TrainingSession, positions: Mapping[int, int]) -> list[Enrollment]:
    """Seated students first, then the waitlist in order (`positions`), then the rest."""
    rank = {"enrolled": 0, "attended": 0, "no_show": 0, "waitlisted": 1, "cancelled": 2}
    return sorted(
        session.enrollments,
        key=lambda e: (rank.get(e.status, 3), positions.get(e.id, 0), e.person.email),
    )


def render_page(page: dict[str, Any]) -> str:
    """The session page as a text table."""
    capacity = page["capacity"] if page["capacity"] is not None else "∞"
    lines = [
        f"{page['key']}  {page['title']}"
        + (f"  [{page['status']}]" if page["status"] != "scheduled" else ""),
        f"  {page['start']} – {page['end']} ({page['tz']})"
        + (f"  @ {page['location']}" if page["location"] else ""),
        f"  seats {page['seats_taken']}/{capacity}, waitlist {page['waitlisted']}, "
        f"calendar: {page['calendar_state']}"
        + (f" (uid {page['uid']}, sequence {page['sequence']})" if page["uid"] else ""),
    ]
    if page["calendar_state"] == "missing":
        lines.append(
            "  ! the event is missing on the CalDAV server; `tmcaldav invite` republishes it"
        )
    rows = [("", "STUDENT", "STATUS", "WAIT", "CAL", "ANSWERED", "NOTE")]
    mailed = any(s.get("delivery") for s in page["students"])
    if mailed:
        rows[0] += ("MAIL",)
    for s in page["students"]:
        note = s["notes"][-1]["text"] if s["notes"] else ""
        if s["calendar_reason"] == "rescheduled" and s["calendar"] == "invited":
            note = note or "(rescheduled: waiting for a new answer)"
        who = f"{s['name']} <{s['email']}>" if s["name"] else s["email"]
        rows.append(
            (
                "",
                who,
                s["status"],
                str(s["waitlist_position"] or ""),
                f"{s['icon']} {s['calendar']}",
                s["responded_at"] or "",
                note.replace("\n", " ")[:60],
            )
        )
        if mailed:
            rows[-1] += (_mail_cell(s.get("delivery")),)
    lines.append(table(rows) if len(rows) > 1 else "  (no students)")
    return "\n".join(lines)


def _mail_cell(delivery: dict[str, Any] | None) -> str:
    if delivery is None:
        return ""
    what = f"{delivery['method']} {delivery['state']}"
    return what + (f" ({delivery['error'][:40]})" if delivery["state"] == "failed" else "")


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


def table(rows: list[tuple[str, ...]]) -> str:
    """Plain aligned columns; the first row is the header."""
    if len(rows) <= 1:
        return "(none)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
