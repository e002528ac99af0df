"""iMIP mail at the edges: SMTP out; IMAP and Maildir in, one message at a time.

TLS is always verified; credentials and message bodies never reach a log line.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from tmcaldav.config import ImapConfig, MaildirConfig, SecretError, SmtpConfig
from tmcaldav.errors import TmcaldavError
from tmcaldav.imip import deliveries
from tmcaldav.imip import message as imip

log = logging.getLogger(__name__)


class MailError(TmcaldavError):
    """A mail server that cannot be used now (unreachable, TLS, login); says which."""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context; `ca_file` adds a private CA to the system's."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


# ---- SMTP out ---------------------------------------------------------------------------


class SmtpSender:
    """Sends composed messages over one SMTP connection (STARTTLS, TLS or loopback)."""

    def __init__(self, config: SmtpConfig, envelope_from: str):
        self.config = config
        self.envelope_from = envelope_from

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        where = f"SMTP {c.host}:{c.port}"
        try:
            if c.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    c.host, c.port, timeout=c.timeout, context=tls_context(c.tls_ca_file)
                )
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
                if c.security == "starttls":
                    smtp.starttls(context=tls_context(c.tls_ca_file))
            if c.username:
                smtp.login(c.username, c.password.read())
        except smtplib.SMTPAuthenticationError as e:
            raise MailError(f"{where}: login as {c.username} refused ({e.smtp_code})") from e
        except smtplib.SMTPNotSupportedError as e:
            raise MailError(f"{where}: {e} (check [smtp] security)") from e
        except ssl.SSLError as e:
            raise MailError(f"{where}: TLS failed: {e.reason or e}") from e
        except (OSError, smtplib.SMTPException) as e:
            raise MailError(f"{where}: {e or type(e).__name__}") from e
        return smtp

    def check(self) -> str:
        """Connect and log in without sending (for `doctor`); returns the server's name."""
        smtp = self._connect()
        try:
            greeting = smtp.ehlo_resp or b""
            name = greeting.decode("utf-8", "replace").split("\n")[0]
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        return name

    def send(self, claimed: list[deliveries.Claimed]) -> list[deliveries.Outcome]:
        """Send each message; a failure is recorded per message, never raised."""
        if not claimed:
            return []
        try:
            smtp = self._connect()
        except (MailError, SecretError) as e:
            return [deliveries.Outcome(c.delivery_id, str(e)) for c in claimed]
        outcomes = []
        try:
            for item in claimed:
                outcomes.append(self._send_one(smtp, item))
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        return outcomes

    def _send_one(self, smtp: smtplib.SMTP, item: deliveries.Claimed) -> deliveries.Outcome:
        error, permanent = self._transmit(smtp, item.outgoing.message, [item.outgoing.to])
        return deliveries.Outcome(item.delivery_id, error, permanent)

    def _transmit(
        self, smtp: smtplib.SMTP, message: EmailMessage, to: list[str]
    ) -> tuple[str | None, bool]:
        """(error, permanent) of one message; (None, False) when the server took it."""
        try:
            refused = smtp.send_message(message, from_addr=self.envelope_from, to_addrs=to)
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()), (0, b""))
            return f"recipient refused: {code} {_text(text)}", code >= 500
        except smtplib.SMTPResponseException as e:
            return f"the server said {e.smtp_code} {_text(e.smtp_error)}", e.smtp_code >= 500
        except (OSError, smtplib.SMTPException) as e:
            return f"{type(e).__name__}: {e}", False
        if refused:
            code, text = next(iter(refused.values()))
            return f"recipient refused: {code} {_text(text)}", code >= 500
        return None, False

    def send_messages(
        self, messages: list[tuple[EmailMessage, list[str]]]
    ) -> list[tuple[str | None, bool]]:
        """Send plain messages (each to its addresses) over one connection; per message
        (error, permanent), never raised."""
        if not messages:
            return []
        try:
            smtp = self._connect()
        except (MailError, SecretError) as e:
            return [(str(e), False) for _ in messages]
        outcomes = []
        try:
            for message, to in messages:
                outcomes.append(self._transmit(smtp, message, to))
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        return outcomes


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# ---- incoming: one message at a time ------------------------------------------------------


