"""The product's vocabulary: statuses, calendar statuses, kinds and sources, and addresses.

Every other module names these values through the enums here (a `StrEnum` compares
equal to its text, so the store, JSON and plugins keep plain strings). The one address
normaliser, `normalise_address`, is used at every door — command line, CSV, iMIP and
the server's data — so an address that was accepted can always be invited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from tmcaldav.errors import TmcaldavError


class EnrollmentStatus(StrEnum):
    """Where a student stands in a session."""

    ENROLLED = "enrolled"
    WAITLISTED = "waitlisted"
    CANCELLED = "cancelled"
    ATTENDED = "attended"
    NO_SHOW = "no_show"


class CalendarStatus(StrEnum):
    """The Calendar column: what the student's calendar says."""

    NOT_INVITED = "not_invited"
    INVITED = "invited"
    ACCEPTED = "accepted"
    TENTATIVE = "tentative"
    DECLINED = "declined"
    DELEGATED = "delegated"


class SessionStatus(StrEnum):
    """A session is scheduled until it is cancelled."""

    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class CalendarState(StrEnum):
    """Where a session's event stands on the CalDAV server."""

    UNPUBLISHED = "unpublished"
    PUBLISHED = "published"
    MISSING = "missing"


class ResponseSource(StrEnum):
    """How an answer reached tmcaldav."""

    POLL = "poll"
    IMIP = "imip"
    MANUAL = "manual"
    LINK = "link"
    IMPORT = "import"


class SuggestionKind(StrEnum):
    """What a plugin may advise."""

    CANCEL_ENROLLMENT = "cancel_enrollment"
    INVITE_WAITLISTED = "invite_waitlisted"
    PROMOTE_WAITLISTED = "promote_waitlisted"
    CONTACT_STUDENT = "contact_student"
    OFFER_OTHER_SESSION = "offer_other_session"
    MARK_NO_SHOW = "mark_no_show"


class SuggestionState(StrEnum):
    """Where a suggestion stands."""

    OPEN = "open"
    APPLIED = "applied"
    DISMISSED = "dismissed"
    WITHDRAWN = "withdrawn"


class DeliveryState(StrEnum):
    """An iMIP message to one student (superseded: replaced by a newer one before it went)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class NoticeState(StrEnum):
    """A notice to the administrator (a plugin's digest or alert): waiting, sent, given up."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class ReminderChannel(StrEnum):
    """How a reminder travelled: an iMIP mail from tmcaldav, or the scheduling server."""

    MAIL = "mail"
    SERVER = "server"


class ServerDelivery(StrEnum):
    """What the CalDAV server says it did with an invitation (server mode): its
    SCHEDULE-STATUS on the student's ATTENDEE line of the organizer's copy, in words.

    ``sent`` means handed on for delivery by other means (Cyrus mails addresses it does
    not host: 1.1) or still pending (1.0); ``not_delivered`` covers every failure code
    (3.x, 5.x) and an invitation the server did not schedule at all (no SCHEDULE-STATUS
    after our PUT: ORGANIZER is not one of the login's addresses).
    """

    DELIVERED = "delivered"
    SENT = "sent"
    NOT_DELIVERED = "not_delivered"


class AnswerEvidence(StrEnum):
    """Where an answer's time (``responded_at``) comes from, most direct first."""

    #: The DTSTAMP of the student's own REPLY (iMIP), or the reply time their client wrote.
    REPLY_DTSTAMP = "reply-dtstamp"
    #: The answer time the CalDAV server recorded on the ATTENDEE (Cyrus: X-DTSTAMP).
    SERVER_DTSTAMP = "server-dtstamp"
    #: When tmcaldav first saw the answer (the server keeps no time of its own).
    OBSERVED = "observed"


class DaemonRole(StrEnum):
    """What a running `tmcaldav run` does on its store: ticks, or waits to take over."""

    ACTIVE = "active"
    STANDBY = "standby"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The enum's values as plain strings, in definition order (for CHECK constraints)."""
    return tuple(member.value for member in enum)


#: The Calendar column's icons.
ICONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        CalendarStatus.NOT_INVITED: "—",
        CalendarStatus.INVITED: "✉",
        CalendarStatus.ACCEPTED: "✓",
        CalendarStatus.TENTATIVE: "?",
        CalendarStatus.DECLINED: "✗",
        CalendarStatus.DELEGATED: "↪",
    }
)

