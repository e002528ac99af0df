"""Corrections to the records: a person's address, name or phone; removing a person;
deleting a session; an answer a student gave by phone.

Each is one unit of work in the store, and the calendar is brought in line through the
Publisher (read-merge-PUT with If-Match, iMIP mail in `imip` mode). A refused correction
changes nothing anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from tmcaldav.domain import ICONS, MANUAL_ANSWERS, MAX_CLOCK_SKEW, normalise_address
from tmcaldav.errors import TmcaldavError, UsageError
from tmcaldav.publish import Publisher, PublishError
from tmcaldav.store import Store, add_note, get_enrollment, get_person, get_session
from tmcaldav.store.model import Delivery, Enrollment, utcnow
from tmcaldav.store.roster import (
    RosterError,
    check_deletable,
    delete_session,
    edit_person,
    live_enrollments,
    remove_person,
    upcoming,
)
from tmcaldav.sync import AnswerChange, apply_answers, is_newer
from tmcaldav.words import plural

log = logging.getLogger(__name__)

# ---- people --------------------------------------------------------------------------------


@dataclass
class PersonEdit:
    """What `person edit` did."""

    email: str
    old_email: str
    changed: list[str] = field(default_factory=list)
    # Sessions whose event now lists the new address instead of the old one.
    readdressed: list[str] = field(default_factory=list)
    # Sessions whose event could not be changed (the store has the new address).
    failed: list[str] = field(default_factory=list)


def edit_person_everywhere(
    store: Store,
    publisher: Publisher,
    email: str,
    *,
    name: str | None = None,
    phone: str | None = None,
    new_email: str | None = None,
    now: datetime | None = None,
) -> PersonEdit:
    """Change a person; a new address also replaces the ATTENDEE on the event of every
    upcoming, published session they are invited to (the old one is removed: in `imip`
    mode it gets a CANCEL; the new one is invited, with the answer given so far).

    The store changes first, in one transaction; then each event. An event that cannot
    be written is reported in `failed` (the store keeps the new address; `tmcaldav
    publish --all` brings such an event in line).
    """
    now = now or utcnow()
    if name is None and phone is None and new_email is None:
        raise UsageError("nothing to change: give --name, --phone or --email")
    with store.transaction() as db:
        person, old = edit_person(db, email, name=name, phone=phone, new_email=new_email)
        result = PersonEdit(person.email, old)
        if name is not None:
            result.changed.append("name")
        if phone is not None:
            result.changed.append("phone")
        keys: list[str] = []
        if person.email != old:
            result.changed.append("email")
            keys = sorted(
                e.session.key
                for e in person.enrollments
                if upcoming(e, now)
                and e.status != "cancelled"
                and e.calendar_status != "not_invited"
                and e.session.calendar_state != "unpublished"
            )
    for key in keys:
        try:
            if publisher.readdress(key, old, result.email):
                result.readdressed.append(key)
        except TmcaldavError as e:
            log.error("session %s: the event still lists %s: %s", key, old, e)
            result.failed.append(f"{key}: {e}")
    return result


def remove_person_everywhere(
    store: Store,
    publisher: Publisher,
    email: str,
    *,
    cancel_enrollments: bool = False,
    now: datetime | None = None,
) -> tuple[list[str], int, int]:
    """Remove a person; with `cancel_enrollments`, cancel their upcoming enrollments
    first (taking them off the events). Returns (sessions cancelled, enrollments
    removed, answers removed)."""
    now = now or utcnow()
    address = normalise_address(email)
    with store.scratch() as db:
        person = get_person(db, address)
        live = sorted(e.session.key for e in live_enrollments(person, now))
    cancelled: list[str] = []
    if live and cancel_enrollments:
        for key in live:
            publisher.set_status(key, address, "cancelled", "removed from tmcaldav")
            cancelled.append(key)
    with store.transaction() as db:
        enrollments, answers = remove_person(db, address, now)
    return cancelled, enrollments, answers


# ---- sessions ------------------------------------------------------------------------------


def delete_session_everywhere(store: Store, publisher: Publisher, key: str) -> bool:
    """Delete a session that was never published or is cancelled: its event leaves the
    server (If-Match), then the session and everything under it leaves the store.
    Returns True when an event was deleted on the server.

    Refused (nothing changed) for a published session that is not cancelled, one with
    attendance records, and while cancellation mails to its students are still waiting
    to go out (`imip` mode).
    """
    with store.scratch() as db:
        session = get_session(db, key)
        check_deletable(session)
        on_server = session.href is not None
        ids = [e.id for e in session.enrollments]
        waiting = 0
        if ids:
            from sqlalchemy import func, select

            waiting = (
                db.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(
                        Delivery.enrollment_id.in_(ids),
                        Delivery.state.in_(("pending", "failed")),
                        Delivery.method == "CANCEL",
                        Delivery.next_attempt_at.is_not(None),
                    )
                )
                or 0
            )
    if waiting:
        raise RosterError(
            f"session {key}: {plural(waiting, 'cancellation mail')} to its students not gone "
            f"out yet; try again once they are sent (see: tmcaldav session show {key})"
        )
    deleted = False
    if on_server:
        deleted = publisher.delete(key)
    with store.transaction() as db:
        delete_session(db, key)
    return deleted


# ---- answers given another way ---------------------------------------------------------------


@dataclass(frozen=True)
class ManualAnswer:
    """What `tmcaldav answer` did: the answer, what was shown before, and whether it is
    shown now (False: a later answer is shown, this one went into the history)."""

    session: str
    email: str
    calendar_status: str
    old: str
    shown: bool
    responded_at: datetime


def record_answer(
    store: Store,
    key: str,
    email: str,
    status: str,
    *,
    note: str | None = None,
    at: datetime | None = None,
    now: datetime | None = None,
) -> ManualAnswer:
    """Record an answer a student gave another way (phone, mail, in person).

    It goes through the one apply step (`sync.apply_answers`) with source `manual`, so
    the same hooks fire once, and it takes its place in iTIP order with the session's
    SEQUENCE and `at` (default now) as its DTSTAMP: a later calendar answer overtakes
    it, an earlier one does not. The student's PARTSTAT on the server is not touched.
    """
    now = now or utcnow()
    if status not in MANUAL_ANSWERS:
        raise UsageError(
            f"unknown answer {status!r}; use one of: {', '.join(map(str, MANUAL_ANSWERS))}"
        )
    when = at or now
    if when > now + MAX_CLOCK_SKEW:
        raise UsageError(f"--at {when.isoformat()} is in the future; give when they answered")
    if note is not None and not note.strip():
        raise UsageError("--note must not be empty")
    with store.transaction() as db:
        session = get_session(db, key)
        enrollment: Enrollment = get_enrollment(db, session, email)
        address = enrollment.person.email
        if enrollment.status == "cancelled":
            raise RosterError(
                f"{address} is cancelled in session {key}; "
                f"set-status {key} {address} enrolled first"
            )
        if enrollment.calendar_status == "not_invited":
            raise RosterError(
                f"{address} has not been invited to session {key}; "
                f"invite them first: tmcaldav invite {key} {address}"
            )
        old = enrollment.calendar_status
        shown = is_newer(
            (session.sequence, when), (enrollment.answer_sequence, enrollment.answer_dtstamp)
        )
        change = AnswerChange(
            enrollment_id=enrollment.id,
            session_key=key,
            email=address,
            old=old,
            new=status,
            sequence=session.sequence,
            dtstamp=when,
            enrollment_status=enrollment.status,
        )
        apply_answers(
            db, [change], source="manual", observed_at=now, responded_at={enrollment.id: when}
        )
        if note:
            add_note(db, enrollment, note, author="manual", at=now)
    log.info("session %s: %s answered %s by hand (%s)", key, address, status, ICONS[status])
    return ManualAnswer(key, address, status, old, shown, when)


__all__ = [
    "ManualAnswer",
    "PersonEdit",
    "PublishError",
    "delete_session_everywhere",
    "edit_person_everywhere",
    "record_answer",
    "remove_person_everywhere",
]
