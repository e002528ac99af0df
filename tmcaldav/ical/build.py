"""Build a training session's iCalendar VEVENT (pure; vobject does the content-line
grammar)."""

from __future__ import annotations

import functools
import io
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import vobject
from vobject.base import (
    Component,
    ContentLine,
)

from tmcaldav.domain import normalise_address
from tmcaldav.ical.event import PRODID, EventSpec, calendar_address
from tmcaldav.ical.text import (
    _TEXT_CONTROLS,
    _check_token,
    _clean_text,
    _encode_param_text,
    _fold,
    normalise_name,
)
from tmcaldav.ical.zones import (
    _UTC_ZONES,
    _utc_text,
    _vtimezone_of,
    _wall_text,
    _zone,
    vtimezone_key,
)

_EVENT_STATUSES = frozenset({"CONFIRMED", "CANCELLED"})
_ITIP_METHODS = frozenset(
    {"PUBLISH", "REQUEST", "REPLY", "ADD", "CANCEL", "REFRESH", "COUNTER", "DECLINECOUNTER"}
)


# --------------------------------------------------------------------------- building


def _require_aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got {moment!r}")
    # iCalendar has no fractions of a second.
    return moment.replace(microsecond=0)


def _time_line(name: str, moment: datetime, zone_name: str, zone: ZoneInfo | None) -> ContentLine:
    if zone is None:
        return ContentLine(name, [], _utc_text(moment))
    local = moment.astimezone(zone)
    if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
        # 02:30 on a fall-back night happens twice. RFC 5545 §3.3.5 says a TZID time means
        # the first, but dateutil-based readers take the second, so write UTC instead.
        return ContentLine(name, [], _utc_text(moment))
    return ContentLine(name, [["TZID", zone_name]], _wall_text(local))


def _name_params(name: str | None) -> list[list[str]]:
    clean = normalise_name(name)
    return [] if clean is None else [["CN", _encode_param_text(clean)]]


class _AddressLine(ContentLine):  # type: ignore[misc]  # vobject ships no type hints
    """An ORGANIZER or ATTENDEE line that always quotes its CN.

    vobject quotes a parameter value only when it holds ``,;:``, but lenient parsers
    (icalendar, and so Xandikos) drop blanks around an unquoted ``=``: ``CN=0 =`` reads
    ``0=``. A quoted value is read verbatim by everyone.
    """

    def serialize(
        self, buf: io.StringIO | None = None, *_args: object, **_kwargs: object
    ) -> str | io.StringIO:
        return _written(buf, _address_text(self.name, self.params, self.value))


def _written(buf: io.StringIO | None, text: str) -> str | io.StringIO:
    """vobject's `serialize` contract (its lineLength and validate do not apply to our
    own text): append to `buf` and return it, or return the text."""
    if buf is None:
        return text
    buf.write(text)
    return buf


def _address_text(name: str, params: dict[str, list[str]], value: str) -> str:
    """One ORGANIZER or ATTENDEE line as `_AddressLine` writes it, CRLF-terminated."""
    text = "".join(
        f";{key}=" + ",".join(f'"{v}"' if key == "CN" else v for v in values)
        for key, values in sorted(params.items())
    )
    # Our own fold: vobject's walks every character (most of a 30-attendee event's
    # build time), and these lines are most of the event.
    return _fold(f"{name}{text}:{value}", "\r\n") + "\r\n"


class _AttendeeLines(_AddressLine):
    """Every ATTENDEE line of the event, written as one `_AddressLine` each would be.

    One vobject line for all of them: building a vobject line costs more than writing
    its text, and a 30-attendee event is mostly attendees. vobject writes a VEVENT's
    ATTENDEEs together (its children are grouped by name), so the text is the same.
    """

    def __init__(self, lines: list[tuple[list[list[str]], str]]):
        super().__init__("ATTENDEE", [], lines[0][1])
        # Each line's parameters as vobject keeps them: names upper-cased, in a dict.
        self.lines = [
            ({param[0].upper(): param[1:] for param in params}, value) for params, value in lines
        ]

    def serialize(
        self, buf: io.StringIO | None = None, *_args: object, **_kwargs: object
    ) -> str | io.StringIO:
        return _written(buf, "".join(_address_text(self.name, p, v) for p, v in self.lines))


@functools.lru_cache(maxsize=64)
def _vtimezone_text(key: tuple[str, int, int, bool]) -> str:
    """The VTIMEZONE for `key` (see `vtimezone_key`) as vobject writes it in a calendar:
    made once, as every session of a zone and year carries the same one."""
    calendar = vobject.iCalendar()
    calendar.add(_vtimezone_of(*key))
    text: str = calendar.serialize()
    begin = text.index("BEGIN:VTIMEZONE\r\n")
    end = text.index("END:VTIMEZONE\r\n") + len("END:VTIMEZONE\r\n")
    return text[begin:end]


class _Verbatim(Component):  # type: ignore[misc]  # vobject ships no type hints
    """A component written as text made (and checked by vobject) earlier."""

    def __init__(self, name: str, text: str):
        super().__init__(name)
        # Past vobject's __setattr__, which would make a lower-case name a child line.
        object.__setattr__(self, "text", text)

    def validate(self, *args: object, **kwargs: object) -> bool:
        return True  # checked when its text was made

    def serialize(
        self, buf: io.StringIO | None = None, *_args: object, **_kwargs: object
    ) -> str | io.StringIO:
        return _written(buf, self.text)