#: A time stamp from someone else's clock (a REPLY's DTSTAMP, a server's X-DTSTAMP) that
#: lies further ahead than this is skew or forgery: it counts as "now", so it cannot win
#: iTIP ordering against answers that really come later.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)

#: The Calendar column of an invited student whose invitation the server did not deliver.
NOT_DELIVERED_ICON: Final = "⚠"

#: Statuses that hold a seat in the session.
SEAT_STATUSES: Final = frozenset(
    {EnrollmentStatus.ENROLLED, EnrollmentStatus.ATTENDED, EnrollmentStatus.NO_SHOW}
)
#: Calendar statuses that are a student's own answer ("invited" after a reschedule is
#: the organizer's reset).
ANSWERS: Final = frozenset(
    {
        CalendarStatus.ACCEPTED,
        CalendarStatus.TENTATIVE,
        CalendarStatus.DECLINED,
        CalendarStatus.DELEGATED,
    }
)
#: Answers an administrator may record for a student (`tmcaldav answer`).
MANUAL_ANSWERS: Final = (
    CalendarStatus.ACCEPTED,
    CalendarStatus.TENTATIVE,
    CalendarStatus.DECLINED,
)
#: Calendar statuses of a student who holds an invitation they have not turned down.
INVITATION_OUT: Final = frozenset(
    {CalendarStatus.INVITED, CalendarStatus.ACCEPTED, CalendarStatus.TENTATIVE}
)
#: Page order: seated students first, then the waitlist, then the cancelled.
PAGE_RANK: Final[Mapping[str, int]] = MappingProxyType(
    {
        EnrollmentStatus.ENROLLED: 0,
        EnrollmentStatus.ATTENDED: 0,
        EnrollmentStatus.NO_SHOW: 0,
        EnrollmentStatus.WAITLISTED: 1,
        EnrollmentStatus.CANCELLED: 2,
    }
)

# ---- bounds of what people type -------------------------------------------------------------

#: The most seats a session may have: beyond it is a typo.
CAPACITY_MAX: Final = 100_000
#: Session times are between these years (beyond them a typo, and some zones' rules end).
YEAR_MIN: Final = 1970
YEAR_MAX: Final = 2200
#: The longest note kept: an administrator's longer one is refused, one from a mail cut.
NOTE_MAX: Final = 2000
#: The longest reason kept for a refused mail (and logged): a hostile message cannot
#: grow the store or the log.
REASON_MAX: Final = 1000


def clip(text: str, limit: int) -> str:
    """`text`, cut to at most `limit` characters with "…" where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- addresses ----------------------------------------------------------------------------

#: The longest address the store keeps (RFC 5321's path limit).
ADDRESS_MAX = 320

# Characters that never occur in a usable address and would break a content line or a
# quoted parameter (SENT-BY, DELEGATED-TO) if they slipped through.
_ADDRESS_FORBIDDEN = re.compile(r'[\s"<>(),;:\[\]\\\x00-\x1f\x7f\ud800-\udfff]')


class AddressError(TmcaldavError, ValueError):
    """Not an e-mail address tmcaldav can invite."""


def normalise_address(value: str) -> str:
    """The comparable form of an e-mail or ``mailto:`` address: the one rule at every door.

    A leading ``mailto:`` (any case) and surrounding whitespace are removed and the result
    is lower-cased, because clients spell the same address differently (Outlook sends
    ``MAILTO:Ann@Example.ORG``). AddressError for anything that is not a plain
    ``local@domain.tld`` address: empty, no ``@`` (or more than one), whitespace or
    ``"<>(),;:[]\\`` inside, a domain without a dot or with empty labels, or longer than
    the store keeps.
    """
    address = value.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:].strip()
    address = address.lower()
    local, at, domain = address.partition("@")
    if (
        not at
        or not local
        or "@" in domain
        or _ADDRESS_FORBIDDEN.search(address)
        or "." not in domain
        or "" in domain.split(".")
    ):
        raise AddressError(f"not an e-mail address: {value!r}")
    if len(address) > ADDRESS_MAX:
        raise AddressError(
            f"the e-mail address is too long ({len(address)} characters; at most {ADDRESS_MAX})"
        )
    return address


def address_or_none(value: str | None) -> str | None:
    """`normalise_address`, or None for a missing or unusable address."""
    if value is None:
        return None
    try:
        return normalise_address(value)
    except AddressError:
        return None
