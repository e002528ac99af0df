"""iMIP deliveries in the store: queue one per student when a publish reaches the server,
hand out the due ones, and record what SMTP made of them.

A delivery is queued in the same transaction that records the CalDAV write (so a
crash never sends for a write that did not happen, nor loses one that did), sent
after the commit, retried with backoff when it fails, and never sent again once it
is `sent` (except on purpose: `invite --resend`, or a student's REFRESH).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tmcaldav import ical
from tmcaldav.imip import message as imip
from tmcaldav.invitations import InvitationFacts, mail_texts
from tmcaldav.retry import backoff
from tmcaldav.store import get_session
from tmcaldav.store.facts import session_facts
from tmcaldav.store.model import Delivery, Enrollment, TrainingSession

if TYPE_CHECKING:
    from tmcaldav.config import Config
    from tmcaldav.publish import Published

log = logging.getLogger(__name__)

#: A claimed delivery belongs to its sender this long; after a crash it is due again.
LEASE = timedelta(minutes=5)
#: Backoff after the n-th failure: BASE * 2**(n-1), at most CAP, with jitter
#: (`tmcaldav.retry.backoff`).
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=6)
#: After this many failures a delivery is given up (shown as failed; --resend tries anew).
MAX_ATTEMPTS = 12
BATCH = 200
# States a delivery can be sent from; `queue` moves them to superseded.
_CLAIMABLE = ("pending", "failed")


# ---- queueing ---------------------------------------------------------------------------


def _enrollments(db: Session, key: str) -> dict[str, Enrollment]:
    session = get_session(db, key)
    return {e.person.email: e for e in session.enrollments}


def queue(
    db: Session,
    enrollment: Enrollment,
    method: str,
    sequence: int,
    reason: str,
    now: datetime,
    *,
    address: str | None = None,
) -> Delivery:
    """Queue one message; older unsent ones to the same student are superseded by it.

    `address`: send it there, not to the person's address (the CANCEL to an address
    that was replaced); only older messages to that same address are superseded.
    """
    same_address = (
        Delivery.address.is_(None) if address is None else Delivery.address == address
    )
    db.execute(
        update(Delivery)
        .where(
            Delivery.enrollment_id == enrollment.id,
            Delivery.state.in_(_CLAIMABLE),
            same_address,
        )
        .values(state="superseded", next_attempt_at=None)
    )
    delivery = Delivery(
        enrollment_id=enrollment.id,
        method=method,
        sequence=sequence,
        reason=reason,
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        address=address,
    )
    db.add(delivery)
    return delivery


def plan_messages(published: Published) -> list[tuple[str, str, str]]:
    """(address, method, reason) for each student a publish must tell (pure)."""
    out: list[tuple[str, str, str]] = []
    if published.kind == "invite":
        for address in sorted(published.invited):
            out.append((address, "REQUEST", "invite"))
        for address in sorted(published.resend - published.invited):
            out.append((address, "REQUEST", "resend"))
    elif published.kind in ("update", "reschedule"):
        out += [(a, "REQUEST", published.kind) for a in published.attendees]
    elif published.kind == "cancel":
        out += [(a, "CANCEL", "cancel") for a in published.attendees]
    elif published.kind == "remove":
        out += [(a, "CANCEL", "remove") for a in sorted(published.removed)]
    elif published.kind == "remind":
        out += [(a, "REQUEST", "remind") for a in sorted(published.resend)]
    elif published.kind == "readdress":
        # The replaced address hears it is off the list; the new one gets the invitation.
        out += [(a, "CANCEL", "remove") for a in sorted(published.removed)]
        out += [(a, "REQUEST", "invite") for a in sorted(published.invited)]
    return out


def queue_for_published(db: Session, published: Published, now: datetime) -> int:
    """Queue the messages a publish calls for (Publisher.on_published); returns how many."""
    wanted = plan_messages(published)
    if not wanted:
        return 0
    enrollments = _enrollments(db, published.session_key)
    replaced = dict(published.replaced)
    for address, method, reason in wanted:
        enrollment = enrollments.get(address) or enrollments.get(replaced.get(address, ""))
        if enrollment is None:
            continue
        other = address if address != enrollment.person.email else None
        queue(db, enrollment, method, published.sequence, reason, now, address=other)
    db.flush()
    return len(wanted)


# ---- sending ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for sending, with the message composed from the store.

    `leased_until` is the `next_attempt_at` the claim wrote: while the row still holds
    it (and is pending or failed), the row is this sender's to record.
    """

    delivery_id: int
    session_key: str
    outgoing: imip.Outgoing
    leased_until: datetime