@dataclass
class InboxMessage:
    """A message waiting in a mailbox: its bytes (None when too large to fetch)."""

    ident: str
    size: int
    raw: bytes | None
    done: Callable[[], None]
    skip: Callable[[], None]


class ImapInbox:
    """The [imap] mailbox: iMIP messages in `folder`, filed into `processed_folder`."""

    def __init__(self, config: ImapConfig):
        self.config = config
        self._imap: imaplib.IMAP4 | None = None
        self._uidvalidity = ""
        # Messages found unrelated in this run: not looked at again (uidvalidity, uid).
        self.unrelated: set[tuple[str, str]] = set()

    def __enter__(self) -> ImapInbox:
        c = self.config
        where = f"IMAP {c.host}:{c.port}"
        try:
            if c.security == "tls":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    c.host, c.port, ssl_context=tls_context(c.tls_ca_file), timeout=c.timeout
                )
            else:
                imap = imaplib.IMAP4(c.host, c.port, timeout=c.timeout)
                if c.security == "starttls":
                    imap.starttls(ssl_context=tls_context(c.tls_ca_file))
        except ssl.SSLError as e:
            raise MailError(f"{where}: TLS failed: {e.reason or e}") from e
        except (OSError, imaplib.IMAP4.error) as e:
            raise MailError(f"{where}: {e or type(e).__name__}") from e
        try:
            imap.login(c.username, c.password.read())
        except imaplib.IMAP4.error as e:
            with contextlib.suppress(Exception):
                imap.shutdown()
            raise MailError(f"{where}: login as {c.username} refused") from e
        except (OSError, SecretError) as e:
            with contextlib.suppress(Exception):
                imap.shutdown()
            raise MailError(f"{where}: {e}") from e
        self._imap = imap
        try:
            # imaplib keeps the capabilities from before login; servers announce MOVE
            # and UIDPLUS only to logged-in users.
            status, data = imap.capability()
            if status == "OK" and data and data[-1]:
                imap.capabilities = tuple(data[-1].decode("ascii", "replace").upper().split())
            status, _ = imap.select(_quote(c.folder))
            if status != "OK":
                raise MailError(f"{where}: no folder {c.folder!r}")
            self._uidvalidity = _first(imap.response("UIDVALIDITY")[1])
        except (OSError, imaplib.IMAP4.error) as e:
            self.__exit__()
            raise MailError(f"{where}: {e}") from e
        return self

    def __exit__(self, *exc_info: object) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        # LOGOUT, never CLOSE: CLOSE expunges every message flagged \Deleted, including
        # those a person deleted and may still want back.
        with contextlib.suppress(Exception):
            imap.logout()

    @property
    def imap(self) -> imaplib.IMAP4:
        """The connection (inside `with`)."""
        if self._imap is None:
            raise RuntimeError("use ImapInbox in a with block")
        return self._imap

    def messages(self) -> Iterator[InboxMessage]:
        """The folder's messages that carry a text/calendar part; others are not fetched."""
        status, data = self.imap.uid("SEARCH", "UNDELETED")
        if status != "OK":
            raise MailError(f"IMAP search failed in {self.config.folder!r}")
        uids = [u.decode() for u in (data[0] or b"").split()]
        uids = [u for u in uids if (self._uidvalidity, u) not in self.unrelated]
        for start in range(0, len(uids), 100):
            chunk = uids[start : start + 100]
            status, data = self.imap.uid("FETCH", ",".join(chunk), "(RFC822.SIZE BODYSTRUCTURE)")
            if status != "OK":
                raise MailError("IMAP fetch of the message structure failed")
            for uid, size, structure in _fetch_items(data):
                if not re.search(rb'"text"\s+"calendar"', structure, re.IGNORECASE):
                    self.unrelated.add((self._uidvalidity, uid))
                    continue
                raw = None if size > imip.MAX_MESSAGE_BYTES else self._fetch(uid)
                yield InboxMessage(
                    ident=f"imap uid {uid}",
                    size=size,
                    raw=raw,
                    done=functools.partial(self._file, uid),
                    skip=functools.partial(self.unrelated.add, (self._uidvalidity, uid)),
                )

    def _fetch(self, uid: str) -> bytes:
        status, data = self.imap.uid("FETCH", uid, "(BODY.PEEK[])")
        for item in data or []:
            if isinstance(item, tuple) and len(item) == 2:
                return bytes(item[1])
        raise MailError(f"IMAP could not fetch message uid {uid} ({status})")

    def _file(self, uid: str) -> None:
        """Move a processed message into processed_folder (created when missing)."""
        target = _quote(self.config.processed_folder)
        imap = self.imap
        status, _ = imap.uid("MOVE", uid, target) if "MOVE" in imap.capabilities else ("NO", [])
        if status != "OK":
            imap.create(target)  # fails harmlessly when it exists
            if "MOVE" in imap.capabilities:
                status, _ = imap.uid("MOVE", uid, target)
            else:
                status, _ = imap.uid("COPY", uid, target)
                if status == "OK":
                    imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
                    # Without UIDPLUS only a plain EXPUNGE exists, and it would also
                    # remove what a person marked deleted: leave ours marked (skipped).
                    if "UIDPLUS" in imap.capabilities:
                        imap.uid("EXPUNGE", uid)
        if status != "OK":
            raise MailError(
                f"IMAP could not move message uid {uid} to {self.config.processed_folder!r}"
            )


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _first(values: list[bytes | None] | None) -> str:
    for value in values or []:
        if value:
            return value.decode("ascii", "replace")
    return ""


