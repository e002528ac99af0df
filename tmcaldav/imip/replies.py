"""Incoming iMIP answers: validate against the store, write to CalDAV, record.

One message at a time: find its iTIP object (imip), look the session up by UID,
validate; a refusal is stored (MailRefusal) and changes nothing. A REPLY's PARTSTAT
goes into the organizer's copy on the CalDAV server first, then the answer is
recorded through `sync.apply_answers` (source "imip", the REPLY's DTSTAMP as the
answer's time), so hooks fire once and the next poll finds nothing new. A REFRESH
queues the invitation again; a COUNTER becomes a note and a `contact_student`
suggestion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tmcaldav.caldav import CalendarError
from tmcaldav.config import Config
from tmcaldav.domain import NOTE_MAX, REASON_MAX, clip
from tmcaldav.errors import TryLater
from tmcaldav.hooks.suggestions import record_suggestion
from tmcaldav.imip import message as imip
from tmcaldav.imip.deliveries import queue
from tmcaldav.publish import Publisher, PublishError
from tmcaldav.store import Store
from tmcaldav.store.model import (
    Delivery,
    Enrollment,
    MailRefusal,
    Note,
    Suggestion,
    TrainingSession,
)
from tmcaldav.sync import apply_answers, is_newer, reply_answer

log = logging.getLogger(__name__)

NOTE_AUTHOR = "imip"


class TemporaryFailure(TryLater):
    """The message could not be applied now (CalDAV unreachable): keep it and retry."""


@dataclass(frozen=True)
class Processed:
    """What became of one message.

    `outcome` is one of: applied (an answer recorded), history (an older answer, kept in
    the history only), unchanged (the same answer again), refresh, counter, refused,
    unrelated (not for us: the message is left where it is).
    """

    outcome: str
    detail: str = ""
    session_key: str | None = None
    email: str | None = None

    @property
    def handled(self) -> bool:
        """True when the message was ours (processed or refused) and may be filed away."""
        return self.outcome != "unrelated"


def trusted_senders(config: Config) -> tuple[str, ...]:
    """SENT-BY addresses allowed to answer for a student ([imap] or [maildir])."""
    trusted: tuple[str, ...] = ()
    if config.imap is not None:
        trusted += config.imap.trust_sent_by
    if config.maildir is not None:
        trusted += config.maildir.trust_sent_by
    return trusted


def known_event(db: Session, uid: str) -> imip.KnownEvent | None:
    """The published session with this UID, as validation needs it."""
    session = db.scalars(
        select(TrainingSession)
        .where(TrainingSession.uid == uid, TrainingSession.calendar_state != "unpublished")
        .options(selectinload(TrainingSession.enrollments))
    ).one_or_none()
    if session is None or session.uid is None:
        return None
    return imip.KnownEvent(
        key=session.key,
        uid=session.uid,
        sequence=session.sequence,
        attendees={
            e.person.email: imip.KnownAttendee(
                enrollment_id=e.id,
                invited=e.calendar_status != "not_invited" and e.status != "cancelled",
            )
            for e in session.enrollments
        },
    )


def refuse(store: Store, message: imip.MailMessage, reason: str, now: datetime) -> Processed:
    """Store and log a refusal (the reason cut to REASON_MAX); nothing else changes."""
    reason = clip(reason, REASON_MAX)
    sender = message.sender or message.envelope_sender
    with store.transaction() as db:
        db.add(
            MailRefusal(
                received_at=now,
                sender=sender[:320] if sender else None,
                message_id=message.message_id,
                reason=reason,
            )
        )
    log.warning(
        "refused an iMIP message from %s (Message-ID %s): %s",
        sender or "(unknown sender)",
        message.message_id or "-",
        reason,
    )
    return Processed("refused", reason)


def process(
    store: Store,
    publisher: Publisher,
    config: Config,
    raw: bytes,
    now: datetime,
    *,
    envelope_sender: str | None = None,
) -> Processed:
    """Process one incoming message. Raises TemporaryFailure to keep it for a retry."""
    message = imip.read_message(raw, envelope_sender=envelope_sender)
    found = imip.find_itip(message)
    if isinstance(found, imip.Unrelated):
        return Processed("unrelated", found.reason)
    if isinstance(found, imip.Refusal):
        return refuse(store, message, found.reason, now)
    with store.scratch() as db:
        event = known_event(db, found.event.uid)
    decision = imip.validate(
        found,
        event,
        organizer=config.scheduling.organizer_email,
        trust_sent_by=trusted_senders(config),
        now=now,
    )
    if isinstance(decision, imip.Refusal):
        return refuse(store, message, decision.reason, now)
    if decision.method == "REFRESH":
        return _refresh(store, decision, now, config.invitation.remind_min_interval)
    if decision.method == "COUNTER":
        return _counter(store, decision, now)
    return _reply(store, publisher, decision, now, message)


def _enrollment(db: Session, reply: imip.Reply) -> Enrollment:
    enrollment = db.get(Enrollment, reply.enrollment_id)
    if enrollment is None:  # deleted between validation and now
        raise TemporaryFailure(f"the enrollment of {reply.email} changed; trying again")
    return enrollment


def _add_comment(db: Session, enrollment: Enrollment, text: str | None, now: datetime) -> None:
    if not text:
        return
    # A student's comment becomes a note: cut to the size notes are kept at.
    text = clip(text, NOTE_MAX)
    if any(n.text == text and n.author == NOTE_AUTHOR for n in enrollment.notes):
        return  # the same message read twice
    enrollment.notes.append(Note(text=text, author=NOTE_AUTHOR, created_at=now))


def _reply(
    store: Store,
    publisher: Publisher,
    reply: imip.Reply,
    now: datetime,
    message: imip.MailMessage,
) -> Processed:
    with store.scratch() as db:
        enrollment = _enrollment(db, reply)
        # What the student's calendar said before (an answer recorded by hand is not it).
        current = enrollment.calendar_seen or enrollment.calendar_status
        newer = is_newer(
            (reply.sequence, reply.dtstamp),
            (enrollment.answer_sequence, enrollment.answer_dtstamp),
        )
    if current == reply.calendar_status:
        # The same answer again (or already seen by a poll): nothing changes but a comment.
        # (A hand-recorded answer that differs stays: this is no news from the calendar.)
        with store.transaction() as db:
            _add_comment(db, _enrollment(db, reply), reply.comment, now)
        return Processed("unchanged", reply.calendar_status, reply.session_key, reply.email)
    written = None
    if newer:
        try:
            written = publisher.apply_reply(reply.session_key, reply.email, reply.partstat)
        except CalendarError as e:
            raise TemporaryFailure(f"session {reply.session_key}: {e}") from e
        except PublishError as e:
            return refuse(store, message, f"it could not be applied: {e}", now)
    with store.transaction() as db:
        enrollment = _enrollment(db, reply)
        apply_answers(
            db,
            [reply_answer(reply, enrollment)],
            source="imip",
            observed_at=now,
            responded_at={enrollment.id: reply.dtstamp or now},
        )
        if written is not None and written.in_step:
            # Our own write: the next poll recognises this ETag and finds nothing new.
            session = enrollment.session
            session.etag = written.event.etag
            session.href = written.event.href
        _add_comment(db, enrollment, reply.comment, now)
    outcome = "applied" if newer else "history"
    log.info(
        "session %s: %s answered %s by mail (%s)",
        reply.session_key,
        reply.email,
        reply.calendar_status,
        outcome,
    )
    return Processed(outcome, reply.calendar_status, reply.session_key, reply.email)


def _refresh(store: Store, reply: imip.Reply, now: datetime, interval: float) -> Processed:
    """Send the invitation again, at most once per `interval` seconds per student: a
    flood of REFRESH mails must not become a flood of invitations."""
    with store.transaction() as db:
        enrollment = _enrollment(db, reply)
        last = db.scalar(
            select(Delivery.created_at)
            .where(
                Delivery.enrollment_id == enrollment.id,
                Delivery.reason == "refresh",
                Delivery.created_at > now - timedelta(seconds=interval),
            )
            .order_by(Delivery.created_at.desc())
            .limit(1)
        )
        if last is None:
            queue(db, enrollment, "REQUEST", enrollment.session.sequence, "refresh", now)
    if last is not None:
        log.info(
            "session %s: %s asked for the invitation again (REFRESH); it was sent again at "
            "%s already, not again before [invitation] remind_min_interval has passed",
            reply.session_key,
            reply.email,
            last.isoformat(timespec="seconds"),
        )
        return Processed(
            "refresh",
            f"already sent again at {last.isoformat(timespec='seconds')}; not sent now",
            reply.session_key,
            reply.email,
        )
    log.info(
        "session %s: %s asked for the invitation again (REFRESH)", reply.session_key, reply.email
    )
    return Processed("refresh", "", reply.session_key, reply.email)


def _proposal(reply: imip.Reply, tz: str) -> str:
    if reply.proposed_start is None:
        return "another time"
    zone = ZoneInfo(tz)
    start = reply.proposed_start.astimezone(zone)
    text = start.strftime("%Y-%m-%d %H:%M")
    if reply.proposed_end is not None:
        end = reply.proposed_end.astimezone(zone)
        text += "–" + end.strftime("%H:%M" if end.date() == start.date() else "%Y-%m-%d %H:%M")
    return f"{text} ({tz})"


def _counter(store: Store, reply: imip.Reply, now: datetime) -> Processed:
    with store.transaction() as db:
        enrollment = _enrollment(db, reply)
        session = enrollment.session
        proposal = _proposal(reply, session.tz)
        text = f"proposed a new time: {proposal}"
        if reply.comment:
            text += f" — {reply.comment}"
        text = clip(text, NOTE_MAX)
        _add_comment(db, enrollment, text, now)
        stamp = reply.proposed_start.isoformat() if reply.proposed_start else "none"
        dedupe_key = f"imip:counter:{session.key}:{reply.email}:{stamp}"
        exists = db.scalars(
            select(Suggestion.id).where(Suggestion.dedupe_key == dedupe_key)
        ).first()
        if exists is None:
            name = enrollment.person.name or reply.email
            suggestion = Suggestion(
                session_id=session.id,
                enrollment_id=enrollment.id,
                kind="contact_student",
                reason=(
                    f"{name} proposed another time for {session.key}: {proposal}; "
                    "contact them to agree on it"
                ),
                plugin="imip",
                state="open",
                dedupe_key=dedupe_key,
                details={"proposed_start": stamp, "email": reply.email},
                created_at=now,
            )
            # Like a plugin's suggestion: on_suggestion hooks see it (and auto_apply may).
            record_suggestion(db, suggestion)
    log.info("session %s: %s proposed another time (COUNTER)", reply.session_key, reply.email)
    return Processed("counter", proposal, reply.session_key, reply.email)
