"""Premises: what each suggestion was made from, and the change that makes it untrue.

Every suggestion records its premise when it is stored: the student's enrollment status
and answer (the response it answers, with its time), the session's status, times and
SEQUENCE, the seats and waitlist it counted, the other students whose answers it rests
on (`SuggestionSpec.because`) and, for offer_other_session, the other session. `broken`
(pure) says in plain words what no longer holds. `keep_true` runs in the transaction of
every change to the store (`keep_suggestions_true`, the check the composition root
installs on the `Store`): open suggestions whose premise broke are withdrawn there and
then, with the reason, and an outbox row tells plugins (`on_suggestion_withdrawn`).
Applying re-checks the premise inside its own transaction (`tmcaldav.hooks.suggestions`).
The passing of time (a session ends) is checked by `withdraw_due` on every tick and
before suggestions are listed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, bindparam, event, select
from sqlalchemy.orm import Session, sessionmaker

from tmcaldav.domain import ANSWERS, SuggestionKind, SuggestionState
from tmcaldav.hooks.views import ResponseChange, SessionView, StudentView, SuggestionView
from tmcaldav.words import plural

log = logging.getLogger(__name__)

# Where a transaction keeps the ids of the sessions it changed (filled on flush).
TOUCHED = "tmcaldav_touched_sessions"
# What caused the changes of a transaction, for the withdrawal reasons ("suggestion 4").
CAUSE = "tmcaldav_cause"
# A suggestion being applied in this transaction: its own change must not withdraw it.
APPLYING = "tmcaldav_applying"

# Kinds whose advice still stands after the session ended (they are about the end, or
# about another session).
_AFTER_END = frozenset({SuggestionKind.MARK_NO_SHOW, SuggestionKind.OFFER_OTHER_SESSION})
# Offers name sessions that may have started since: sessions that started within this
# window are checked for the offers that name them.
_RECENT = timedelta(days=30)
# How an answer is told in a reason.
_VERBS = {
    "accepted": "accepted",
    "declined": "declined",
    "tentative": "answered Maybe",
    "delegated": "delegated the invitation",
    "invited": "was invited",
    "not_invited": "was taken off the event",
}


# ---- recording ---------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _student_facts(student: StudentView) -> dict[str, Any]:
    return {
        "email": student.email,
        "status": student.status,
        "calendar": student.calendar_status,
        "responded_at": _iso(student.responded_at),
    }


def _session_facts(session: SessionView, now: datetime) -> dict[str, Any]:
    return {
        "key": session.key,
        "status": session.status,
        "start": _iso(session.start),
        "end": _iso(session.end),
        "sequence": session.sequence,
        "ended": now >= session.end,
        "capacity": session.capacity,
        "seats_taken": session.seats_taken,
        "waitlist": [s.email for s in session.waitlist],
    }


def premise_for(
    kind: str,
    email: str,
    session: SessionView,
    now: datetime,
    *,
    change: ResponseChange | None = None,
    because: Iterable[str] = (),
    no_seat: bool = False,
    overbook: bool = False,
    other: SessionView | None = None,
) -> dict[str, Any]:
    """The premise of a suggestion about `email` made from `session` as a plugin saw it.

    `change` is the answer the hook was called for: when it is about the same student,
    the premise is that answer (the view may already show a later one, and then the
    suggestion is withdrawn as soon as it is stored).
    """
    premise: dict[str, Any] = {"kind": kind, "session": _session_facts(session, now)}
    student = session.student(email)
    if student is not None:
        facts = _student_facts(student)
        if change is not None and change.email == student.email and change.session == session.key:
            facts["calendar"] = change.new
            facts["responded_at"] = _iso(change.responded_at) if change.new in ANSWERS else None
        premise["student"] = facts
    premise["because"] = [
        _student_facts(s) for s in (session.student(e) for e in because) if s is not None
    ]
    if no_seat:
        premise["no_seat"] = True
    if overbook:
        premise["overbook"] = True
    if other is not None:
        premise["other"] = {
            "key": other.key,
            "status": other.status,
            "start": _iso(other.start),
            "free_seats": other.free_seats,
        }
    return premise


# ---- checking (pure) -------------------------------------------------------------------


def _at(when: datetime | None, now: datetime, tz: str) -> str:
    """'at 10:03' today, 'on 2026-11-29 at 10:03' another day, in the session's zone."""
    if when is None:
        return ""
    zone = ZoneInfo(tz)
    local = when.astimezone(zone)
    if local.date() == now.astimezone(zone).date():
        return f" at {local:%H:%M}"
    return f" on {local:%Y-%m-%d} at {local:%H:%M}"


def _who(student: StudentView) -> str:
    return student.name or student.email


