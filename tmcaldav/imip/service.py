"""MailService: the iMIP scheduling agent the CLI and the daemon use (the package's face).

It uses the transports of `tmcaldav.imip.transport` (SMTP out; IMAP, Maildir in).
`attach()` hooks it to a Publisher (deliveries are queued with each CalDAV write and
sent after the commit), `tick()` reads the configured mailbox and retries failed
deliveries, `ingest()` processes one message piped in by the MTA.
"""

from __future__ import annotations

import imaplib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from tmcaldav.config import Config, SecretError
from tmcaldav.imip import deliveries, replies
from tmcaldav.imip import message as imip
from tmcaldav.imip.transport import (
    ImapInbox,
    InboxMessage,
    MaildirInbox,
    MailError,
    SmtpSender,
)
from tmcaldav.publish import Published, Publisher
from tmcaldav.store import Store
from tmcaldav.store.model import utcnow
from tmcaldav.words import plural

log = logging.getLogger(__name__)

__all__ = ["MailError", "MailService", "MailTickResult"]


# ---- the service -----------------------------------------------------------------------


@dataclass
class MailTickResult:
    """What one mail tick did (counts per outcome, and problems met)."""

    read: int = 0
    applied: int = 0
    history: int = 0
    unchanged: int = 0
    refused: int = 0
    refresh: int = 0
    counter: int = 0
    unrelated: int = 0
    kept: int = 0  # could not be applied now (CalDAV down); tried again next tick
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, processed: replies.Processed) -> None:
        """Add one processed message."""
        self.read += 1
        setattr(self, processed.outcome, getattr(self, processed.outcome) + 1)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """One line for people and the daemon's status."""
        text = (
            f"mail: {plural(self.read, 'message')} read, {plural(self.applied, 'answer')} "
            f"applied, {self.refused} refused; {plural(self.sent, 'invitation')} sent, "
            f"{self.failed} failed"
        )
        extra = [
            f"{n} {label}"
            for n, label in (
                (self.history, "older answers kept in the history"),
                (self.refresh, "requests for the invitation again"),
                (self.counter, "proposed new times"),
                (self.kept, "kept for a retry"),
            )
            if n
        ]
        if extra:
            text += " (" + ", ".join(extra) + ")"
        if self.errors:
            text += "; problems: " + "; ".join(self.errors)
        return text


