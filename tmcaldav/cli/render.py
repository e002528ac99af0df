"""Text for people: aligned tables, the session page with its Calendar column, suggestions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tmcaldav.store.pages import calendar_cell


def table(rows: list[tuple[str, ...]]) -> str:
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
    undelivered = []
    if mailed:
        rows[0] += ("MAIL",)
    for s in page["students"]:
        note = s["notes"][-1]["text"] if s["notes"] else ""
        if s["calendar_reason"] == "rescheduled" and s["calendar"] == "invited":
            note = note or "(rescheduled: waiting for a new answer)"
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
                s["responded_at"] or "",
                note.replace("\n", " ")[:60],
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


def render_history(rows: list[dict[str, Any]]) -> str:
    """A student's history as a text table: answers, and the server's word on delivery."""
    header = ("CAL", "ANSWERED", "OBSERVED", "SEQ", "SOURCE", "EVIDENCE", "REASON")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        sequence = "" if r["sequence"] is None else str(r["sequence"])
        if r["entry"] == "delivery":
            what = "not delivered" if r["delivery_status"] == "not_delivered" else "delivered"
            if r["delivery_status"] == "sent":
                what = "sent"
            code = r["schedule_status"] or "no SCHEDULE-STATUS"
            lines.append(
                (
                    f"{r['icon']} {what}",
                    "",
                    r["observed_at"],
                    sequence,
                    "server",
                    code,
                    f"{r['reason'] or ''}: {r['schedule_status_meaning']}",
                )
            )
            continue
        lines.append(
            (
                f"{r['icon']} {r['calendar']}",
                r["responded_at"],
                r["observed_at"],
                sequence,
                r["source"],
                r["evidence"] or "",
                r["reason"] or "",
            )
        )
    return table(lines)


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
                r["reason"].replace("\n", " ")[:80],
            )
            for r in rows
        ]
    )