@dataclass(frozen=True)
class Outcome:
    """What SMTP made of one delivery."""

    delivery_id: int
    error: str | None = None
    permanent: bool = False


def _spec(
    config: Config,
    session: TrainingSession,
    enrollment: Enrollment,
    method: str,
    sequence: int,
    now: datetime,
    address: str | None = None,
) -> ical.EventSpec:
    sched = config.scheduling
    # The student's own answer as their calendar holds it (never one recorded by hand).
    on_server = enrollment.calendar_seen or enrollment.calendar_status
    partstat = (
        "NEEDS-ACTION"
        if method == "CANCEL"
        else ical.STATUS_TO_PARTSTAT.get(on_server, "NEEDS-ACTION")
    )
    # Each student sees only themselves: the other students' addresses are theirs to keep.
    attendee = ical.Attendee(
        address or enrollment.person.email, enrollment.person.name, partstat, rsvp=True
    )
    return ical.EventSpec(
        uid=session.uid or ical.session_uid(session.key, sched.organizer_email),
        summary=session.title,
        start=session.start_at,
        end=session.end_at,
        tz=session.tz,
        sequence=sequence,
        dtstamp=now,
        status="CANCELLED" if method == "CANCEL" else "CONFIRMED",
        organizer_email=sched.organizer_email,
        organizer_name=sched.organizer_name,
        attendees=(attendee,),
        description=session.description,
        location=session.location,
    )


def _still_wanted(delivery: Delivery, enrollment: Enrollment, session: TrainingSession) -> bool:
    if delivery.method == "CANCEL":
        return True
    return (
        session.status == "scheduled"
        and enrollment.status != "cancelled"
        and enrollment.calendar_status != "not_invited"
    )


def invitation_facts(
    config: Config, session: TrainingSession, enrollment: Enrollment | None
) -> InvitationFacts:
    """What the `[invitation]` templates are filled from: the session, and the student."""
    from tmcaldav.store import waitlist_positions

    sched = config.scheduling
    position = None
    if enrollment is not None and enrollment.status == "waitlisted":
        position = waitlist_positions(session).get(enrollment.id)
    return InvitationFacts(
        **session_facts(session, "description"),
        organizer=sched.organizer_name or sched.organizer_email,
        student_name=enrollment.person.name if enrollment is not None else None,
        student_email=enrollment.person.email if enrollment is not None else None,
        waitlist_position=position,
    )


def compose_message(
    config: Config,
    session: TrainingSession,
    enrollment: Enrollment,
    method: str,
    reason: str,
    sequence: int,
    now: datetime,
    *,
    message_id: str,
    address: str | None = None,
) -> imip.Outgoing:
    """The message one delivery sends, as sent (and as `--dry-run` shows it).

    An invitation (invite, resend, refresh, remind) takes its subject and text from the
    `[invitation]` templates when they are set. ValueError when it cannot be composed.
    """
    subject, body = (None, None)
    if method == "REQUEST":
        subject, body = mail_texts(config, invitation_facts(config, session, enrollment), reason)
    links = None
    if method == "REQUEST" and config.web.public_url:
        from tmcaldav.links import answer_urls

        links = answer_urls(config, enrollment.id, sequence, session.end_at)
    return imip.compose(
        _spec(config, session, enrollment, method, sequence, now, address),
        method,
        reason=reason,
        message_id=message_id,
        date=now,
        subject=subject,
        body=body,
        links=links,
    )


