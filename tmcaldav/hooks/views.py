"""What plugins see: frozen views of sessions, students, answers and suggestions.

Hooks never receive ORM objects or database sessions: the dispatcher builds these
plain, immutable values from the store (`tmcaldav.hooks.dispatch`), so a plugin cannot
change the store behind the dispatcher's back and a view stays valid after its
transaction ends. Plugins give their advice back as `SuggestionSpec` values.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tmcaldav.domain import INVITATION_OUT as INVITATION_OUT
from tmcaldav.domain import SEAT_STATUSES, SuggestionKind, values

SUGGESTION_KINDS = values(SuggestionKind)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class NoteView:
    """A follow-up note on an enrollment."""

    text: str
    created_at: datetime


@dataclass(frozen=True)
class StudentView:
    """One student in one session: the session page's line, frozen."""

    enrollment_id: int
    email: str
    name: str | None
    phone: str | None
    # enrolled, waitlisted, cancelled, attended, no_show
    status: str
    # not_invited, invited, accepted, tentative, declined, delegated
    calendar_status: str
    # Why the calendar status is not the student's own answer ("rescheduled", "removed").
    calendar_reason: str | None
    responded_at: datetime | None
    invited_at: datetime | None
    # 1-based place on the waitlist; None when not waitlisted.
    waitlist_position: int | None
    notes: tuple[NoteView, ...] = ()

    @property
    def holds_seat(self) -> bool:
        """True when the enrollment counts against the capacity."""
        return self.status in SEAT_STATUSES

    @property
    def invitation_out(self) -> bool:
        """Invited and has not declined or delegated (nor been cancelled)."""
        return self.status != "cancelled" and self.calendar_status in INVITATION_OUT


@dataclass(frozen=True)
class SuggestionView:
    """A suggestion as stored: its id, what it advises and where it stands."""

    id: int
    session: str
    email: str | None
    kind: str
    reason: str
    plugin: str
    # open, applied, dismissed, withdrawn
    state: str
    dedupe_key: str
    created_at: datetime
    decided_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # What the advice was made from (see tmcaldav.hooks.premises); None for old ones.
    premise: Mapping[str, Any] | None = None
    # Why it was withdrawn, in plain words (state withdrawn only).
    withdrawn_reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", _frozen_mapping(self.details))
        if self.premise is not None:
            object.__setattr__(self, "premise", _frozen_mapping(self.premise))