def build_calendar(spec: EventSpec, method: str | None = None) -> str:
    """Return a complete VCALENDAR (CRLF, folded at 75 octets) holding the session's VEVENT.

    ``method`` (``REQUEST``, ``CANCEL``, ...) makes it an iTIP message: METHOD is set and no
    SCHEDULE-AGENT / SCHEDULE-FORCE-SEND parameter is written. Times carry TZID and a
    VTIMEZONE for ``spec.tz``, or are UTC (``Z``) when the zone is UTC. Raises
    ``ValueError`` for an inconsistent spec (naive or reversed times, unknown zone, bad
    status, bad or repeated address, ``force_send`` naming a non-attendee or combined with
    ``schedule_agent_client``).
    """
    start = _require_aware(spec.start, "start")
    end = _require_aware(spec.end, "end")
    dtstamp = _require_aware(spec.dtstamp, "dtstamp")
    if end <= start:
        raise ValueError(f"end {end.isoformat()} must be after start {start.isoformat()}")
    if spec.sequence < 0:
        raise ValueError(f"sequence must not be negative, got {spec.sequence}")
    status = spec.status.upper()
    if status not in _EVENT_STATUSES:
        raise ValueError(f"status must be CONFIRMED or CANCELLED, got {spec.status!r}")
    if not spec.uid or _TEXT_CONTROLS.search(spec.uid) or "\n" in spec.uid:
        raise ValueError(f"uid must be a non-empty single line, got {spec.uid!r}")
    if method is not None:
        method = method.upper()
        if method not in _ITIP_METHODS:
            raise ValueError(f"unknown iTIP method {method!r}")
    zone = None if spec.tz in _UTC_ZONES else _zone(spec.tz)

    addresses = [normalise_address(attendee.email) for attendee in spec.attendees]
    repeated = sorted(address for address, count in Counter(addresses).items() if count > 1)
    if repeated:
        raise ValueError(f"attendees listed more than once: {', '.join(repeated)}")
    force_send = {normalise_address(address) for address in spec.force_send}
    if force_send - set(addresses):
        unknown = ", ".join(sorted(force_send - set(addresses)))
        raise ValueError(f"force_send names addresses that are not attendees: {unknown}")
    if force_send and spec.schedule_agent_client:
        # A server does not schedule CLIENT attendees, so it cannot force-send to them either.
        raise ValueError("force_send (server mode) cannot be combined with schedule_agent_client")
    scheduling_params = method is None  # iTIP messages must not carry CalDAV-only parameters

    calendar = vobject.iCalendar()
    calendar.add(ContentLine("PRODID", [], PRODID))
    calendar.add(ContentLine("VERSION", [], "2.0"))
    calendar.add(ContentLine("CALSCALE", [], "GREGORIAN"))
    if method is not None:
        calendar.add(ContentLine("METHOD", [], method))
    if zone is not None:
        vtimezone = _Verbatim("VTIMEZONE", _vtimezone_text(vtimezone_key(spec.tz, start, end)))
        vtimezone.add(ContentLine("TZID", [], spec.tz))  # what vobject looks up in it
        calendar.add(vtimezone)

    event = Component("VEVENT")
    event.add(ContentLine("UID", [], spec.uid))
    event.add(ContentLine("DTSTAMP", [], _utc_text(dtstamp)))
    event.add(_time_line("DTSTART", start, spec.tz, zone))
    event.add(_time_line("DTEND", end, spec.tz, zone))
    event.add(ContentLine("SEQUENCE", [], str(spec.sequence)))
    event.add(ContentLine("STATUS", [], status))
    event.add(ContentLine("SUMMARY", [], _clean_text(spec.summary)))
    if spec.description is not None:
        event.add(ContentLine("DESCRIPTION", [], _clean_text(spec.description)))
    if spec.location is not None:
        event.add(ContentLine("LOCATION", [], _clean_text(spec.location)))
    event.add(
        _AddressLine(
            "ORGANIZER",
            _name_params(spec.organizer_name),
            calendar_address(spec.organizer_email),
        )
    )
    attendee_lines: list[tuple[list[list[str]], str]] = []
    for attendee, address in zip(spec.attendees, addresses, strict=True):
        params = [
            *_name_params(attendee.name),
            ["CUTYPE", "INDIVIDUAL"],
            ["ROLE", "REQ-PARTICIPANT"],
            ["PARTSTAT", _check_token(attendee.partstat, "PARTSTAT")],
            ["RSVP", "TRUE" if attendee.rsvp else "FALSE"],
        ]
        if scheduling_params and spec.schedule_agent_client:
            params.append(["SCHEDULE-AGENT", "CLIENT"])
        if scheduling_params and address in force_send:
            params.append(["SCHEDULE-FORCE-SEND", "REQUEST"])
        attendee_lines.append((params, "mailto:" + address))
    if attendee_lines:
        event.add(_AttendeeLines(attendee_lines))
    calendar.add(event)
    text: str = calendar.serialize()
    return text


