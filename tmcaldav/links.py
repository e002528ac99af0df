"""Answer links: signed tokens that let a student answer Yes / No / Maybe in one click.

A token names one enrollment, the event SEQUENCE the invitation carried and an expiry
(the session's end). Tokens are pure: no store, no clock of their own
(`answer_urls` reads the key). The layout is

    base64url( payload XOR mask(tag) || tag )

with `payload` = enrollment id (8 bytes), SEQUENCE (4), expiry in Unix seconds (8),
`tag` = the first 16 bytes of HMAC-SHA256(key, payload), and `mask` a keystream
derived from the tag. The tag authenticates the payload; the mask keeps the enrollment
id out of sight (a link forwarded or logged by a proxy says nothing about who else is
enrolled, and ids cannot be counted). Changing any byte changes the tag or the payload
it must match, so an altered token reads as forged.

The key is derived from the `[web] secret_file` key for this one purpose, so the
cookie key and the link key never sign each other's data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from tmcaldav.domain import CalendarStatus

if TYPE_CHECKING:
    from tmcaldav.config import Config

_PAYLOAD = struct.Struct(">QIQ")
_TAG = 16
TOKEN_BYTES = _PAYLOAD.size + _TAG

#: The answers a link can give, in the order the buttons show them.
LINK_ANSWERS = (CalendarStatus.ACCEPTED, CalendarStatus.TENTATIVE, CalendarStatus.DECLINED)


class LinkState(StrEnum):
    """What a genuine token may still do."""

    VALID = "valid"
    EXPIRED = "expired"
    # The event was rescheduled (its SEQUENCE moved on) after the link was sent.
    STALE = "stale"


@dataclass(frozen=True)
class LinkToken:
    """What a genuine token says."""

    enrollment_id: int
    sequence: int
    expires: datetime


@dataclass(frozen=True)
class Verified:
    """A genuine token and what it may still do."""

    token: LinkToken
    state: LinkState

    @property
    def enrollment_id(self) -> int:
        """The enrollment the token was made for."""
        return self.token.enrollment_id


def link_key(secret: str) -> bytes:
    """The links' HMAC key, derived from the web secret (`[web] secret_file`)."""
    return hmac.new(secret.encode("utf-8"), b"tmcaldav answer links v1", hashlib.sha256).digest()


def _mask(key: bytes, tag: bytes) -> bytes:
    return hmac.new(key, b"mask" + tag, hashlib.sha256).digest()[: _PAYLOAD.size]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def make_token(key: bytes, enrollment_id: int, sequence: int, expires: datetime) -> str:
    """A URL-safe token (48 characters, no padding) for one enrollment."""
    payload = _PAYLOAD.pack(enrollment_id, sequence, int(expires.timestamp()))
    tag = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG]
    raw = _xor(payload, _mask(key, tag)) + tag
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def read_token(key: bytes, token: str) -> LinkToken | None:
    """What a token says, or None when it is not one of ours (forged, altered, cut)."""
    if len(token) != 48 or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, ValueError):
        return None
    # A decoder may accept odd spellings of the same bytes; only the canonical one is ours.
    if len(raw) != TOKEN_BYTES or base64.urlsafe_b64encode(raw).decode("ascii") != token:
        return None
    hidden, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    payload = _xor(hidden, _mask(key, tag))
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG]
    if not hmac.compare_digest(expected, tag):
        return None
    enrollment_id, sequence, expires = _PAYLOAD.unpack(payload)
    return LinkToken(enrollment_id, sequence, datetime.fromtimestamp(expires, UTC))


def verify(
    key: bytes, token: str, *, now: datetime, sequence: int | None = None
) -> Verified | None:
    """A genuine token and its state (expired first, then stale against the event's
    current `sequence` when given), or None for a forged or altered one."""
    read = read_token(key, token)
    if read is None:
        return None
    if now >= read.expires:
        return Verified(read, LinkState.EXPIRED)
    if sequence is not None and read.sequence < sequence:
        return Verified(read, LinkState.STALE)
    return Verified(read, LinkState.VALID)


def answer_urls(
    config: Config, enrollment_id: int, sequence: int, expires: datetime
) -> dict[str, str]:
    """The student's links under `[web] public_url`: one per answer, and "page".

    Reads (or creates, mode 600) the `[web] secret_file` key; raises SecretFileError
    when it cannot. Each answer link only opens the page with that answer offered: a
    GET records nothing (mail scanners open every link).
    """
    from tmcaldav.web.auth import load_secret

    if not config.web.public_url:
        raise ValueError("[web] public_url is not set")
    key = link_key(load_secret(config.web.secret_path(config.path)))
    token = make_token(key, enrollment_id, sequence, expires)
    page = config.web.public_url.rstrip("/") + "/a/" + token
    urls = {str(answer): f"{page}?answer={answer}" for answer in LINK_ANSWERS}
    urls["page"] = page
    return urls