@dataclass(frozen=True)
class SessionView:
    """One session with its students (page order: seated, waitlist in order, the rest).

    `suggestions` holds every suggestion made for the session (open, applied and
    dismissed), so a plugin can see what has been advised and decided already. Views
    of other sessions (`HookContext.later_sessions`) carry no suggestions.
    """

    id: int
    key: str
    title: str
    course: str | None
    start: datetime
    end: datetime
    tz: str
    location: str | None
    # None: no limit.
    capacity: int | None
    # scheduled or cancelled
    status: str
    # unpublished, published or missing (the event on the CalDAV server)
    calendar_state: str
    students: tuple[StudentView, ...]
    suggestions: tuple[SuggestionView, ...] = ()
    # The event's SEQUENCE as last written or seen.
    sequence: int = 0

    @property
    def seats_taken(self) -> int:
        """How many students hold a seat (enrolled, attended, no_show)."""
        return sum(1 for s in self.students if s.holds_seat)

    @property
    def free_seats(self) -> int | None:
        """Seats left (never below 0), or None when the capacity is unlimited."""
        if self.capacity is None:
            return None
        return max(self.capacity - self.seats_taken, 0)

    @property
    def is_full(self) -> bool:
        """True when a capacity is set and every seat is taken."""
        return self.free_seats == 0

    @property
    def waitlist(self) -> tuple[StudentView, ...]:
        """Waitlisted students in waitlist order (earliest first)."""
        waiting = [s for s in self.students if s.waitlist_position is not None]
        return tuple(sorted(waiting, key=lambda s: s.waitlist_position or 0))

    @property
    def leaving(self) -> tuple[StudentView, ...]:
        """Seated students who declined and whose cancellation was not dismissed: their
        seats free once the cancellation is applied."""
        return tuple(
            s
            for s in self.students
            if s.holds_seat
            and s.status == "enrolled"
            and s.calendar_status == "declined"
            and not self.suggestions_for(s.email, "cancel_enrollment", {"dismissed"})
        )

    @property
    def seats_to_give(self) -> int | None:
        """Seats free now or freeing (free seats plus `leaving`), for the waitlist; None
        when the capacity is unlimited."""
        if self.capacity is None:
            return None
        return max(self.capacity - self.seats_taken + len(self.leaving), 0)

    @property
    def accepted_from_waitlist(self) -> tuple[StudentView, ...]:
        """Waitlisted students who accepted an invitation, first come first served: in the
        order of their acceptance times (then waitlist order)."""
        accepted = [s for s in self.waitlist if s.calendar_status == "accepted"]
        # An acceptance without a time (never from the sync) goes after the timed ones.
        return tuple(
            sorted(
                accepted,
                key=lambda s: (
                    s.responded_at is None,
                    s.responded_at.timestamp() if s.responded_at else 0.0,
                    s.waitlist_position or 0,
                ),
            )
        )

    def others_waiting(self, email: str) -> tuple[StudentView, ...]:
        """The waitlist without this student: who else waits for a seat."""
        address = email.strip().lower()
        return tuple(s for s in self.waitlist if s.email != address)

    def student(self, email: str) -> StudentView | None:
        """The student with this address (any case), or None."""
        address = email.strip().lower()
        return next((s for s in self.students if s.email == address), None)

    def suggestions_for(
        self, email: str, kind: str | None = None, states: Iterable[str] | None = None
    ) -> tuple[SuggestionView, ...]:
        """This session's suggestions about one student, of one kind and state if given."""
        address = email.strip().lower()
        wanted = None if states is None else frozenset(states)
        return tuple(
            s
            for s in self.suggestions
            if s.email == address
            and (kind is None or s.kind == kind)
            and (wanted is None or s.state in wanted)
        )


@dataclass(frozen=True)
class ResponseChange:
    """A student's calendar status changed: the payload of the response hooks.

    `event_id` is unique per change and stays the same if the hook runs again after a
    crash: use it as an idempotency key for side effects outside tmcaldav.
    """

    event_id: str
    session: str
    email: str
    old: str
    new: str
    responded_at: datetime
    # The event SEQUENCE the answer was given to.
    sequence: int | None
    # poll, imip or manual
    source: str
    # The enrollment's status when the answer was recorded ("cancelled": record only).
    enrollment_status: str


@dataclass(frozen=True)
class HookContext:
    """What every hook gets besides its subject: the time, the event id, other sessions.

    `later_sessions` are the scheduled sessions of the same course that start after the
    hook's session, soonest first (empty when the session has no course).
    `attendance` maps each enrolled or waitlisted student of the hook's session to
    their chance of attending (0 to 1) from the turnout forecast (`tmcaldav.forecast`);
    empty when the session has started or is cancelled.
    """

    now: datetime
    event_id: str
    later_sessions: tuple[SessionView, ...] = ()
    attendance: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attendance", _frozen_mapping(self.attendance))


