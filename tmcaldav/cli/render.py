"""Text for people: aligned tables, the session page with its Calendar column, suggestions.

Times of answers and history are shown in the session's own zone (the JSON keeps
ISO 8601 with its offset).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ICONS
from tmcaldav.words import plural

# Width of the REASON column of `tmcaldav suggestions`: longer reasons wrap (never cut).
REASON_WIDTH = 64


def local_time(value: str | None, tz: str) -> str:
    """An ISO 8601 time from the JSON, for people: in the zone `tz`, to the minute."""
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def counts_line(counts: Mapping[str, int]) -> str:
    """`✓ 12  ? 2  ✗ 1  ✉ 3  — 0` (delegated only when there are any)."""
    shown = [
        f"{ICONS[status]} {n}"
        for status, n in counts.items()
        if status != "delegated" or n
    ]
    return "  ".join(shown)


def calendar_cell(student: Mapping[str, Any]) -> str:
    """The Calendar column: icon and status, and "by hand" for an answer an
    administrator recorded."""
    text = f"{student['icon']} {student['calendar']}"
    return text + " by hand" if student.get("by_hand") else text


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Plain aligned columns; the first row is the header."""
    if len(rows) <= 1:
        return "(none)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def render_page(page: dict[str, Any]) -> str:
    """The session page as a text table."""
    capacity = page["capacity"] if page["capacity"] is not None else "∞"
    lines = [
        f"{page['key']}  {page['title']}"
        + (f"  [{page['status']}]" if page["status"] != "scheduled" else ""),
        f"  {page['start']} – {page['end']} ({page['tz']})"
        + (f"  @ {page['location']}" if page["location"] else ""),
        (
            f"  cancelled: no seats ({plural(page['seats_taken'], 'student')} enrolled), "
            if page["status"] == "cancelled"
            else f"  seats {page['seats_taken']}/{capacity}, "
            + (f"waitlist {page['waitlisted']}, " if page["waitlisted"] else "")
        )
        + f"calendar: {page['calendar_state']}"
        + (f" (uid {page['uid']}, sequence {page['sequence']})" if page["uid"] else ""),
        f"  {counts_line(page['counts'])}",
    ]
    forecast = page.get("forecast")
    if forecast is not None:
        of = f" of {page['capacity']} seats" if page["capacity"] is not None else ""
        lines.append(
            f"  forecast: {forecast['expected']:.1f} expected{of} "
            f"(80%: {forecast['low']}–{forecast['high']}), chance of overbooking "
            f"{forecast['p_over_capacity']:.0%}  (tmcaldav report forecast {page['key']})"
        )
    if page.get("invite_at"):
        lines.append(f"  invitations go out {local_time(page['invite_at'], page['tz'])}")
    if page["calendar_state"] == "missing":
        lines.append(
            "  ! the event is missing on the CalDAV server; `tmcaldav invite` republishes it"
        )
    rows: list[tuple[str, ...]] = [("", "STUDENT", "STATUS", "WAIT", "CAL", "ANSWERED", "NOTE")]
    mailed = any(s.get("delivery") for s in page["students"])
    if mailed:
        rows[0] += ("MAIL",)
    for s in page["students"]:
        note = s["notes"][-1]["text"] if s["notes"] else ""
        if s["calendar_reason"] == "rescheduled" and s["calendar"] == "invited":
            note = note or "(rescheduled: waiting for a new answer)"
        if s["calendar_reason"] == "removed" and s["status"] == "cancelled":
            note = note or "(taken off the event)"
        who = f"{s['name']} <{s['email']}>" if s["name"] else s["email"]
        rows.append(
            (
                "",
                who,
                s["status"],
                str(s["waitlist_position"] or ""),
                calendar_cell(s),
                local_time(s["responded_at"], page["tz"]),
                textwrap.shorten(note, 60, placeholder=" …") if note else "",
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


def render_suggestions(rows: Sequence[dict[str, Any]]) -> str:
    """Suggestions as a text table; reasons wrap at word ends (the full text is in
    `--json`), and a withdrawn one says why under its reason."""
    header = ("ID", "SESSION", "STUDENT", "KIND", "STATE", "PLUGIN", "REASON")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        text = " ".join(r["reason"].split())
        if r.get("withdrawn_reason"):
            text += " — withdrawn: " + " ".join(r["withdrawn_reason"].split())
        wrapped = textwrap.wrap(text, REASON_WIDTH, break_long_words=False) or [""]
        lines.append(
            (
                str(r["id"]),
                r["session"],
                r["email"] or "",
                r["kind"]
                + (f" → {r['details']['session']}" if r["details"].get("session") else ""),
                r["state"],
                r["plugin"],
                wrapped[0],
            )
        )
        lines += [("", "", "", "", "", "", more) for more in wrapped[1:]]
    return table(lines)
