"""Text for people: aligned tables, the session page with its Calendar column, suggestions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# C0 and C1 control characters: printed raw they ring bells, move the cursor or change
# the terminal (ESC sequences) — a note or a name from a stranger's mail must not.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """One line of text for a terminal: line breaks and tabs as spaces, other control
    characters as visible escapes (BEL becomes \\x07)."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def table(rows: list[tuple[str, ...]]) -> str:
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
                shown(note)[:60],
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
    """Suggestions as a text table."""
    header = ("ID", "SESSION", "STUDENT", "KIND", "STATE", "PLUGIN", "REASON")
    return table(
        [header]
        + [
            (
                str(r["id"]),
                r["session"],
                r["email"] or "",
                r["kind"]
                + (f" → {r['details']['session']}" if r["details"].get("session") else ""),
                r["state"],
                r["plugin"],
                shown(r["reason"])[:80],
            )
            for r in rows
        ]
    )
