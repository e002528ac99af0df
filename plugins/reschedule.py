"""The `reschedule` plugin: offer a student who declines a later session of the course.

When an enrolled student declines and a later scheduled session of the same course
has a free seat (and the student is not already in it), suggest
offer_other_session for the soonest such session; a seat already offered to another
student of this session is not offered twice. Applying it enrolls the student there and
invites them. Declines of a cancelled session are not acted on (cancelling a session
makes its own offers). The offer is withdrawn when the student answers again, or the
other session is cancelled, fills up or starts. Settings: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import HookContext, Plugin, ResponseChange, SessionView, SuggestionSpec
from tmcaldav.words import plural


def first_open(
    email: str, later: tuple[SessionView, ...], offered: Mapping[str, int] | None = None
) -> SessionView | None:
    """The soonest later session with a free seat that the student is not in (pure);
    `offered`: seats already offered per session key."""
    for other in later:
        if other.status != "scheduled":
            continue
        if other.student(email) is not None:
            continue  # already there, or cancelled there on purpose
        if other.free_seats is None or other.free_seats - (offered or {}).get(other.key, 0) > 0:
            return other
    return None


def open_offers(session: SessionView) -> dict[str, int]:
    """Seats this session's open offers hold in other sessions, per session key (pure)."""
    held: dict[str, int] = {}
    for s in session.suggestions:
        if s.kind == "offer_other_session" and s.state == "open":
            key = str(s.details.get("session"))
            held[key] = held.get(key, 0) + 1
    return held


class ReschedulePlugin(Plugin):
    """Offers the next session of the course with a free seat to a student who declines."""

    __version__ = "1"

    @hookimpl
    def on_decline(
        self, change: ResponseChange, session: SessionView, context: HookContext
    ) -> SuggestionSpec | None:
        """Offer the soonest later session of the course with a free seat."""
        student = session.student(change.email)
        if session.status != "scheduled" or student is None or student.status != "enrolled":
            return None  # a decline of a cancelled session is no reason to move anyone
        if student.calendar_status != "declined":
            return None  # she answered again since
        other = first_open(student.email, context.later_sessions, open_offers(session))
        if other is None:
            return None
        seats = (
            "unlimited seats" if other.free_seats is None else plural(other.free_seats, "free seat")
        )
        day = other.start.astimezone(ZoneInfo(other.tz)).date().isoformat()
        return SuggestionSpec(
            "offer_other_session",
            student.email,
            f"{student.name or student.email} declined {session.key}; {other.key} "
            f"({other.title}, {day}) has {seats}",
            details={"session": other.key},
        )


def tmcaldav_plugin(settings: Mapping[str, Any]) -> ReschedulePlugin:
    """Build the plugin (for loading this module as a file)."""
    return ReschedulePlugin(settings)
