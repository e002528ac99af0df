"""Suggestions: listing them, and what applying or dismissing each kind does.

Applying performs the action through the same services an administrator's commands
use (the Publisher for anything that changes the event); then one transaction marks the
suggestion applied, only if it is still open (compare-and-set), and writes the note
that goes with it. The work before is idempotent: a crash before that transaction is
healed by applying again, and of two applies racing (the daemon's auto-apply and
`suggestions apply`) one marks it applied and writes its note, the other changes
nothing more and is told so. A suggestion already applied or dismissed is refused
with a clear error.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tmcaldav.errors import TmcaldavError
from tmcaldav.hooks.outbox import SuggestionEvent, to_row
from tmcaldav.store import Store, add_note, get_enrollment, get_session
from tmcaldav.store.model import Enrollment, Person, Suggestion, TrainingSession, utcnow
from tmcaldav.store.pages import iso
from tmcaldav.store.roster import enroll, seats_taken

if TYPE_CHECKING:
    from tmcaldav.publish import Publisher

log = logging.getLogger(__name__)


class SuggestionError(TmcaldavError):
    """A suggestion that cannot be applied or dismissed; nothing was changed."""


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
    }


def list_suggestions(
    db: Session, *, session_key: str | None = None, include_decided: bool = False
) -> list[dict[str, Any]]:
    """Suggestions as rows, oldest first: open ones, or all with `include_decided`."""
    stmt = (
        select(Suggestion, TrainingSession.key, Person.email)
        .join(TrainingSession, TrainingSession.id == Suggestion.session_id)
        .outerjoin(Enrollment, Enrollment.id == Suggestion.enrollment_id)
        .outerjoin(Person, Person.id == Enrollment.person_id)
        .order_by(Suggestion.created_at, Suggestion.id)
    )
    if session_key is not None:
        get_session(db, session_key)  # NotFoundError for an unknown key
        stmt = stmt.where(TrainingSession.key == session_key)
    if not include_decided:
        stmt = stmt.where(Suggestion.state == "open")
    return [suggestion_row(s, key, email) for s, key, email in db.execute(stmt)]


def _load(db: Session, suggestion_id: int) -> Target:
    row = db.execute(
        select(Suggestion, TrainingSession.key, Person.email)
        .join(TrainingSession, TrainingSession.id == Suggestion.session_id)
        .outerjoin(Enrollment, Enrollment.id == Suggestion.enrollment_id)
        .outerjoin(Person, Person.id == Enrollment.person_id)
        .where(Suggestion.id == suggestion_id)
    ).one_or_none()
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
    )


def _require_open(target: Target) -> None:
    if target.state == "applied":
        raise SuggestionError(
            f"suggestion {target.id} was already applied ({target.decided_at}); nothing done"
        )
    if target.state == "dismissed":
        raise SuggestionError(
            f"suggestion {target.id} was dismissed ({target.decided_at}); nothing done"
        )


def _decide(store: Store, target: Target, state: str, note: tuple[str, str] | None = None) -> None:
    """Mark an open suggestion decided and write `note` (session key, text) with it.

    Compare-and-set on `open`, in the transaction that writes the note: when another
    command or the daemon decided it first, nothing is written and SuggestionError says
    so.
    """
    with store.transaction() as db:
        claimed = db.execute(
            update(Suggestion)
            .where(Suggestion.id == target.id, Suggestion.state == "open")
            .values(state=state, decided_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            now = db.execute(
                select(Suggestion.state, Suggestion.decided_at).where(Suggestion.id == target.id)
            ).one_or_none()
            if now is None:
                raise SuggestionError(f"suggestion {target.id} was deleted meanwhile")
            raise SuggestionError(
                f"suggestion {target.id} was {now.state} meanwhile ({iso(now.decided_at)}), "
                "by another command or the daemon; nothing more done"
            )
        if note is not None:
            key, text = note
            add_note(db, get_enrollment(db, get_session(db, key), target.email), text)


def dismiss_suggestion(store: Store, suggestion_id: int) -> str:
    """Dismiss an open suggestion; returns what was done."""
    with store.scratch() as db:
        target = _load(db, suggestion_id)
    _require_open(target)
    _decide(store, target, "dismissed")
    return (
        f"dismissed suggestion {suggestion_id} ({target.kind} {target.email} in {target.session})"
    )


def apply_suggestion(
    store: Store, publisher: Publisher, suggestion_id: int, *, note: str | None = None
) -> str:
    """Perform an open suggestion's action and mark it applied; returns what was done.

    `note` goes on the student's enrollment (in the other session for
    offer_other_session), written with the mark: once, however many applies race.
    SuggestionError (or the service's own error) when it cannot be done; then the
    suggestion stays open. Losing a race to another apply is a SuggestionError too.
    """
    with store.scratch() as db:
        target = _load(db, suggestion_id)
    _require_open(target)
    action = _ACTIONS.get(target.kind)
    if action is None:
        raise SuggestionError(f"suggestion {suggestion_id} has an unknown kind {target.kind!r}")
    done = action(store, publisher, target)
    text = note or done.note
    _decide(store, target, "applied", (done.note_session or target.session, text) if text else None)
    log.info("applied suggestion %s: %s", suggestion_id, done.text)
    return f"applied suggestion {suggestion_id}: {done.text}"


# ---- the actions (each safe to run again) -------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    """What an action did, and where its note goes (written when it is marked applied)."""

    text: str
    # The note when the administrator gives none (contact_student records the follow-up).
    note: str | None = None
    # The session whose enrollment gets the note; None: the suggestion's own.
    note_session: str | None = None


def _enrollment_status(store: Store, key: str, email: str) -> str:
    with store.scratch() as db:
        return get_enrollment(db, get_session(db, key), email).status


def _cancel(store: Store, publisher: Publisher, t: Target) -> _Done:
    old = publisher.set_status(t.session, t.email, "cancelled")
    if old == "cancelled":
        return _Done(f"{t.email} was already cancelled in {t.session}")
    return _Done(f"{t.email} cancelled in {t.session} (was {old}) and removed from the event")


def _invite(store: Store, publisher: Publisher, t: Target) -> _Done:
    status = _enrollment_status(store, t.session, t.email)
    if status == "cancelled":
        raise SuggestionError(
            f"{t.email} is cancelled in {t.session}; dismiss suggestion {t.id}, or "
            f"set-status {t.session} {t.email} waitlisted first"
        )
    newly = publisher.invite(t.session, [t.email])
    if not newly:
        return _Done(f"{t.email} was already invited to {t.session}")
    return _Done(f"{t.email} invited to {t.session}")


def _promote(store: Store, publisher: Publisher, t: Target) -> _Done:
    with store.scratch() as db:
        session = get_session(db, t.session)
        status = get_enrollment(db, session, t.email).status
        taken, capacity = seats_taken(session), session.capacity
    if status in ("enrolled", "attended", "no_show"):
        return _Done(f"{t.email} already holds a seat in {t.session} ({status})")
    if status != "waitlisted":
        raise SuggestionError(
            f"{t.email} is {status} in {t.session}, not waitlisted; dismiss suggestion {t.id}"
        )
    if capacity is not None and taken >= capacity:
        raise SuggestionError(
            f"session {t.session} is full ({taken}/{capacity}); cancel a seat first "
            f"(see: tmcaldav suggestions --session {t.session}) or raise --capacity"
        )
    publisher.set_status(t.session, t.email, "enrolled")
    return _Done(f"{t.email} enrolled in {t.session} (was waitlisted)")


def _contact(store: Store, publisher: Publisher, t: Target) -> _Done:
    # The follow-up is the note itself.
    return _Done(
        f"noted the follow-up with {t.email} in {t.session}", note=f"followed up: {t.reason}"
    )


def _offer(store: Store, publisher: Publisher, t: Target) -> _Done:
    other = str(t.details.get("session") or "")
    if not other:
        raise SuggestionError(f"suggestion {t.id} names no other session; dismiss it")
    with store.transaction() as db:
        session = get_session(db, other)
        if session.status == "cancelled":
            raise SuggestionError(f"session {other} is cancelled; dismiss suggestion {t.id}")
        existing = next((e for e in session.enrollments if e.person.email == t.email), None)
        if existing is None:
            full = session.capacity is not None and seats_taken(session) >= session.capacity
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
        # Invited when a seat frees, like everyone else on that waitlist.
        return _Done(f"{t.email} waitlisted in {other} (it is full)", note_session=other)
    newly = publisher.invite(other, [t.email])
    return _Done(
        f"{t.email} {status} in {other}" + (" and invited" if newly else " (already invited)"),
        note_session=other,
    )


def _no_show(store: Store, publisher: Publisher, t: Target) -> _Done:
    status = _enrollment_status(store, t.session, t.email)
    if status == "no_show":
        return _Done(f"{t.email} was already recorded as a no-show in {t.session}")
    if status != "enrolled":
        raise SuggestionError(
            f"{t.email} is recorded as {status} in {t.session}; dismiss suggestion {t.id}"
        )
    publisher.set_status(t.session, t.email, "no_show")
    return _Done(f"{t.email} recorded as a no-show in {t.session}")


_ACTIONS = {
    "cancel_enrollment": _cancel,
    "invite_waitlisted": _invite,
    "promote_waitlisted": _promote,
    "contact_student": _contact,
    "offer_other_session": _offer,
    "mark_no_show": _no_show,
}
