"""Suggestions: listing them, and what applying or dismissing each kind does.

A suggestion is `open` until it is `applied`, `dismissed`, or `withdrawn` (its premise
broke: see `tmcaldav.hooks.premises`). Applying re-checks the premise before anything
is written and again inside the transaction that records the action, where it also
marks the suggestion applied and writes its note: the action, the mark and the note
are one unit. A stale suggestion (withdrawn, or open with a broken premise) is refused
with what changed and what to do (`--force` does it anyway); of two applies racing
(the daemon's auto-apply and `suggestions apply`) one wins and the other is told so.
Work done on the server before a refusal inside the transaction (a race of
milliseconds) is brought in line by the next poll.

| kind | applying it |
|---|---|
| cancel_enrollment | status cancelled; the attendee is removed from the event |
| invite_waitlisted | the waitlisted student is invited (added to the event) |
| promote_waitlisted | status enrolled (refused while no seat is free) |
| contact_student | a note on the enrollment records the follow-up |
| offer_other_session | enrolled in `details["session"]` and invited there; waitlisted if full |
| mark_no_show | status no_show (refused when attendance was recorded) |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tmcaldav.domain import SEAT_STATUSES, SuggestionState
from tmcaldav.errors import Refused, TmcaldavError
from tmcaldav.hooks.outbox import SuggestionEvent, to_row
from tmcaldav.hooks.premises import APPLYING
from tmcaldav.store import Store, add_note, get_enrollment, get_session
from tmcaldav.store.model import Enrollment, Person, Suggestion, TrainingSession, utcnow
from tmcaldav.store.pages import iso
from tmcaldav.store.roster import enroll, seats_taken

if TYPE_CHECKING:
    from tmcaldav.publish import Publisher

log = logging.getLogger(__name__)


class SuggestionError(TmcaldavError):
    """A suggestion that cannot be applied or dismissed; nothing was changed."""


class StaleSuggestion(SuggestionError, Refused):
    """A suggestion whose premise no longer holds; applying it was refused."""

    def __init__(self, message: str, what_changed: str):
        super().__init__(message)
        self.what_changed = what_changed


def record_suggestion(db: Session, suggestion: Suggestion) -> Suggestion:
    """Store a new suggestion with the outbox row that runs `on_suggestion` for it
    (and lets `auto_apply` see it), in the caller's transaction."""
    db.add(suggestion)
    db.flush()
    db.add(
        to_row(
            SuggestionEvent(suggestion.id),
            session_id=suggestion.session_id,
            enrollment_id=suggestion.enrollment_id,
            event_id=SuggestionEvent.event_id_for(suggestion.id),
        )
    )
    return suggestion


@dataclass(frozen=True)
class Target:
    """A suggestion detached from the store: what it is about and where it stands."""

    id: int
    kind: str
    reason: str
    state: str
    session: str
    email: str
    details: dict[str, Any]
    decided_at: str | None
    withdrawn_reason: str | None = None


def suggestion_row(suggestion: Suggestion, session_key: str, email: str | None) -> dict[str, Any]:
    """A suggestion as the JSON of `tmcaldav suggestions --json`."""
    return {
        "id": suggestion.id,
        "session": session_key,
        "email": email,
        "kind": suggestion.kind,
        "reason": suggestion.reason,
        "plugin": suggestion.plugin,
        "state": suggestion.state,
        "created_at": iso(suggestion.created_at),
        "decided_at": iso(suggestion.decided_at),
        "details": dict(suggestion.details or {}),
        "withdrawn_reason": suggestion.withdrawn_reason,
        "premise": suggestion.premise,
    }


def _rows(db: Session) -> Any:
    return (
        select(Suggestion, TrainingSession.key, Person.email)
        .join(TrainingSession, TrainingSession.id == Suggestion.session_id)
        .outerjoin(Enrollment, Enrollment.id == Suggestion.enrollment_id)
        .outerjoin(Person, Person.id == Enrollment.person_id)
        .order_by(Suggestion.created_at, Suggestion.id)
    )