def claim_due(
    db: Session,
    config: Config,
    now: datetime,
    *,
    session_key: str | None = None,
) -> list[Claimed]:
    """Take the due deliveries (leased, so no other sender takes them) and compose them."""
    stmt = (
        select(Delivery)
        .where(
            Delivery.state.in_(_CLAIMABLE),
            Delivery.next_attempt_at.is_not(None),
            Delivery.next_attempt_at <= now,
        )
        .order_by(Delivery.id)
        .limit(BATCH)
    )
    if session_key is not None:
        stmt = (
            stmt.join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .join(TrainingSession, TrainingSession.id == Enrollment.session_id)
            .where(TrainingSession.key == session_key)
        )
    claimed: list[Claimed] = []
    domain = config.scheduling.organizer_email.rpartition("@")[2]
    leased_until = now + LEASE
    for delivery in db.scalars(stmt).all():
        taken = db.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery.id,
                Delivery.state.in_(_CLAIMABLE),
                Delivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=leased_until)
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) != 1:
            continue  # another sender (the daemon, a CLI command) has it
        enrollment = db.get(Enrollment, delivery.enrollment_id)
        assert enrollment is not None  # the foreign key cascades deletes
        session = enrollment.session
        if not _still_wanted(delivery, enrollment, session):
            delivery.state, delivery.next_attempt_at = "superseded", None
            continue
        # A REQUEST carries the event as it is now; a CANCEL the SEQUENCE it was made at.
        sequence = session.sequence if delivery.method == "REQUEST" else delivery.sequence
        delivery.sequence = sequence
        try:
            outgoing = compose_message(
                config,
                session,
                enrollment,
                delivery.method,
                delivery.reason or "invite",
                sequence,
                now,
                message_id=make_msgid("tmcaldav", domain=domain),
                address=delivery.address,
            )
        except ValueError as e:  # TemplateProblem too
            _record_failure(delivery, f"cannot compose the message: {e}", True, now, 0.0)
            continue
        claimed.append(Claimed(delivery.id, session.key, outgoing, leased_until))
    return claimed


def _record_failure(
    delivery: Delivery, error: str, permanent: bool, now: datetime, jitter: float
) -> None:
    delivery.attempts += 1
    delivery.state = "failed"
    delivery.last_error = error[:2000]
    if permanent or delivery.attempts >= MAX_ATTEMPTS:
        delivery.next_attempt_at = None  # given up: `invite --resend` tries again
    else:
        delivery.next_attempt_at = now + timedelta(
            seconds=backoff(
                delivery.attempts,
                BACKOFF_BASE.total_seconds(),
                BACKOFF_CAP.total_seconds(),
                jitter=jitter,
            )
        )


def record(
    db: Session,
    claimed: Iterable[Claimed],
    outcomes: Iterable[Outcome],
    now: datetime,
    rng: Callable[[], float] = random.random,
) -> tuple[int, int]:
    """Record SMTP's outcomes; returns (sent, failed).

    Compare-and-set: a row is recorded only while it is still as its claim left it
    (pending or failed, with the claim's lease). A newer message queued meanwhile has
    superseded it, and a sender whose lease ran out has lost it to another: either way
    it is not ours to change, so a failure never makes a superseded message due again.
    """
    by_id = {c.delivery_id: c for c in claimed}
    sent = failed = 0
    for outcome in outcomes:
        claim = by_id.get(outcome.delivery_id)
        if claim is None:
            continue  # not claimed by this caller: nothing to compare with
        delivery = db.scalars(
            select(Delivery)
            .where(
                Delivery.id == outcome.delivery_id,
                Delivery.state.in_(_CLAIMABLE),
                Delivery.next_attempt_at == claim.leased_until,
            )
            .with_for_update()
        ).one_or_none()
        if outcome.error is None:
            sent += 1
        if delivery is None:
            log.info(
                "session %s: the message to %s was %s, but it was superseded by a newer one "
                "meanwhile (or taken over by another sender); it is left as it is",
                claim.session_key,
                claim.outgoing.to,
                "sent" if outcome.error is None else f"not sent ({outcome.error})",
            )
            continue
        if outcome.error is None:
            delivery.state = "sent"
            delivery.attempts += 1
            delivery.sent_at = now
            delivery.last_error = None
            delivery.next_attempt_at = None
            delivery.message_id = claim.outgoing.message_id
        else:
            _record_failure(delivery, outcome.error, outcome.permanent, now, rng())
            failed += 1
            log.warning(
                "session %s: the %s to %s was not sent (attempt %d): %s",
                claim.session_key,
                delivery.method,
                claim.outgoing.to,
                delivery.attempts,
                outcome.error,
            )
    return sent, failed
