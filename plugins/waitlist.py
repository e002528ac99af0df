"""The `waitlist` plugin: a declined seat goes to the next student on the waitlist.

- An enrolled student declines → cancel_enrollment for them; then the seats that frees
  go first to waitlisted students who already accepted an invitation and wait for a seat
  (promote_waitlisted, in the order they accepted), then to invitations: invite_waitlisted
  for as many waitlisted students (earliest first) as seats will then be free, counting
  invitations already out (invited waitlisted students who have not declined, and open
  invite suggestions).
- A waitlisted student who was invited accepts → promote_waitlisted, first come first
  served: when more waitlisted invitees accepted than seats are free, the seats go in
  the order of their acceptance times, and a later acceptor gets contact_student ("no
  seat left; still on the waitlist at position N"), never a promotion that overbooks.
- A waitlisted student who was invited declines → cancel_enrollment for them (off the
  waitlist and the event), and the next student in line is suggested instead.

Each suggestion names the decliner it rests on (`SuggestionSpec.because`): when she
answers again, the advice is withdrawn.

A cancel or invite suggestion the administrator dismissed is respected: the seat of a
decliner kept on purpose is not handed on, and a waitlisted student the administrator
passed over is skipped. Answers to a cancelled session move no seats. Settings: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import Plugin, ResponseChange, SessionView, SuggestionSpec


def leaving(session: SessionView) -> int:
    """Seated students who declined and whose cancellation was not dismissed."""
    return len(session.leaving)


def waiting_acceptors(session: SessionView) -> list[str]:
    """Waitlisted students who accepted and may have a seat now, first come first served
    (pure): as many as `seats_to_give`, without an open or applied promotion."""
    give = session.seats_to_give
    order = list(session.accepted_from_waitlist)
    chosen = order if give is None else order[:give]
    return [
        s.email
        for s in chosen
        if not session.suggestions_for(s.email, "promote_waitlisted", {"open", "applied"})
    ]


def invitations_out(session: SessionView) -> int:
    """Waitlisted students invited (not declined) or with an open invite suggestion
    (acceptors waiting for a seat are counted here too: they claim one)."""
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
        if session.suggestions_for(s.email, "invite_waitlisted", {"open", "dismissed"}):
            continue  # suggested before (open: counted; dismissed: passed over)
        chosen.append(s.email)
    return chosen


class WaitlistPlugin(Plugin):
    """Hands declined seats to the waitlist, in order."""

    __version__ = "1"

    @hookimpl
    def on_decline(self, change: ResponseChange, session: SessionView) -> list[SuggestionSpec]:
        """Cancel the decliner; invite the next in line for each seat that frees."""
        student = session.student(change.email)
        if session.status != "scheduled":
            return []  # a cancelled session has no seats to hand on
        if student is None or student.status not in ("enrolled", "waitlisted"):
            return []
        who = student.name or student.email
        if student.status == "enrolled":
            waiting = len(session.waitlist)
            if waiting:
                reason = (
                    f"{who} declined the invitation; free their seat for the waitlist "
                    f"({waiting} waiting)"
                )
            else:
                reason = f"{who} declined the invitation; cancel the enrollment to free the seat"
        else:
            reason = (
                f"{student.name or student.email} was invited from the waitlist and declined; "
                "take them off the waitlist"
            )
        suggestions = [SuggestionSpec("cancel_enrollment", student.email, reason)]
        for email in waiting_acceptors(session):
            suggestions.append(
                SuggestionSpec(
                    "promote_waitlisted",
                    email,
                    f"a seat frees up as {who} declined; {_name(session, email)} accepted "
                    "from the waitlist and waits for a seat",
                    because=(student.email,),
                )
            )
        for email in next_in_line(session):
            waiting = session.student(email)
            place = waiting.waitlist_position if waiting is not None else "?"
            suggestions.append(
                SuggestionSpec(
                    "invite_waitlisted",
                    email,
                    f"a seat frees up as {who} declined; "
                    f"next on the waitlist (position {place})",
                    because=(student.email,),
                )
            )
        return suggestions

    @hookimpl
    def on_accept(self, change: ResponseChange, session: SessionView) -> SuggestionSpec | None:
        """A waitlisted student who was invited and accepts gets a seat if one is left for
        her, first come first served; otherwise she is told she still waits."""
        student = session.student(change.email)
        if session.status != "scheduled" or student is None or student.status != "waitlisted":
            return None
        who = student.name or student.email
        order = [s.email for s in session.accepted_from_waitlist]
        # Her place among those who accepted from the waitlist, by acceptance time.
        rank = order.index(student.email) if student.email in order else len(order)
        give = session.seats_to_give
        if give is None or rank < give:
            return SuggestionSpec(
                "promote_waitlisted",
                student.email,
                f"{who} was invited from the waitlist and accepted",
            )
        return SuggestionSpec(
            "contact_student",
            student.email,
            f"{who} accepted, but others accepted first: no seat left; still on the waitlist "
            f"at position {student.waitlist_position}",
            dedupe_key="no_seat",
            no_seat=True,
        )


def _name(session: SessionView, email: str) -> str:
    student = session.student(email)
    return (student.name or student.email) if student is not None else email


def tmcaldav_plugin(settings: Mapping[str, Any]) -> WaitlistPlugin:
    """Build the plugin (for loading this module as a file)."""
    return WaitlistPlugin(settings)
