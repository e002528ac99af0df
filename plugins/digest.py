"""The `digest` plugin: the training office hears what happened without watching a
terminal.

- Once a day, at `daily_hour` (local time, `[scheduling] timezone`): a summary mail
  with the answers recorded since the previous one, the open suggestions, and the
  sessions starting within `days_before` days that have students who are unsure
  (tentative) or silent (no answer).
- At once, when a student declines a session that starts within `notify_days` days.

The mails are notices to the administrator (`tmcaldav.views.Notice`): stored once each
(the daily one per day, the decline notice per answer), sent over `[smtp]` by the
daemon's tick, retried until they go, plain text, and never to a student (an address
of a student is refused). It returns no suggestions. Off unless "digest" is in
`[plugins] enable`.

Settings (`[plugins.digest]`):

    to = ["office@example.org"]   # default: [scheduling] organizer_email
    daily_hour = 7                 # 0-23, local time
    days_before = 3                # the digest's look ahead, in days
    notify_days = 7                # a decline this close to the start is told at once
    send_empty = false             # also send a digest on a day with nothing in it
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.domain import ICONS, AddressError, normalise_address
from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import (
    DailyOverview,
    HookContext,
    Notice,
    ResponseChange,
    SessionView,
    StudentView,
    check_settings,
)
from tmcaldav.words import plural

SOURCES = {
    "poll": "calendar",
    "imip": "mail",
    "manual": "by hand",
    "link": "link",
    "import": "import",
}
DEFAULT_NOTIFY_DAYS = 7


def _local(value: datetime, tz: str) -> str:
    local = value.astimezone(ZoneInfo(tz))
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def _who(name: str | None, email: str) -> str:
    return f"{name} <{email}>" if name else email


def _student_line(student: StudentView) -> str:
    phone = f"  {student.phone}" if student.phone else ""
    status = f"{ICONS[student.calendar_status]} {student.calendar_status}"
    return f"    {status:<12} {_who(student.name, student.email)}{phone}"


def _waiting(session: SessionView) -> list[StudentView]:
    return [
        s
        for s in session.students
        if s.status in ("enrolled", "waitlisted")
        and s.calendar_status in ("invited", "tentative")
    ]


class DigestPlugin:
    """Mails the administrator a daily summary and an alert for a late decline."""

    __version__ = "1"

    def __init__(self, settings: Mapping[str, Any]):
        check_settings(settings, ("to", "notify_days", "send_empty"))
        to = settings.get("to", [])
        if isinstance(to, str) or not isinstance(to, list | tuple):
            raise ValueError(f"to must be a list of addresses, got {to!r}")
        try:
            self.to = tuple(normalise_address(a) for a in to)
        except (AddressError, AttributeError) as e:
            raise ValueError(f"to: {e}") from e
        notify = settings.get("notify_days", DEFAULT_NOTIFY_DAYS)
        if isinstance(notify, bool) or not isinstance(notify, int) or notify < 0:
            raise ValueError(f"notify_days must be a whole number of days, 0 or more: {notify!r}")
        self.notify_days = notify
        self.days_before = int(settings.get("days_before", 3))
        send_empty = settings.get("send_empty", False)
        if not isinstance(send_empty, bool):
            raise ValueError(f"send_empty must be true or false, got {send_empty!r}")
        self.send_empty = send_empty

    @hookimpl
    def on_daily(self, overview: DailyOverview, context: HookContext) -> Notice | None:
        """The day's summary, once a day."""
        tz = overview.tz
        attention = [(s, _waiting(s)) for s in overview.upcoming]
        attention = [(s, waiting) for s, waiting in attention if waiting]
        if not (overview.answers or overview.suggestions or attention or self.send_empty):
            return None
        date = datetime.fromisoformat(overview.day)
        day = f"{date:%a} {date.day} {date:%b %Y}"
        lines = [f"Training office digest for {day} ({tz})", ""]
        lines.append(
            f"New answers since {_local(overview.since, tz)} ({len(overview.answers)}):"
        )
        for a in overview.answers:
            status = f"{ICONS[a.calendar_status]} {a.calendar_status}"
            how = SOURCES.get(a.source, a.source)
            lines.append(
                f"  {status:<12} {_who(a.name, a.email)}  {a.session} {a.title}"
                f"  ({_local(a.responded_at, tz)}, {how})"
            )
        if not overview.answers:
            lines.append("  none")
        lines += ["", f"Open suggestions ({len(overview.suggestions)}):"]
        for s in overview.suggestions:
            lines.append(f"  #{s.id} {s.session} {s.kind} {s.email or ''}: {s.reason}")
        if overview.suggestions:
            lines.append("  (tmcaldav suggestions apply ID, or dismiss ID)")
        else:
            lines.append("  none")
        lines += [
            "",
            f"Sessions in the next {plural(self.days_before, 'day')} with students who are "
            f"unsure or have not answered ({len(attention)}):",
        ]
        for session, waiting in attention:
            capacity = session.capacity if session.capacity is not None else "∞"
            lines.append(
                f"  {session.key} {session.title}: {_local(session.start, session.tz)} "
                f"({session.tz}), seats {session.seats_taken}/{capacity}"
            )
            lines += [_student_line(s) for s in waiting]
        if not attention:
            lines.append("  none")
        subject = (
            f"tmcaldav digest {overview.day}: {plural(len(overview.answers), 'answer')}, "
            f"{plural(len(overview.suggestions), 'open suggestion')}, "
            f"{plural(len(attention), 'session')} "
            "to watch"
        )
        return Notice(f"daily:{overview.day}", subject, "\n".join(lines) + "\n", self.to)

    @hookimpl
    def on_decline(
        self, change: ResponseChange, session: SessionView, context: HookContext
    ) -> Notice | None:
        """A decline close to the start: tell the office now, not tomorrow morning."""
        if session.status != "scheduled":
            return None
        left = session.start - context.now
        if left <= timedelta(0) or left > timedelta(days=self.notify_days):
            return None
        student = session.student(change.email)
        name = student.name if student is not None else None
        phone = f" ({student.phone})" if student is not None and student.phone else ""
        capacity = session.capacity if session.capacity is not None else "∞"
        when = _local(session.start, session.tz)
        text = [
            f"{_who(name, change.email)}{phone} declined {session.key} {session.title},",
            f"which starts {when} ({session.tz}).",
            "",
            f"Answered {_local(change.responded_at, session.tz)} "
            f"({SOURCES.get(change.source, change.source)}); before: "
            f"{ICONS[change.old]} {change.old}.",
            f"Seats taken: {session.seats_taken}/{capacity}; waitlist: {len(session.waitlist)}.",
            "",
            f"The session page: tmcaldav session show {session.key}",
            "What the plugins suggest: tmcaldav suggestions --session " + session.key,
        ]
        return Notice(
            f"decline:{context.event_id}",
            f"{name or change.email} declined {session.key} ({when})",
            "\n".join(text) + "\n",
            self.to,
        )


def tmcaldav_plugin(settings: Mapping[str, Any]) -> DigestPlugin:
    """Build the plugin (for loading this module as a file)."""
    return DigestPlugin(settings)