def list_suggestions(
    db: Session,
    *,
    session_key: str | None = None,
    include_decided: bool = False,
    email: str | None = None,
) -> list[dict[str, Any]]:
    """Suggestions as rows, oldest first: open ones, or all with `include_decided`; only
    one student's with `email`."""
    stmt = _rows(db)
    if session_key is not None:
        get_session(db, session_key)  # NotFoundError for an unknown key
        stmt = stmt.where(TrainingSession.key == session_key)
    if email is not None:
        stmt = stmt.where(Person.email == email.strip().lower())
    if not include_decided:
        stmt = stmt.where(Suggestion.state == SuggestionState.OPEN)
    return [suggestion_row(s, key, address) for s, key, address in db.execute(stmt)]


def _load(db: Session, suggestion_id: int) -> Target:
    row = db.execute(_rows(db).where(Suggestion.id == suggestion_id)).one_or_none()
    if row is None:
        raise SuggestionError(f"no suggestion with id {suggestion_id}; see: tmcaldav suggestions")
    suggestion, key, email = row
    if email is None:
        raise SuggestionError(f"suggestion {suggestion_id} names no student; dismiss it")
    return Target(
        suggestion.id,
        suggestion.kind,
        suggestion.reason,
        suggestion.state,
        key,
        email,
        dict(suggestion.details or {}),
        iso(suggestion.decided_at),
        suggestion.withdrawn_reason,
    )


def _require_open(target: Target, *, force: bool = False) -> None:
    if target.state == SuggestionState.APPLIED:
        raise SuggestionError(
            f"suggestion {target.id} was already applied ({target.decided_at}); nothing done"
        )
    if target.state == SuggestionState.DISMISSED:
        raise SuggestionError(
            f"suggestion {target.id} was dismissed ({target.decided_at}); nothing done"
        )
    if target.state == SuggestionState.WITHDRAWN and not force:
        raise StaleSuggestion(
            f"suggestion {target.id} was withdrawn ({target.decided_at}): "
            f"{target.withdrawn_reason}; nothing done. To do it anyway: "
            f"tmcaldav suggestions apply {target.id} --force",
            target.withdrawn_reason or "withdrawn",
        )


def _stale(target: Target, what_changed: str) -> StaleSuggestion:
    return StaleSuggestion(
        f"suggestion {target.id} ({target.kind} {target.email} in {target.session}) is no "
        f"longer true: {what_changed}; nothing done. Drop it: tmcaldav suggestions dismiss "
        f"{target.id}, or do it anyway: tmcaldav suggestions apply {target.id} --force",
        what_changed,
    )


def dismiss_suggestion(store: Store, suggestion_id: int) -> str:
    """Dismiss an open suggestion; returns what was done."""
    with store.transaction() as db:
        target = _load(db, suggestion_id)
        if target.state == SuggestionState.WITHDRAWN:
            raise SuggestionError(
                f"suggestion {suggestion_id} was withdrawn already ({target.decided_at}): "
                f"{target.withdrawn_reason}; nothing to dismiss"
            )
        _require_open(target)
        claimed = _claim(db, target, SuggestionState.DISMISSED, force=False)
        claimed.state = SuggestionState.DISMISSED
        claimed.decided_at = utcnow()
    return (
        f"dismissed suggestion {suggestion_id} ({target.kind} {target.email} in {target.session})"
    )


def _claim(db: Session, target: Target, state: str, *, force: bool) -> Suggestion:
    """The suggestion row, locked, if it may still become `state`; else SuggestionError."""
    suggestion = db.scalars(
        select(Suggestion).where(Suggestion.id == target.id).with_for_update()
    ).one_or_none()
    if suggestion is None:
        raise SuggestionError(f"suggestion {target.id} was deleted meanwhile")
    allowed = {SuggestionState.OPEN} | ({SuggestionState.WITHDRAWN} if force else set())
    if suggestion.state not in allowed:
        raise SuggestionError(
            f"suggestion {target.id} was {suggestion.state} meanwhile "
            f"({iso(suggestion.decided_at)}), by another command or the daemon; "
            "nothing more done"
        )
    return suggestion


