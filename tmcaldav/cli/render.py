"""Text for people: aligned tables, the session page with its Calendar column, suggestions.

Times of answers and history are shown in the session's own zone (the JSON keeps
ISO 8601 with its offset).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ICONS
from tmcaldav.store.pages import calendar_cell
from tmcaldav.words import plural

# Width of the REASON column of `tmcaldav suggestions`: longer reasons wrap (never cut).
REASON_WIDTH = 64

# C0 and C1 control characters: printed raw they ring bells, move the cursor or change
# the terminal (ESC sequences) — a note or a name from a stranger's mail must not.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """One line of text for a terminal: line breaks and tabs as spaces, other control
    characters as visible escapes (BEL becomes \\x07)."""
    if text.isprintable():
        # No control character, line break or tab: most cells (a list of 1,000 sessions
        # has 9,000), printed as they are.
        return text
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)



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


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Plain aligned columns; the first row is the header. Cells are `shown`."""
    if len(rows) <= 1:
        return "(none)"
    rows = [tuple(shown(cell) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def render_page(page: dict[str, Any]) -> str:
    """The session page as a text table."""
    capacity = page["capacity"] if page["capacity"] is not None else "∞"
    lines = [
        shown(f"{page['key']}  {page['title']}")
        + (f"  [{page['status']}]" if page["status"] != "scheduled" else ""),
        f"  {page['start']} – {page['end']} ({page['tz']})"
        + (f"  @ {shown(page['location'])}" if page["location"] else ""),
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
    undelivered = []
    if mailed:
        rows[0] += ("MAIL",)
    for s in page["students"]:
        note = s["notes"][-1]["text"] if s["notes"] else ""
        if s["calendar_reason"] == "rescheduled" and s["calendar"] == "invited":
            note = note or "(rescheduled: waiting for a new answer)"
        if s["calendar_reason"] == "removed" and s["status"] == "cancelled":
            note = note or "(taken off the event)"
        cell = calendar_cell(s)
        if cell != f"{s['icon']} {s['calendar']}":
            undelivered.append(s)
        who = f"{s['name']} <{s['email']}>" if s["name"] else s["email"]
        rows.append(
            (
                "",
                who,
                s["status"],
                str(s["waitlist_position"] or ""),
                cell,
                local_time(s["responded_at"], page["tz"]),
                textwrap.shorten(shown(note), 60, placeholder=" …") if note else "",
            )
        )
        if mailed:
            rows[-1] += (_mail_cell(s.get("delivery")),)
    lines.append(table(rows) if len(rows) > 1 else "  (no students)")
    for s in undelivered:
        code = s["schedule_status"] or "no SCHEDULE-STATUS"
        lines.append(f"  ⚠ {s['email']}: not delivered ({code}): {s['schedule_status_meaning']}")
    return "\n".join(lines)


def _mail_cell(delivery: dict[str, Any] | None) -> str:
    if delivery is None:
        return ""
    what = f"{delivery['method']} {delivery['state']}"
    return what + (f" ({delivery['error'][:40]})" if delivery["state"] == "failed" else "")


def render_history(rows: list[dict[str, Any]], tz: str) -> str:
    """A student's history as a text table, times in the session's zone: answers,
    reminders, and the server's word on delivery."""
    header = ("CAL", "ANSWERED", "OBSERVED", "SEQ", "SOURCE", "EVIDENCE", "REASON")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        sequence = "" if r["sequence"] is None else str(r["sequence"])
        if r["event"] == "delivery":
            what = "not delivered" if r["delivery_status"] == "not_delivered" else "delivered"
            if r["delivery_status"] == "sent":
                what = "sent"
            code = r["schedule_status"] or "no SCHEDULE-STATUS"
            lines.append(
                (
                    f"{r['icon']} {what}",
                    "",
                    local_time(r["observed_at"], tz),
                    sequence,
                    "server",
                    code,
                    f"{r['reason'] or ''}: {r['schedule_status_meaning']}",
                )
            )
            continue
        lines.append(
            (
                f"{r['icon']} {r['calendar']}"
                if r["event"] == "answer"
                else f"reminded ({r['icon']} {r['calendar']})",
                local_time(r["responded_at"], tz),
                local_time(r["observed_at"], tz),
                sequence,
                "by hand" if r["source"] == "manual" else r["source"],
                r["evidence"] or "",
                r["reason"] or "",
            )
        )
    return table(lines)


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
