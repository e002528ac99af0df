"""How things read on the pages: times in a session's zone, the Calendar tooltip,
labels, stable element ids, and the geometry of the reports' SVG charts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from tmcaldav.domain import ANSWERS

SOURCES = {
    "poll": "in their calendar",
    "imip": "by e-mail",
    "manual": "entered by hand",
    "link": "through the answer link",
    "import": "imported",
}
CALENDAR_LABELS = {
    "not_invited": "not invited",
    "invited": "invited, no answer yet",
    "accepted": "accepted",
    "tentative": "tentative",
    "declined": "declined",
    "delegated": "delegated",
}
STATUS_LABELS = {
    "enrolled": "enrolled",
    "waitlisted": "waitlisted",
    "cancelled": "cancelled",
    "attended": "attended",
    "no_show": "no-show",
}


def when(value: str | datetime | None, tz: str | None = None, *, short: bool = False) -> str:
    """A time for people, in the zone `tz`: "Tue 1 Dec 2026, 09:00 CET"."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if tz:
        moment = moment.astimezone(ZoneInfo(tz))
    day = f"{moment:%a} {moment.day} {moment:%b %Y}"
    if short:
        return f"{day}, {moment:%H:%M}"
    return f"{day}, {moment:%H:%M} {moment.tzname() or ''}".rstrip()


def tooltip(student: dict[str, Any], tz: str, source: str | None) -> str:
    """What the Calendar icon's tooltip says: the answer, its time in the session's
    zone, and how it came."""
    calendar = str(student["calendar"])
    if calendar in ANSWERS and student.get("responded_at"):
        how = SOURCES.get(source or "", "")
        text = f"{CALENDAR_LABELS[calendar].capitalize()} on {when(student['responded_at'], tz)}"
        return text + (f", {how}" if how else "")
    if calendar == "invited":
        if student.get("calendar_reason") == "rescheduled":
            return "Asked again after the new time; no answer yet"
        if student.get("invited_at"):
            return f"Invited on {when(student['invited_at'], tz)}; no answer yet"
        return "Invited; no answer yet"
    if calendar == "not_invited" and student.get("calendar_reason") == "removed":
        return "Removed from the event"
    return CALENDAR_LABELS.get(calendar, calendar).capitalize()


def ident(value: str) -> str:
    """A stable HTML id for a student (addresses are not valid ids)."""
    return "s" + hashlib.sha1(value.encode("utf-8")).hexdigest()[:12]


def bar_chart(
    rows: list[tuple[str, list[int]]], series: list[str], width: int = 640
) -> dict[str, Any]:
    """Geometry of a horizontal bar chart, one group of bars per row, for the SVG."""
    label_width, bar_height, gap = 220, 12, 10
    biggest = max([max(values) for _, values in rows if values] + [1])
    scale = (width - label_width - 40) / biggest
    groups = []
    y = 24
    for label, values in rows:
        bars = []
        for i, value in enumerate(values):
            bars.append(
                {
                    "x": label_width,
                    "y": y + i * bar_height,
                    "width": max(value * scale, 0.5 if value else 0),
                    "height": bar_height - 2,
                    "value": value,
                    "series": i,
                    "name": series[i],
                }
            )
        groups.append({"label": label, "y": y, "bars": bars,
                       "mid": y + len(values) * bar_height / 2 + 4})
        y += len(values) * bar_height + gap
    return {"width": width, "height": y + 8, "groups": groups, "series": series,
            "label_width": label_width}


@dataclass(frozen=True, slots=True)
class RosterRow:
    """One student's line of the session page, worked out once for the template
    (attributes, not dict keys: Jinja finds them faster, and 200 rows add up)."""

    email: str
    who: str
    id: str
    status: str
    status_label: str
    position: int | None
    phone: str | None
    calendar: str
    calendar_label: str
    icon: str
    responded_at: str | None
    href: str
    tip: str
    note: str | None
    delivery: dict[str, Any] | None


def roster(
    page: dict[str, Any], sources: dict[str, str | None], base_path: str
) -> list[RosterRow]:
    """The session page's rows with links, ids, labels and the tooltip worked out."""
    tz = page["tz"]
    prefix = f"{base_path}/sessions/{quote(page['key'], safe='')}/students/"
    rows = []
    for s in page["students"]:
        email = s["email"]
        calendar = s["calendar"]
        rows.append(
            RosterRow(
                email=email,
                who=s["name"] or email,
                id=ident(email),
                status=s["status"],
                status_label=STATUS_LABELS.get(s["status"], s["status"]),
                position=s["waitlist_position"],
                phone=s["phone"],
                calendar=calendar,
                calendar_label=CALENDAR_LABELS.get(calendar, calendar),
                icon=s["icon"],
                responded_at=s["responded_at"] if calendar in ANSWERS else None,
                href=prefix + quote(email, safe="@"),
                tip=tooltip(s, tz, sources.get(email)),
                note=s["notes"][-1]["text"] if s["notes"] else None,
                delivery=s.get("delivery"),
            )
        )
    return rows
