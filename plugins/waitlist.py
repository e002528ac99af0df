"""The `waitlist` plugin: a declined seat goes to the next student on the waitlist.

- An enrolled student declines → cancel_enrollment for them, and invite_waitlisted
  for as many waitlisted students (earliest first) as seats will then be free,
  counting invitations already out (invited waitlisted students who have not declined,
  and open invite suggestions).
- A waitlisted student who was invited accepts → promote_waitlisted.
- A waitlisted student who was invited declines → cancel_enrollment for them (off the
  waitlist and the event), and the next student in line is suggested instead.

A cancel or invite suggestion the administrator dismissed is respected: the seat of a
decliner kept on purpose is not handed on, and a waitlisted student the administrator
passed over is skipped. Answers to a cancelled session move no seats. Settings: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import ResponseChange, SessionView, SuggestionSpec, check_settings


def leaving(session: SessionView) -> int:
    """Seated students who declined and whose cancellation was not dismissed."""
    return sum(
        1
        for s in session.students
        if s.status == "enrolled"
        and s.calendar_status == "declined"
        and not session.suggestions_for(s.email, "cancel_enrollment", {"dismissed"})
    )


def invitations_out(session: SessionView) -> int:
    """Waitlisted students invited (not declined) or with an open invite suggestion."""
    return sum(
        1
        for s in session.waitlist
        if s.invitation_out or session.suggestions_for(s.email, "invite_waitlisted", {"open"})
    )


def next_in_line(session: SessionView, extra_out: int = 0) -> list[str]:
    """Waitlisted students to invite now, in waitlist order (pure)."""
    if session.capacity is None:
        free = leaving(session)
    else:
        free = session.capacity - session.seats_taken + leaving(session)
    wanted = free - invitations_out(session) - extra_out
    chosen = []
    for s in session.waitlist:
        if len(chosen) >= wanted:
            break
        if s.calendar_status != "not_invited":
            continue  # invited already (answering, or declined)
        if session.suggestions_for(s.email, "invite_waitlisted"):
            continue  # suggested before (open: counted; dismissed: passed over)
        chosen.append(s.email)
    return chosen


class WaitlistPlugin:
    """Hands declined seats to the waitlist, in order."""

    __version__ = "1"

    def __init__(self, settings: Mapping[str, Any]):
        check_settings(settings)

    @hookimpl
    def on_decline(self, change: ResponseChange, session: SessionView) -> list[SuggestionSpec]:
        """Cancel the decliner; invite the next in line for each seat that frees."""
        student = session.student(change.email)
        if session.status != "scheduled":
            return []  # a cancelled session has no seats to hand on
        if student is None or student.status not in ("enrolled", "waitlisted"):
            return []
        if student.status == "enrolled":
            reason = (
                f"{student.name or student.email} declined the invitation; "
                "free their seat for the waitlist"
            )
        else:
            reason = (
                f"{student.name or student.email} was invited from the waitlist and declined; "
                "take them off the waitlist"
            )
        suggestions = [SuggestionSpec("cancel_enrollment", student.email, reason)]
        for email in next_in_line(session):
            waiting = session.student(email)
            place = waiting.waitlist_position if waiting is not None else "?"
            suggestions.append(
                SuggestionSpec(
                    "invite_waitlisted",
                    email,
                    f"a seat frees up as {student.email} declined; "
                    f"next on the waitlist (position {place})",
                )
            )
        return suggestions

    @hookimpl
    def on_accept(self, change: ResponseChange, session: SessionView) -> SuggestionSpec | None:
        """A waitlisted student who was invited and accepts gets the seat."""
        student = session.student(change.email)
        if session.status != "scheduled" or student is None or student.status != "waitlisted":
            return None
        return SuggestionSpec(
            "promote_waitlisted",
            student.email,
            f"{student.name or student.email} was invited from the waitlist and accepted",
        )


def tmcaldav_plugin(settings: Mapping[str, Any]) -> WaitlistPlugin:
    """Build the plugin (for loading this module as a file)."""
    return WaitlistPlugin(settings)