def apply_suggestion(
    store: Store,
    publisher: Publisher,
    suggestion_id: int,
    *,
    note: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> str:
    """Perform a suggestion's action and mark it applied; returns what was done.

    Refused (StaleSuggestion, nothing changed) when its premise no longer holds, unless
    `force`. `note` goes on the student's enrollment (in the other session for
    offer_other_session), written with the mark. SuggestionError (or the service's own
    error) when it cannot be done; then the suggestion stays as it was.
    """
    from tmcaldav.hooks.premises import check_one

    with store.scratch() as db:
        target = _load(db, suggestion_id)
        _require_open(target, force=force)
        if not force:
            what = check_one(db, suggestion_id, now or utcnow())
            if what:
                raise _stale(target, what)
    action = _ACTIONS.get(target.kind)
    if action is None:
        raise SuggestionError(f"suggestion {suggestion_id} has an unknown kind {target.kind!r}")
    done = action(store, publisher, target, _Guard(target, note, force, now))
    log.info("applied suggestion %s: %s", suggestion_id, done)
    return f"applied suggestion {suggestion_id}: {done}"


class _Guard:
    """Runs in the transaction that records an action: re-checks the premise there, marks
    the suggestion applied and writes its note, all with the action itself."""

    def __init__(self, target: Target, note: str | None, force: bool, now: datetime | None):
        self.target = target
        self.note = note
        self.force = force
        self.now = now
        # Where the note goes (the other session for an offer), and the default note.
        self.note_session = target.session
        self.default_note: str | None = None
        self.also: Callable[[Session], None] | None = None

    def __call__(self, db: Session, final: bool = True) -> None:
        """Check (and, when `final`, claim and mark); before the network write it only
        reads, as that transaction may not write on SQLite."""
        from tmcaldav.hooks.premises import CAUSE, check_one

        if not final:
            state = db.scalar(select(Suggestion.state).where(Suggestion.id == self.target.id))
            allowed = {SuggestionState.OPEN} | (
                {SuggestionState.WITHDRAWN} if self.force else set()
            )
            if state not in allowed:
                raise SuggestionError(
                    f"suggestion {self.target.id} was {state} meanwhile, by another command "
                    "or the daemon; nothing more done"
                )
        else:
            suggestion = _claim(db, self.target, SuggestionState.APPLIED, force=self.force)
        if not self.force:
            what = check_one(db, self.target.id, self.now or utcnow(), applying=True)
            if what:
                raise _stale(self.target, what)
        if self.also is not None:
            self.also(db)
        if not final:
            return
        db.info[APPLYING] = self.target.id
        db.info[CAUSE] = f"by suggestion {self.target.id}"
        suggestion.state = SuggestionState.APPLIED
        suggestion.decided_at = utcnow()
        text = self.note or self.default_note
        if text:
            where = get_session(db, self.note_session)
            add_note(db, get_enrollment(db, where, self.target.email), text)


# ---- the actions ------------------------------------------------------------------------------


def _enrollment_status(store: Store, key: str, email: str) -> str:
    with store.scratch() as db:
        return get_enrollment(db, get_session(db, key), email).status


def _cancel(store: Store, publisher: Publisher, t: Target, guard: _Guard) -> str:
    old = publisher.set_status(t.session, t.email, "cancelled", guard=guard)
    if old == "cancelled":
        return f"{t.email} was already cancelled in {t.session}"
    return f"{t.email} cancelled in {t.session} (was {old}) and removed from the event"


def _invite(store: Store, publisher: Publisher, t: Target, guard: _Guard) -> str:
    status = _enrollment_status(store, t.session, t.email)
    if status == "cancelled":
        raise SuggestionError(
            f"{t.email} is cancelled in {t.session}; dismiss suggestion {t.id}, or "
            f"set-status {t.session} {t.email} waitlisted first"
        )
    newly = publisher.invite(t.session, [t.email], guard=guard)
    if not newly:
        return f"{t.email} was already invited to {t.session}"
    return f"{t.email} invited to {t.session}"


def _seat_check(t: Target) -> Callable[[Session], None]:
    """Inside the recording transaction: never promote into a full session."""

    def check(db: Session) -> None:
        session = get_session(db, t.session, lock=True)
        status = get_enrollment(db, session, t.email).status
        if status in SEAT_STATUSES:
            raise SuggestionError(f"{t.email} already holds a seat in {t.session} ({status})")
        if status != "waitlisted":
            raise SuggestionError(
                f"{t.email} is {status} in {t.session}, not waitlisted; dismiss suggestion {t.id}"
            )
        taken, capacity = seats_taken(session), session.capacity
        if capacity is not None and taken >= capacity:
            raise SuggestionError(
                f"session {t.session} is full ({taken}/{capacity}); cancel a seat first "
                f"(see: tmcaldav suggestions --session {t.session}) or raise --capacity"
            )

    return check


def _promote(store: Store, publisher: Publisher, t: Target, guard: _Guard) -> str:
    with store.scratch() as db:
        _seat_check(t)(db)
    guard.also = _seat_check(t)
    publisher.set_status(t.session, t.email, "enrolled", guard=guard)
    return f"{t.email} enrolled in {t.session} (was waitlisted)"


def _contact(store: Store, publisher: Publisher, t: Target, guard: _Guard) -> str:
    # The follow-up is the note itself.
    guard.default_note = f"followed up: {t.reason}"
    with store.transaction() as db:
        guard(db)
    return f"noted the follow-up with {t.email} in {t.session}"


def _offer(store: Store, publisher: Publisher, t: Target, guard: _Guard) -> str:
    other = str(t.details.get("session") or "")
    if not other:
        raise SuggestionError(f"suggestion {t.id} names no other session; dismiss it")
    guard.note_session = other
    with store.transaction() as db:
        # Enrolling her there is this apply's first step, not a change against it.
        db.info[APPLYING] = t.id
        session = get_session(db, other)
        if session.status == "cancelled":
            raise SuggestionError(f"session {other} is cancelled; dismiss suggestion {t.id}")
        existing = next((e for e in session.enrollments if e.person.email == t.email), None)
        if existing is None:
            full = session.capacity is not None and seats_taken(session) >= session.capacity
            if full:
                # Waitlisted there, and invited when a seat frees like everyone else on
                # that waitlist: nothing more to do than this transaction.
                guard(db)
            enroll(db, other, [t.email], waitlist=full)
            status = "waitlisted" if full else "enrolled"
        elif existing.status == "cancelled":
            raise SuggestionError(
                f"{t.email} was cancelled in {other}; set-status {other} {t.email} enrolled "
                f"first, or dismiss suggestion {t.id}"
            )
        else:
            status = existing.status
    if status == "waitlisted":
        return f"{t.email} waitlisted in {other} (it is full)"
    newly = publisher.invite(other, [t.email], guard=guard)
    return f"{t.email} {status} in {other}" + (" and invited" if newly else " (already invited)")


def _no_show(store: Store, publisher: Publisher, t: Target, guard: _Guard) -> str:
    status = _enrollment_status(store, t.session, t.email)
    if status == "no_show":
        return f"{t.email} was already recorded as a no-show in {t.session}"
    if status != "enrolled":
        raise SuggestionError(
            f"{t.email} is recorded as {status} in {t.session}; dismiss suggestion {t.id}"
        )
    publisher.set_status(t.session, t.email, "no_show", guard=guard)
    return f"{t.email} recorded as a no-show in {t.session}"


_ACTIONS: dict[str, Callable[[Store, Publisher, Target, _Guard], str]] = {
    "cancel_enrollment": _cancel,
    "invite_waitlisted": _invite,
    "promote_waitlisted": _promote,
    "contact_student": _contact,
    "offer_other_session": _offer,
    "mark_no_show": _no_show,
}
