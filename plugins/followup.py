"""The `followup` plugin: ask the administrator to contact students who are unsure.

- A student answers Maybe (tentative) and someone else is on the waitlist →
  contact_student at once: someone else is waiting for the seat.
- A student answers Maybe and nobody else waits → contact_student `days_before`
  days before the start (at once if the answer comes later than that, saying whether
  the session starts soon or has started).
- No answer `days_before` days before the start, and someone else waits or the session
  is full → contact_student.

A waitlisted student is never counted as waiting for her own seat. Nobody is contacted
about a cancelled session or one that has ended. Each contact is withdrawn when the
student answers (or the session is rescheduled, cancelled or ends).

Settings (`[plugins.followup]`): `days_before` (whole days, default 3); tmcaldav
also reads it to know when to call `on_no_response`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import (
    HookContext,
    ResponseChange,
    SessionView,
    StudentView,
    SuggestionSpec,
    check_settings,
)
from tmcaldav.words import plural

DEFAULT_DAYS_BEFORE = 3


def _who(student: StudentView) -> str:
    phone = f" ({student.phone})" if student.phone else ""
    return f"{student.name or student.email}{phone}"


def _waiting(count: int) -> str:
    """'1 student is waiting', '3 students are waiting'."""
    return "1 student is waiting" if count == 1 else f"{count} students are waiting"


def _when(session: SessionView, now: datetime) -> str:
    """How close the session is, in true words."""
    if now >= session.start:
        return "the session has started"
    return "the session starts soon"


class FollowupPlugin:
    """Suggests contacting students whose answer is missing or unsure."""

    __version__ = "1"

    def __init__(self, settings: Mapping[str, Any]):
        check_settings(settings)
        days = settings.get("days_before", DEFAULT_DAYS_BEFORE)
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"days_before must be a whole number of days, 0 or more: {days!r}")
        self.days_before = days

    def _tentative(self, student: StudentView, session: SessionView, why: str) -> SuggestionSpec:
        # One key for both paths (at once, or before the start): asked once per student.
        return SuggestionSpec(
            "contact_student",
            student.email,
            f"{_who(student)} answered Maybe; {why}",
            dedupe_key="tentative",
        )

    @hookimpl
    def on_tentative(
        self, change: ResponseChange, session: SessionView, context: HookContext
    ) -> SuggestionSpec | None:
        """Maybe with a waitlist, or close to the start: contact at once."""
        student = session.student(change.email)
        if session.status != "scheduled" or context.now >= session.end:
            return None  # nothing to ask about a session that will not take place
        if student is None or student.status not in ("enrolled", "waitlisted"):
            return None
        if student.calendar_status != "tentative":
            return None  # she answered again since; that answer has its own hooks
        others = session.others_waiting(student.email)
        if others:
            return self._tentative(
                student, session, f"{_waiting(len(others))} for a seat; ask if they come"
            )
        if session.start - context.now <= timedelta(days=self.days_before):
            return self._tentative(
                student, session, f"{_when(session, context.now)}; ask if they come"
            )
        return None  # on_no_response asks `days_before` days before the start

    @hookimpl
    def on_no_response(
        self, student: StudentView, session: SessionView, context: HookContext
    ) -> SuggestionSpec | None:
        """No firm answer close to the start: contact when unsure, or when seats are short."""
        if session.status != "scheduled" or context.now >= session.end:
            return None
        if student.calendar_status == "tentative":
            return self._tentative(
                student, session, f"{_when(session, context.now)}; ask if they come"
            )
        if student.calendar_status != "invited":
            return None  # answered since the check found her
        others = session.others_waiting(student.email)
        if others or session.is_full:
            crowd = _waiting(len(others)) if others else "the session is full"
            return SuggestionSpec(
                "contact_student",
                student.email,
                f"{_who(student)} has not answered the invitation and {crowd}; "
                f"ask if they come ({plural(self.days_before, 'day')} or less before the start)",
                dedupe_key="no_response",
            )
        return None


def tmcaldav_plugin(settings: Mapping[str, Any]) -> FollowupPlugin:
    """Build the plugin (for loading this module as a file)."""
    return FollowupPlugin(settings)