_ITEM_START = re.compile(rb"^\d+ \(")


def _fetch_items(data: list[object]) -> Iterator[tuple[str, int, bytes]]:
    """(uid, size, bodystructure bytes) from imaplib's FETCH answer (literals joined)."""
    items: list[bytes] = []
    for piece in data:
        if isinstance(piece, tuple):
            head, literal = piece[0], piece[1]
            if _ITEM_START.match(head):
                items.append(head + literal)
            elif items:
                items[-1] += head + literal
        elif isinstance(piece, bytes):
            if _ITEM_START.match(piece):
                items.append(piece)
            elif items:
                items[-1] += piece
    for item in items:
        uid = re.search(rb"UID (\d+)", item)
        size = re.search(rb"RFC822\.SIZE (\d+)", item)
        if uid is None or size is None:
            continue
        yield uid.group(1).decode(), int(size.group(1)), item


class MaildirInbox:
    """The [maildir] folder: new messages in `new/`; processed ones filed into the
    Maildir++ subfolder `.processed_folder`, unrelated ones moved to `cur/` unread (as
    any mail program does on first sight), so each message is looked at once."""

    def __init__(self, config: MaildirConfig):
        self.root = Path(config.path)
        self.processed = self.root / f".{config.processed_folder}"

    def __enter__(self) -> MaildirInbox:
        if not (self.root / "new").is_dir() or not (self.root / "cur").is_dir():
            raise MailError(f"maildir {self.root}: not a Maildir (no new/ and cur/)")
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def messages(self) -> Iterator[InboxMessage]:
        """The messages in new/, oldest first."""
        paths = sorted((self.root / "new").iterdir(), key=lambda p: (p.stat().st_mtime, p.name))
        for path in paths:
            if not path.is_file() or path.name.startswith("."):
                continue
            size = path.stat().st_size
            # Read a little more than allowed: enough to know it is too large.
            with path.open("rb") as f:
                raw = f.read(imip.MAX_MESSAGE_BYTES + 1) if size <= imip.MAX_MESSAGE_BYTES else None
            if raw is None:
                raw = self._head(path)
            yield InboxMessage(
                ident=f"maildir {path.name}",
                size=size,
                raw=raw,
                done=functools.partial(self._move, path, self.processed / "cur"),
                skip=functools.partial(self._move, path, self.root / "cur"),
            )

    @staticmethod
    def _head(path: Path) -> bytes:
        # Too large to process, but whether it is iMIP at all decides refused vs left
        # alone: the first megabyte tells (the parts' headers), the rest is not read.
        with path.open("rb") as f:
            return f.read(1024 * 1024)

    def _move(self, path: Path, folder: Path) -> None:
        for sub in ("tmp", "new", "cur"):
            (folder.parent / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        name = path.name if ":2," in path.name else path.name + ":2,"
        path.rename(folder / name)