def _answer_changed(facts: Mapping[str, Any], student: StudentView) -> bool:
    if facts.get("calendar") != student.calendar_status:
        return True
    if student.calendar_status not in ANSWERS:
        return False
    return _time(facts.get("responded_at")) != student.responded_at


def _new_answer(student: StudentView, session: SessionView, now: datetime) -> str:
    if student.calendar_reason == "rescheduled":
        return f"{_who(student)}'s answer was reset when {session.key} was rescheduled"
    verb = _VERBS.get(student.calendar_status, f"is now {student.calendar_status}")
    when = student.responded_at if student.calendar_status in ANSWERS else None
    return f"{_who(student)} {verb}{_at(when, now, session.tz)}, after this was suggested"


def broken(
    suggestion: SuggestionView,
    session: SessionView,
    now: datetime,
    *,
    other: SessionView | None = None,
    cause: str | None = None,
    applying: bool = False,
    gone: frozenset[int] = frozenset(),
) -> str | None:
    """What no longer holds of the suggestion's premise, in plain words; None if it holds.

    `session` is the suggestion's session as it is now, `other` the session an
    offer_other_session names. `cause` ("by suggestion 4") is added to a status change.
    `applying`: the check of an apply in progress (its own first step, the enrollment in
    the other session, is not a change against it). `gone`: suggestions withdrawn in the
    same sweep (they claim no seat).
    """
    premise = suggestion.premise
    if premise is None or suggestion.email is None:
        return None  # made before premises were recorded
    kind = suggestion.kind
    was = premise.get("session", {})
    by = f" ({cause})" if cause else ""
    cancelled = was.get("status") == "scheduled" and session.status != "scheduled"
    if cancelled and kind != SuggestionKind.OFFER_OTHER_SESSION:
        return f"session {session.key} was cancelled after this was suggested"
    if (_time(was.get("start")), _time(was.get("end"))) != (session.start, session.end):
        start = session.start.astimezone(ZoneInfo(session.tz))
        return (
            f"session {session.key} was rescheduled (it now starts {start:%Y-%m-%d %H:%M}) "
            "after this was suggested"
        )
    if kind not in _AFTER_END and not was.get("ended") and now >= session.end:
        return f"session {session.key} has ended"
    student = session.student(suggestion.email)
    facts = premise.get("student")
    if student is None:
        return f"{suggestion.email} is no longer in session {session.key}"
    if facts is not None:
        removed = student.status == "cancelled" and student.calendar_reason == "removed"
        # An offer goes with cancelling the decliner here: that is no change against it.
        offer_moves = kind == SuggestionKind.OFFER_OTHER_SESSION and student.status == "cancelled"
        if facts.get("status") != student.status and not offer_moves:
            return (
                f"{_who(student)}'s status was changed from {facts.get('status')} to "
                f"{student.status}{by}, after this was suggested"
            )
        # Advice made for a cancelled session (an offer, a call) does not rest on answers:
        # a late answer to the cancelled session changes nothing of it.
        about_answers = was.get("status") == "scheduled"
        if about_answers and _answer_changed(facts, student) and not (offer_moves and removed):
            return _new_answer(student, session, now)
    for fact in premise.get("because", ()):
        them = session.student(fact.get("email", ""))
        if them is None:
            return f"{fact.get('email')} is no longer in session {session.key}"
        if them.status == "cancelled":
            continue  # the seat their answer freed is free
        if fact.get("status") != them.status:
            return (
                f"{_who(them)}'s status was changed from {fact.get('status')} to "
                f"{them.status}{by}, after this was suggested"
            )
        if _answer_changed(fact, them):
            return _new_answer(them, session, now)
        dismissed = session.suggestions_for(them.email, "cancel_enrollment", {"dismissed"})
        if them.calendar_status == "declined" and dismissed:
            return f"{_who(them)} keeps the seat (the cancellation was dismissed)"
    seat = _seat_problem(suggestion, session, student, gone)
    if seat:
        return seat
    if kind == SuggestionKind.OFFER_OTHER_SESSION:
        return _offer_problem(suggestion, premise, other, now, applying)
    return None