class MailService:
    """The iMIP scheduling agent of one store: sends invitations, reads answers."""

    def __init__(
        self,
        config: Config,
        store: Store,
        publisher: Publisher | None = None,
        *,
        rng: Callable[[], float] = random.random,
    ):
        self.config = config
        self.store = store
        self._publisher = publisher
        self.rng = rng
        self._imap: ImapInbox | None = None

    @property
    def publisher(self) -> Publisher:
        """The publisher answers are written with (the one attached last)."""
        if self._publisher is None:
            raise RuntimeError("MailService has no publisher: call attach(publisher) first")
        return self._publisher

    # -- outgoing ----------------------------------------------------------------------

    def attach(self, publisher: Publisher | None = None) -> None:
        """Queue deliveries with each publish and send them after its commit."""
        # The given publisher also becomes the one answers are written with, so a caller
        # that rebuilds its publisher (after a server failure) attaches the new one.
        target = publisher or self.publisher
        self._publisher = target
        if self._queue not in target.on_published:
            target.on_published.append(self._queue)
            target.after_published.append(self._send_after)

    def _queue(self, db: object, published: Published) -> None:
        deliveries.queue_for_published(db, published, utcnow())  # type: ignore[arg-type]

    def _send_after(self, published: Published) -> None:
        _sent, failed = self.send_due(utcnow(), session_key=published.session_key)
        if failed:
            log.warning(
                "session %s: invitation mails not sent now: %d; the daemon retries "
                "them (see `tmcaldav session show %s`)",
                published.session_key,
                failed,
                published.session_key,
            )

    def sender(self) -> SmtpSender:
        """The SMTP sender (MailError-free to build; connects on use)."""
        if self.config.smtp is None:
            raise MailError('scheduling.mode = "imip" needs an [smtp] section')
        return SmtpSender(self.config.smtp, self.config.scheduling.organizer_email)

    def send_due(self, now: datetime, *, session_key: str | None = None) -> tuple[int, int]:
        """Send the deliveries that are due; returns (sent, failed)."""
        with self.store.transaction() as db:
            claimed = deliveries.claim_due(db, self.config, now, session_key=session_key)
        if not claimed:
            return 0, 0
        outcomes = self.sender().send(claimed)
        with self.store.transaction() as db:
            return deliveries.record(db, claimed, outcomes, utcnow(), self.rng)

    # -- incoming ----------------------------------------------------------------------

    def ingest(
        self, raw: bytes, *, envelope_sender: str | None = None, now: datetime | None = None
    ) -> replies.Processed:
        """Process one message (e.g. piped in by the MTA); TemporaryFailure to retry."""
        return replies.process(
            self.store,
            self.publisher,
            self.config,
            raw,
            now or utcnow(),
            envelope_sender=envelope_sender,
        )

    def _inbox(self) -> ImapInbox | MaildirInbox | None:
        if self.config.imap is not None:
            if self._imap is None:
                self._imap = ImapInbox(self.config.imap)
            return self._imap
        if self.config.maildir is not None:
            return MaildirInbox(self.config.maildir)
        return None

    def read_inbox(self, now: datetime, result: MailTickResult) -> None:
        """Process every new message in the configured mailbox into `result`."""
        inbox = self._inbox()
        if inbox is None:
            return
        try:
            with inbox:
                for message in inbox.messages():
                    self._one(message, now, result)
        except (MailError, OSError, imaplib.IMAP4.error) as e:
            result.errors.append(f"reading replies: {e}")
            log.warning("could not read iMIP replies: %s", e)

    def _one(self, message: InboxMessage, now: datetime, result: MailTickResult) -> None:
        if message.raw is None or message.size > imip.MAX_MESSAGE_BYTES:
            # Too large to look at: refused and recorded whatever it holds (its calendar
            # part may lie beyond the part that was read), and filed away.
            parsed = imip.read_message(message.raw or b"")
            reason = (
                f"the message is too large ({message.size} bytes, at most "
                f"{imip.MAX_MESSAGE_BYTES})"
            )
            processed = replies.refuse(self.store, parsed, reason, now)
        else:
            try:
                processed = self.ingest(message.raw, now=now)
            except replies.TemporaryFailure as e:
                result.kept += 1
                result.errors.append(str(e))
                log.warning("%s kept for a retry: %s", message.ident, e)
                return
        result.count(processed)
        if processed.handled:
            message.done()
        else:
            message.skip()

    def tick(self, now: datetime | None = None) -> MailTickResult:
        """One pass: read the mailbox, apply answers, send due (and retried) deliveries."""
        now = now or utcnow()
        result = MailTickResult()
        self.read_inbox(now, result)
        try:
            result.sent, result.failed = self.send_due(now)
        except MailError as e:
            result.errors.append(str(e))
        return result


# ---- doctor ------------------------------------------------------------------------------


def doctor_mail(config: Config, store: Store, say: Callable[[str], None]) -> bool:
    """`doctor` lines for the imip mode: refused replies, failed mail, SMTP and mailbox."""
    from sqlalchemy import func, select

    from tmcaldav.store.model import Delivery, MailRefusal

    ok = True
    with store.transaction() as db:
        refused = db.scalar(select(func.count()).select_from(MailRefusal)) or 0
        last = db.scalars(select(MailRefusal).order_by(MailRefusal.id.desc()).limit(1)).first()
        failed = (
            db.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "failed"))
            or 0
        )
    if refused:
        assert last is not None
        say(
            f"warn {plural(refused, 'incoming iMIP message')} refused; the last from "
            f"{last.sender or '(unknown)'}: {last.reason}"
        )
    else:
        say("ok   no incoming iMIP message was refused")
    if failed:
        say(f"warn {plural(failed, 'invitation mail')} failed; see `tmcaldav session show KEY`")
    if config.smtp is not None:
        try:
            SmtpSender(config.smtp, config.scheduling.organizer_email).check()
            say(f"ok   smtp: {config.smtp.host}:{config.smtp.port} ({config.smtp.security})")
        except (MailError, SecretError) as e:
            say(f"FAIL smtp: {e}")
            ok = False
    inbox: ImapInbox | MaildirInbox | None = None
    if config.imap is not None:
        inbox = ImapInbox(config.imap)
    elif config.maildir is not None:
        inbox = MaildirInbox(config.maildir)
    else:
        say("warn no [imap] or [maildir]: answers arrive only through `tmcaldav mail ingest -`")
    if inbox is not None:
        try:
            with inbox:
                pass
            say(f"ok   replies are read from {_describe(config)}")
        except MailError as e:
            say(f"FAIL replies: {e}")
            ok = False
    return ok


def _describe(config: Config) -> str:
    if config.imap is not None:
        return f"imap {config.imap.host}:{config.imap.port} folder {config.imap.folder!r}"
    assert config.maildir is not None
    return f"maildir {config.maildir.path}"