@dataclass(frozen=True)
class SuggestionSpec:
    """A plugin's advice, as a hook returns it; the dispatcher stores it once.

    `session` defaults to the session the hook was called for. The stored dedupe key is
    `kind:session:email`, plus `details["session"]` for offer_other_session, plus
    `dedupe_key` when given: the same advice is stored once, whichever plugin gives it
    and however often. Give a `dedupe_key` to make advice distinct that would otherwise
    share a key (two different reasons to contact the same student).
    """

    kind: str
    email: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)
    session: str | None = None
    dedupe_key: str | None = None
    # Other students of the session whose answers the advice rests on (a decliner whose
    # seat it hands on): a new answer from one of them withdraws it.
    because: tuple[str, ...] = ()
    # True for advice that says there is no seat for the student: withdrawn when one
    # frees for her (first come, first served).
    no_seat: bool = False
    # True for an invitation beyond the free seats on purpose (the turnout forecast
    # expects seats to stay empty): the free-seat rule does not withdraw it.
    overbook: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SUGGESTION_KINDS:
            raise ValueError(
                f"unknown suggestion kind {self.kind!r} (known: {', '.join(SUGGESTION_KINDS)})"
            )
        if not self.email or not self.email.strip():
            raise ValueError("a suggestion names the student it is about (email)")
        if not self.reason or not self.reason.strip():
            raise ValueError("a suggestion needs a reason in plain words")
        object.__setattr__(self, "email", self.email.strip().lower())
        object.__setattr__(self, "details", _frozen_mapping(self.details))
        object.__setattr__(self, "because", tuple(e.strip().lower() for e in self.because))
        if self.kind == "offer_other_session" and not self.details.get("session"):
            raise ValueError('offer_other_session needs details={"session": KEY}')

    def key_for(self, session_key: str) -> str:
        """The dedupe key this advice is stored under, for the hook's session."""
        parts = [self.kind, self.session or session_key, self.email]
        if self.kind == "offer_other_session":
            parts.append(str(self.details["session"]))
        if self.dedupe_key:
            parts.append(self.dedupe_key)
        return ":".join(parts)


@dataclass(frozen=True)
class Notice:
    """A plain-text mail a plugin asks tmcaldav to send to the administrator.

    Stored once under its `key` (the same key again is dropped, however often it is
    returned), then sent over `[smtp]` by the daemon's tick and retried until it goes.
    `to` lists the administrators' addresses; empty means the organizer's mailbox
    (`[scheduling] organizer_email`). An address that is a student's is refused: notices
    never go to students.
    """

    key: str
    subject: str
    text: str
    to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.key or not self.key.strip():
            raise ValueError("a notice needs a key (it is sent once per key)")
        if not self.subject.strip() or "\n" in self.subject or "\r" in self.subject:
            raise ValueError("a notice needs a subject of one line")
        if not self.text.strip():
            raise ValueError("a notice needs a text")
        object.__setattr__(self, "to", tuple(a.strip().lower() for a in self.to))


@dataclass(frozen=True)
class AnswerView:
    """One answer as recorded: who, for which session, what, when, and how it came."""

    session: str
    title: str
    email: str
    name: str | None
    calendar_status: str
    responded_at: datetime
    observed_at: datetime
    # poll, imip, manual, link or import
    source: str


@dataclass(frozen=True)
class DailyOverview:
    """What `on_daily` gets: the day's news across every session.

    `answers` are the answers recorded since `since` (the plugin's previous `on_daily`,
    or a day before), oldest first; `suggestions` every open suggestion; `upcoming` the
    scheduled sessions that start within the plugin's `days_before` days (default 3),
    soonest first, with their students. `day` is the local date in `[scheduling]
    timezone`.
    """

    day: str
    since: datetime
    tz: str
    answers: tuple[AnswerView, ...]
    suggestions: tuple[SuggestionView, ...]
    upcoming: tuple[SessionView, ...]


# What a hook may return: suggestions, notices to the administrator, or nothing.
SuggestionResult = (
    SuggestionSpec | Notice | Sequence[SuggestionSpec | Notice] | None
)


def check_settings(settings: Mapping[str, Any], known: tuple[str, ...] = ()) -> None:
    """ValueError naming any key of a plugin's settings table it does not take.

    `days_before` and `daily_hour` are always allowed: the dispatcher reads them for
    every plugin (the window of its `on_no_response` and of `on_daily`'s upcoming
    sessions; the hour `on_daily` fires).
    """
    unknown = set(settings) - {"days_before", "daily_hour", *known}
    if unknown:
        takes = ", ".join(("days_before", "daily_hour", *known))
        raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; known: {takes}")


class Plugin:
    """A base for a plugin class that takes no settings of its own.

    tmcaldav builds a plugin class from its `[plugins.NAME]` table; this one refuses any
    key but those every plugin may have (`check_settings`). A plugin with settings of
    its own checks them in its own `__init__`.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        check_settings(settings)