def _seat_problem(
    suggestion: SuggestionView, session: SessionView, student: StudentView, gone: frozenset[int]
) -> str | None:
    """First come, first served: is there (or is there no longer) a seat for the student?"""
    give = session.seats_to_give
    if suggestion.kind == SuggestionKind.PROMOTE_WAITLISTED and give is not None:
        order = [s.email for s in session.accepted_from_waitlist]
        if student.email in order and order.index(student.email) >= give:
            ahead = session.accepted_from_waitlist[: order.index(student.email)]
            why = (
                f"{', '.join(_who(s) for s in ahead)} accepted first"
                if ahead
                else f"{session.seats_taken} of {session.capacity} seats are taken"
            )
            return (
                f"no seat left for {_who(student)}: {why}; still on the waitlist at "
                f"position {student.waitlist_position}"
            )
    overbook = bool(suggestion.premise and suggestion.premise.get("overbook"))
    if suggestion.kind == SuggestionKind.INVITE_WAITLISTED and give is not None and not overbook:
        out = [s for s in session.waitlist if s.email != student.email and s.invitation_out]
        asked = [
            s
            for s in session.suggestions
            if s.kind == SuggestionKind.INVITE_WAITLISTED
            and s.state == SuggestionState.OPEN
            and s.id < suggestion.id
            and s.id not in gone
            and s.email != student.email
        ]
        if len(out) + len(asked) >= give:
            return (
                f"no seat left for {_who(student)}: {session.seats_taken} of "
                f"{session.capacity} seats are taken and "
                f"{plural(len(out) + len(asked), 'invitation')} from the waitlist are out"
            )
    if suggestion.premise and suggestion.premise.get("no_seat"):
        order = [s.email for s in session.accepted_from_waitlist]
        if give is None or (student.email in order and order.index(student.email) < give):
            return f"a seat is free for {_who(student)} now"
    return None


def _offer_problem(
    suggestion: SuggestionView,
    premise: Mapping[str, Any],
    other: SessionView | None,
    now: datetime,
    applying: bool,
) -> str | None:
    key = str(suggestion.details.get("session") or "")
    if other is None:
        return f"session {key} no longer exists"
    if other.status != "scheduled":
        return f"session {other.key} was cancelled after this was offered"
    if now >= other.start:
        return f"session {other.key} has started"
    here = other.student(suggestion.email or "")
    if here is not None:
        if applying and here.status != "cancelled":
            return None  # the apply's own first step
        return f"{suggestion.email} is already in session {other.key} ({here.status})"
    if other.free_seats == 0:
        return f"session {other.key} is full now"
    return None


# ---- withdrawing (in the caller's transaction) ------------------------------------------------


def touch(db: Session, session_id: int | None) -> None:
    """Note that this transaction changed a session (its suggestions are checked at commit)."""
    if session_id is not None:
        db.info.setdefault(TOUCHED, set()).add(session_id)


def touched_by_flush(db: Session) -> None:
    """Before a flush: remember the sessions whose enrollments or suggestions change."""
    from tmcaldav.store.model import Enrollment, Suggestion, TrainingSession

    for obj in (*db.new, *db.dirty, *db.deleted):
        if isinstance(obj, TrainingSession):
            touch(db, obj.id)
        elif isinstance(obj, Enrollment):
            touch(db, obj.session_id if obj.session_id is not None else obj.session.id)
        elif isinstance(obj, Suggestion):
            touch(db, obj.session_id)


def keep_true(db: Session, now: datetime | None = None) -> int:
    """Withdraw the open suggestions that the transaction's changes made untrue.

    Runs before every commit of `Store.transaction()`, until nothing more changes;
    returns how many were withdrawn.
    """
    from tmcaldav.store.model import utcnow

    now = now or utcnow()
    withdrawn = 0
    for _round in range(5):
        db.flush()
        touched: set[int] = db.info.pop(TOUCHED, set())
        if not touched:
            break
        withdrawn += withdraw_broken(db, touched, now)
    return withdrawn


def keep_suggestions_true(sessions: sessionmaker[Session]) -> None:
    """Make every unit of work of a store keep its suggestions true (a `Store` check):
    the sessions each flush changes are noted, and before the commit `keep_true` runs."""
    event.listen(sessions, "before_flush", _before_flush)
    event.listen(sessions, "before_commit", _before_commit)


def _before_flush(db: Session, _context: object, _instances: object) -> None:
    touched_by_flush(db)


def _before_commit(db: Session) -> None:
    keep_true(db)


@functools.cache
def _open_advice() -> Select[Any]:
    """Open suggestions with a premise about the sessions `ids`, and every open offer (it
    names another session). Built once: this runs in every transaction that changes a
    session, mostly to find nothing."""
    from tmcaldav.store.model import Suggestion

    return select(Suggestion.session_id, Suggestion.kind, Suggestion.details).where(
        Suggestion.state == SuggestionState.OPEN,
        Suggestion.premise.is_not(None),
        Suggestion.session_id.in_(bindparam("ids", expanding=True))
        | (Suggestion.kind == SuggestionKind.OFFER_OTHER_SESSION),
    )


