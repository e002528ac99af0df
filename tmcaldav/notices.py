"""Notices to the administrator: plain-text mails plugins ask for (the digest, an alert).

A hook returns a `Notice`; the dispatcher stores it under its key in the transaction
that marks the hook's event done, so it is stored once however often the hook runs.
`send_notices` (a step of every tick) sends the stored ones over `[smtp]`, one
message each, text/plain in UTF-8, and records the outcome: a notice that went is never
sent again; one that failed is tried again with backoff (1 min doubling, at most 6 h),
and given up after 12 attempts or a permanent refusal. A notice addressed to a student
is refused: notices never go to students.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tmcaldav.config import Config
from tmcaldav.domain import AddressError, normalise_address
from tmcaldav.retry import backoff
from tmcaldav.store import Store
from tmcaldav.store.model import Notice, Person, utcnow

log = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=6)
MAX_ATTEMPTS = 12
#: A claimed notice belongs to its sender this long; after a crash it is due again.
LEASE = timedelta(minutes=5)
BATCH = 50
KEY_LENGTH = 500
# What this process last said about notices waiting for [smtp].
_said: dict[str, int] = {"waiting": 0}


def store_notice(
    db: Session, plugin: str, key: str, subject: str, text: str, to: tuple[str, ...]
) -> Notice | None:
    """Store a notice once per (plugin, key); None when it was stored before."""
    from tmcaldav.hooks.outbox import bounded

    full_key = bounded(f"{plugin}:{key}", KEY_LENGTH)
    if db.scalar(select(Notice.id).where(Notice.key == full_key)) is not None:
        return None
    notice = Notice(
        key=full_key,
        plugin=plugin,
        subject=subject[:500],
        body=text,
        recipients=list(to),
        state="pending",
        attempts=0,
        next_attempt_at=utcnow(),
    )
    db.add(notice)
    db.flush()
    return notice


@dataclass
class NoticeResult:
    """What one pass sent."""

    sent: int = 0
    failed: int = 0
    waiting: int = 0

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """One line for the tick's log; empty when there was nothing to send."""
        if not (self.sent or self.failed or self.waiting):
            return ""
        text = f"{self.sent} sent"
        if self.failed:
            text += f", {self.failed} failed (tried again later)"
        if self.waiting:
            text += f", {self.waiting} waiting for an [smtp] section"
        return text


def _message(config: Config, notice: Notice, to: list[str], now: datetime) -> EmailMessage:
    sched = config.scheduling
    domain = sched.organizer_email.rpartition("@")[2]
    local, _, host = sched.organizer_email.partition("@")
    message = EmailMessage()
    message["From"] = Address(sched.organizer_name or "tmcaldav", local, host)
    message["To"] = ", ".join(to)
    message["Subject"] = notice.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("tmcaldav-notice", domain=domain)
    # RFC 3834: machine-made, so vacation responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(notice.body, subtype="plain", charset="utf-8")
    return message


def _recipients(db: Session, config: Config, notice: Notice) -> tuple[list[str], str | None]:
    """The addresses, normalised; an error when one is not an address or is a student's."""
    wanted = list(notice.recipients or []) or [config.scheduling.organizer_email]
    try:
        addresses = [normalise_address(a) for a in wanted]
    except AddressError as e:
        return [], str(e)
    students = db.scalars(select(Person.email).where(Person.email.in_(addresses))).all()
    if students:
        return [], (
            f"refused: {', '.join(sorted(students))} is a student's address, and notices "
            "never go to students; send them to the office (the plugin's `to` setting)"
        )
    return addresses, None


def send_notices(
    store: Store,
    config: Config,
    now: datetime | None = None,
    rng: Callable[[], float] = random.random,
) -> NoticeResult:
    """Send the due notices; each failure is recorded (and logged), never raised."""
    from tmcaldav.imip.transport import SmtpSender

    now = now or utcnow()
    result = NoticeResult()
    due = (Notice.state.in_(("pending", "failed")), Notice.next_attempt_at <= now)
    if config.smtp is None:
        with store.scratch() as db:
            result.waiting = len(db.scalars(select(Notice.id).where(*due)).all())
        if result.waiting and result.waiting != _said["waiting"]:
            # Said when the number changes, not on every tick.
            log.warning(
                "%d notice(s) to the administrator wait: add an [smtp] section to send them",
                result.waiting,
            )
        _said["waiting"] = result.waiting
        return result
    leased_until = now + LEASE
    claimed: list[tuple[int, EmailMessage, list[str]]] = []
    with store.transaction() as db:
        for notice in db.scalars(select(Notice).where(*due).order_by(Notice.id).limit(BATCH)):
            taken = db.execute(
                update(Notice)
                .where(Notice.id == notice.id, *due)
                .values(next_attempt_at=leased_until)
                .execution_options(synchronize_session=False)
            )
            if getattr(taken, "rowcount", 0) != 1:
                continue  # another sender has it
            to, problem = _recipients(db, config, notice)
            if problem is not None:
                notice.state, notice.last_error, notice.next_attempt_at = "failed", problem, None
                log.error("notice %s from %s: %s", notice.key, notice.plugin, problem)
                continue
            claimed.append((notice.id, _message(config, notice, to, now), to))
    if not claimed:
        return result
    sender = SmtpSender(config.smtp, config.scheduling.organizer_email)
    outcomes = sender.send_messages([(message, to) for _, message, to in claimed])
    with store.transaction() as db:
        for (notice_id, _message_sent, to), (error, permanent) in zip(
            claimed, outcomes, strict=True
        ):
            row = db.scalars(
                select(Notice)
                .where(Notice.id == notice_id, Notice.next_attempt_at == leased_until)
                .with_for_update()
            ).one_or_none()
            if row is None:
                continue  # taken over by another sender after our lease ran out
            notice = row
            notice.attempts += 1
            if error is None:
                notice.state, notice.sent_at = "sent", now
                notice.next_attempt_at, notice.last_error = None, None
                result.sent += 1
                log.info("notice %s sent to %s", notice.key, ", ".join(to))
                continue
            result.failed += 1
            notice.state, notice.last_error = "failed", error[:2000]
            if permanent or notice.attempts >= MAX_ATTEMPTS:
                notice.next_attempt_at = None
            else:
                wait = backoff(
                    notice.attempts,
                    BACKOFF_BASE.total_seconds(),
                    BACKOFF_CAP.total_seconds(),
                    jitter=rng(),
                )
                notice.next_attempt_at = now + timedelta(seconds=wait)
            log.warning(
                "notice %s to %s was not sent (attempt %d): %s",
                notice.key,
                ", ".join(to),
                notice.attempts,
                error,
            )
    return result
