"""The iCalendar side of the vocabulary: PARTSTAT ↔ calendar status, and the plain data
that building and reading exchange (EventSpec in, EventState out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from tmcaldav.domain import CalendarStatus, normalise_address

PARTSTAT_TO_STATUS: Final[Mapping[str, str]] = {
    "NEEDS-ACTION": CalendarStatus.INVITED,
    "ACCEPTED": CalendarStatus.ACCEPTED,
    "TENTATIVE": CalendarStatus.TENTATIVE,
    "DECLINED": CalendarStatus.DECLINED,
    "DELEGATED": CalendarStatus.DELEGATED,
}
STATUS_TO_PARTSTAT: Final[Mapping[str, str]] = {
    status: partstat for partstat, status in PARTSTAT_TO_STATUS.items()
}
PRODID: Final = "-//tmcaldav//tmcaldav//EN"


def calendar_address(email: str) -> str:
    """Return the ``mailto:`` URI written into ORGANIZER and ATTENDEE (always lower-case).

    Some scheduling servers match addresses as exact strings, so every address we write has
    one spelling.
    """
    return "mailto:" + normalise_address(email)


def partstat_to_status(partstat: str | None) -> str:
    """Map a PARTSTAT value (any case) to a calendar status; unknown or missing is ``invited``.

    RFC 5545 §3.2.12 says an unknown PARTSTAT must be treated as NEEDS-ACTION.
    """
    if partstat is None:
        return "invited"
    return PARTSTAT_TO_STATUS.get(partstat.strip().upper(), "invited")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Attendee:
    """One invited student as written into the event."""

    email: str
    name: str | None
    partstat: str = "NEEDS-ACTION"
    rsvp: bool = True


@dataclass(frozen=True)
class EventSpec:
    """Everything :func:`build_calendar` needs to write one session's VEVENT.

    ``start``/``end``/``dtstamp`` are aware datetimes (microseconds are dropped); ``tz`` is an
    IANA zone name. ``schedule_agent_client`` marks each ATTENDEE ``SCHEDULE-AGENT=CLIENT``
    (iMIP mode, RFC 6638 §7.1); ``force_send`` lists addresses that get
    ``SCHEDULE-FORCE-SEND=REQUEST`` (server mode, re-send). Neither parameter is ever
    written into an iTIP message (``method`` given).
    """

    uid: str
    summary: str
    start: datetime
    end: datetime
    tz: str
    sequence: int
    dtstamp: datetime
    status: str
    organizer_email: str
    organizer_name: str | None
    attendees: tuple[Attendee, ...]
    description: str | None = None
    location: str | None = None
    schedule_agent_client: bool = False
    force_send: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AttendeeState:
    """One ATTENDEE as read from an event.

    ``email`` and ``sent_by`` are normalised addresses; ``name`` is the CN with RFC 6868
    escapes decoded. ``partstat`` is the raw value upper-cased (``NEEDS-ACTION`` when
    missing); ``calendar_status`` is its meaning for the product. ``reply_time`` is Outlook's
    X-MICROSOFT-CDO-REPLYTIME (UTC) when the event has exactly one attendee, as a REPLY does.
    ``schedule_status`` is the SCHEDULE-STATUS parameter exactly as the server wrote it
    (several values joined by ``,``), None when absent. ``comment`` is the student's note
    from ``X-RESPONSE-COMMENT`` (Gmail's escapes and HTML entities decoded). ``answered_at``
    is the answer time a server keeps in a parameter of the line (Cyrus: ``X-DTSTAMP``), read
    only when :func:`read_event` is told which parameter (a server profile).
    """

    email: str
    name: str | None
    partstat: str
    calendar_status: str
    sent_by: str | None
    reply_time: datetime | None
    schedule_status: str | None = None
    comment: str | None = None
    answered_at: datetime | None = None


@dataclass(frozen=True)
class EventState:
    """What :func:`read_event` found in the master VEVENT of a calendar object.

    ``start``/``end``/``dtstamp`` are aware UTC datetimes, or ``None`` when the value cannot
    be placed on the time line (missing, an all-day DATE, a floating time, an unknown zone).
    ``attendees`` maps normalised addresses to states in the order of first appearance;
    ``comment`` joins the VEVENT's COMMENT values with line breaks. ``method`` and ``status``
    are upper-cased.
    """

    uid: str
    sequence: int
    dtstamp: datetime | None
    status: str | None
    summary: str | None
    start: datetime | None
    end: datetime | None
    organizer: str | None
    attendees: Mapping[str, AttendeeState] = field(hash=False)
    duplicates: tuple[str, ...]
    method: str | None
    comment: str | None


class ICalError(ValueError):
    """The data is not an iCalendar object tmcaldav can read (no VEVENT, no UID, garbage)."""