def withdraw_broken(db: Session, session_ids: set[int], now: datetime) -> int:
    """Check the open suggestions of these sessions (and the offers that name them)."""
    from tmcaldav.hooks.snapshots import build_session_view
    from tmcaldav.store.model import TrainingSession

    rows = db.execute(_open_advice(), {"ids": sorted(session_ids)}).all()
    if not rows:
        return 0  # the common case: one query, nothing to check
    wanted = {r.session_id for r in rows if r.session_id in session_ids}
    if any(r.kind == SuggestionKind.OFFER_OTHER_SESSION for r in rows):
        keys = set(
            db.scalars(select(TrainingSession.key).where(TrainingSession.id.in_(session_ids)))
        )
        wanted |= {
            r.session_id
            for r in rows
            if r.kind == SuggestionKind.OFFER_OTHER_SESSION
            and (r.details or {}).get("session") in keys
        }
    applying = db.info.get(APPLYING)
    cause = db.info.get(CAUSE)
    count = 0
    for session_id in sorted(wanted):
        view = build_session_view(db, session_id)
        if view is None:
            continue
        gone: set[int] = set()
        for suggestion in view.suggestions:
            if suggestion.state != SuggestionState.OPEN or suggestion.id == applying:
                continue
            other = _other_view(db, suggestion)
            reason = broken(suggestion, view, now, other=other, cause=cause, gone=frozenset(gone))
            if reason:
                withdraw(db, suggestion.id, reason, now)
                gone.add(suggestion.id)
                count += 1
    return count


def _other_view(db: Session, suggestion: SuggestionView) -> SessionView | None:
    from tmcaldav.hooks.snapshots import build_session_view
    from tmcaldav.store.model import TrainingSession

    if suggestion.kind != SuggestionKind.OFFER_OTHER_SESSION:
        return None
    key = suggestion.details.get("session")
    other_id = db.scalar(select(TrainingSession.id).where(TrainingSession.key == key))
    return build_session_view(db, other_id) if other_id is not None else None


def check_one(
    db: Session, suggestion_id: int, now: datetime, *, applying: bool = False
) -> str | None:
    """What no longer holds of one suggestion's premise, against the store as it is now."""
    from tmcaldav.hooks.snapshots import build_session_view
    from tmcaldav.store.model import Suggestion

    session_id = db.scalar(select(Suggestion.session_id).where(Suggestion.id == suggestion_id))
    view = build_session_view(db, session_id) if session_id is not None else None
    if view is None:
        return None
    suggestion = next(s for s in view.suggestions if s.id == suggestion_id)
    return broken(
        suggestion, view, now, other=_other_view(db, suggestion), applying=applying
    )


def withdraw(db: Session, suggestion_id: int, reason: str, now: datetime) -> None:
    """Mark an open suggestion withdrawn with its reason, and tell the plugins (outbox).

    Its dedupe key is set aside, so the same advice can be given again when its reason
    comes back (a student who declines, accepts and declines again).
    """
    from tmcaldav.hooks.outbox import SuggestionWithdrawnEvent, bounded, to_row
    from tmcaldav.store.model import Suggestion

    suggestion = db.get(Suggestion, suggestion_id)
    if suggestion is None or suggestion.state != SuggestionState.OPEN:
        return
    suggestion.state = SuggestionState.WITHDRAWN
    suggestion.decided_at = now
    suggestion.withdrawn_reason = reason
    suggestion.dedupe_key = bounded(f"{suggestion.dedupe_key}#withdrawn:{suggestion.id}", 500)
    db.add(
        to_row(
            SuggestionWithdrawnEvent(suggestion.id, reason),
            session_id=suggestion.session_id,
            enrollment_id=suggestion.enrollment_id,
            event_id=SuggestionWithdrawnEvent.event_id_for(suggestion.id),
        )
    )
    log.info("suggestion %s withdrawn: %s", suggestion.id, reason)


def withdraw_due(db: Session, now: datetime) -> int:
    """Withdraw open suggestions that time made untrue: their session ended, or the
    session an offer names has started. Cheap when nothing is due (two small queries)."""
    from tmcaldav.store.model import Suggestion, TrainingSession

    ended = set(
        db.scalars(
            select(Suggestion.session_id)
            .join(TrainingSession, TrainingSession.id == Suggestion.session_id)
            .where(
                Suggestion.state == SuggestionState.OPEN,
                Suggestion.premise.is_not(None),
                Suggestion.kind.not_in(sorted(_AFTER_END)),
                TrainingSession.end_at <= now,
            )
        )
    )
    started = set(
        db.scalars(
            select(TrainingSession.key).where(
                TrainingSession.start_at <= now, TrainingSession.end_at > now - _RECENT
            )
        )
    )
    offers = db.execute(
        select(Suggestion.session_id, Suggestion.details).where(
            Suggestion.state == SuggestionState.OPEN,
            Suggestion.kind == SuggestionKind.OFFER_OTHER_SESSION,
        )
    ).all()
    holders = {r.session_id for r in offers if (r.details or {}).get("session") in started}
    ids = ended | holders
    return withdraw_broken(db, ids, now) if ids else 0
