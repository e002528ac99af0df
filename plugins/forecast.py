"""The `forecast` plugin: invite from the waitlist the seats that will likely stay empty.

An accepted seat is not a filled seat. Within `days_before` days of a session's start,
whenever an answer changes (and when the time checks find students silent), the plugin
adds up the seated students' chances of attending (`context.attendance`, from the
turnout forecast) and suggests `invite_waitlisted` for as many waitlisted students, in
waitlist order, as keep the chance of more students coming than there are seats at or
under `max_overbook_risk`: "expected turnout 9.4 of 12 seats (80%: 8–11); inviting 2
from the waitlist keeps the chance of overbooking under 10%". Applied like any waitlist
invitation. Off by default.

Settings: `max_overbook_risk` (default 0.1), `days_before` (default 7).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from tmcaldav.forecast import invitation_reason, turnout, waitlist_invitations
from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import HookContext, SessionView, StudentView, SuggestionSpec, check_settings

DEFAULT_RISK = 0.1
DEFAULT_DAYS = 7


class ForecastPlugin:
    """Over-invites from the waitlist by the turnout forecast."""

    __version__ = "1"

    def __init__(self, settings: Mapping[str, Any]):
        check_settings(settings, ("max_overbook_risk",))
        risk = settings.get("max_overbook_risk", DEFAULT_RISK)
        if isinstance(risk, bool) or not isinstance(risk, int | float) or not 0 <= risk <= 1:
            raise ValueError(f"max_overbook_risk must be a number from 0 to 1, not {risk!r}")
        days = settings.get("days_before", DEFAULT_DAYS)
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"days_before must be a whole number of days, not {days!r}")
        self.max_overbook_risk = float(risk)
        self.window = timedelta(days=days)

    def advice(self, session: SessionView, context: HookContext) -> list[SuggestionSpec]:
        """The invitations the forecast allows now (pure over the views)."""
        if (
            session.status != "scheduled"
            or session.capacity is None
            or not context.attendance
            or not context.now < session.start <= context.now + self.window
        ):
            return []
        chance = context.attendance
        # Who may come: the seated, and waitlisted students invited or about to be
        # (an invitation suggested and not decided yet).
        counted = [
            s
            for s in session.students
            if s.holds_seat
            or (
                s.status == "waitlisted"
                and (
                    s.invitation_out
                    or session.suggestions_for(s.email, "invite_waitlisted", {"open"})
                )
            )
        ]
        candidates = [
            s
            for s in session.waitlist
            # Advice given before stands (open, applied or dismissed); withdrawn advice
            # may be given again.
            if s.calendar_status == "not_invited"
            and not session.suggestions_for(s.email, states=("open", "applied", "dismissed"))
        ]
        if not candidates:
            return []
        seated = [chance.get(s.email, 1.0) for s in counted]
        invite = waitlist_invitations(
            seated,
            [chance.get(s.email, 1.0) for s in candidates],
            session.capacity,
            self.max_overbook_risk,
        )
        if invite <= 0:
            return []
        reason = invitation_reason(
            turnout(seated, session.capacity), session.capacity, invite, self.max_overbook_risk
        )
        return [_invite(s, reason) for s in candidates[:invite]]

    @hookimpl
    def on_response(self, session: SessionView, context: HookContext) -> list[SuggestionSpec]:
        """Any answer changes the forecast."""
        return self.advice(session, context)

    @hookimpl
    def on_no_response(
        self, student: StudentView, session: SessionView, context: HookContext
    ) -> list[SuggestionSpec]:
        """Silence close to the start changes it too."""
        return self.advice(session, context)


def _invite(student: StudentView, reason: str) -> SuggestionSpec:
    return SuggestionSpec(
        kind="invite_waitlisted",
        email=student.email,
        reason=reason,
        dedupe_key="forecast",
        overbook=True,
    )
