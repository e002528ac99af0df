"""Read the attendees' answers back from a calendar object (pure, a small parser of
its own: parsing is the poll's main cost)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import vobject
from vobject.base import (
    VObjectError,
    parseLine,
)
from vobject.icalendar import TimezoneComponent

from tmcaldav.domain import address_or_none
from tmcaldav.ical.event import AttendeeState, EventState, ICalError, partstat_to_status
from tmcaldav.ical.text import _decode_param_text, _decode_text, decode_note_param

# --------------------------------------------------------------------------- reading

_FOLD = re.compile(r"(?:\r\n|\r|\n)[ \t]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})[Tt](\d{2})(\d{2})(\d{2})([Zz]?)")
_DURATION = re.compile(
    r"([+-])?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", re.IGNORECASE
)

_Params = list[list[str]]

# The same students' addresses recur on every event of a calendar (a first full sync
# reads each of them once per session): normalise each spelling once. A pure function,
# so a bounded cache changes nothing but the time.
_address = functools.lru_cache(maxsize=8192)(address_or_none)
_Property = tuple[str, _Params, str]


@dataclass
class _RawEvent:
    """The properties of one VEVENT (not of its VALARMs), in file order."""

    properties: list[_Property] = field(default_factory=list)

    def first(self, name: str) -> _Property | None:
        return next((prop for prop in self.properties if prop[0] == name), None)

    def all(self, name: str) -> Iterator[_Property]:
        return (prop for prop in self.properties if prop[0] == name)


@dataclass
class _RawCalendar:
    method: str | None = None
    events: list[_RawEvent] = field(default_factory=list)
    timezones: dict[str, list[str]] = field(default_factory=dict)  # TZID -> its logical lines


def _as_text(data: str | bytes) -> str:
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ICalError(f"not iCalendar data: not UTF-8 ({error.reason})") from error
    return data.removeprefix("\ufeff")


def _param(params: _Params, name: str) -> str | None:
    """The first value of a parameter (names compare case-insensitively)."""
    for param_name, *values in params:
        if param_name.upper() == name and values:
            return values[0]
    return None


def _first(values: list[str] | None) -> str | None:
    """The first value of a parameter's values, or None."""
    return values[0] if values else None


def _utc_param(value: str | None) -> datetime | None:
    """A parameter's value holding a UTC DATE-TIME (``20261201T002224Z``), or None."""
    match = _DATE_TIME.fullmatch(value.strip()) if value else None
    if match is None or not match.group(7):
        return None  # absent, malformed or floating: not an instant
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)
def _content_line(line: str) -> _Property:
    """One unfolded line split by vobject's parser: (upper-cased name, parameters, value).

    Cached by its text: a calendar repeats most of its lines from event to event (the
    VTIMEZONE, the organizer, a student's attendee line while their answer stands), and
    splitting lines is most of the parse. The parameters are shared: never change them.
    """
    name, params, value, _group = parseLine(line)
    return name.upper(), params, value


def _parse(text: str) -> _RawCalendar:
    """Split ``text`` into the parts we read, with vobject's content-line parser.

    We walk the lines ourselves instead of ``vobject.readOne``: it is several times faster,
    leaves DESCRIPTION undecoded, and never feeds VTIMEZONEs from untrusted mail into
    vobject's process-wide TZID registry.
    """
    calendar = _RawCalendar()
    stack: list[str] = []
    event: _RawEvent | None = None
    timezone_lines: list[str] | None = None
    timezone_id: str | None = None
    seen_calendar = False
    for number, line in enumerate(_LINE_BREAK.split(_FOLD.sub("", text)), start=1):
        if not line.strip():
            continue
        try:
            name, params, value = _content_line(line)
        except VObjectError as error:
            raise ICalError(f"not iCalendar data: line {number} is not a content line") from error
        if not stack and not (name == "BEGIN" and value.strip().upper() == "VCALENDAR"):
            raise ICalError(f"not iCalendar data: line {number} should be BEGIN:VCALENDAR")
        seen_calendar = True
        if timezone_lines is not None:
            timezone_lines.append(line)
        if name == "BEGIN":
            component = value.strip().upper()
            stack.append(component)
            if len(stack) == 2 and component == "VEVENT":
                event = _RawEvent()
                calendar.events.append(event)
            elif len(stack) == 2 and component == "VTIMEZONE":
                timezone_lines, timezone_id = [line], None
        elif name == "END":
            if stack[-1] != value.strip().upper():
                raise ICalError(f"line {number}: END:{value} does not close {stack[-1]}")
            stack.pop()
            if not stack:
                break  # one calendar object; anything after it is not ours to read
            if len(stack) == 1:
                if timezone_lines is not None and timezone_id:
                    calendar.timezones.setdefault(timezone_id, timezone_lines)
                event, timezone_lines = None, None
        elif len(stack) == 1 and name == "METHOD":
            calendar.method = _decode_text(value).strip().upper() or None
        elif len(stack) == 2 and event is not None:
            event.properties.append((name, params, value))
        elif len(stack) == 2 and timezone_lines is not None and name == "TZID":
            timezone_id = value.strip()
    if not seen_calendar:
        raise ICalError("not iCalendar data: it is empty")
    if stack:
        raise ICalError(f"not iCalendar data: {stack[-1]} is never closed (truncated?)")
    return calendar


def _zone_for(tzid: str, calendar: _RawCalendar, cache: dict[str, tzinfo | None]) -> tzinfo | None:
    """Resolve a TZID: an IANA name first (exact and cheap), else the file's VTIMEZONE.

    Outlook writes Windows names ("W. Europe Standard Time") that only its VTIMEZONE explains.
    """
    tzid = tzid.strip()
    if tzid in cache:
        return cache[tzid]
    zone: tzinfo | None = None
    try:
        zone = ZoneInfo(tzid)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        lines = calendar.timezones.get(tzid)
        if lines is not None:
            try:
                component = vobject.readOne("\r\n".join(lines), transform=False)
                zone = TimezoneComponent.gettzinfo(component)
            except Exception:  # any broken VTIMEZONE just leaves the zone unknown
                zone = None
    cache[tzid] = zone
    return zone


def _instant(
    prop: _Property | None, calendar: _RawCalendar, cache: dict[str, tzinfo | None]
) -> datetime | None:
    """A DATE-TIME property as an aware UTC datetime, or None if it names no instant."""
    if prop is None:
        return None
    _name, params, value = prop
    value_type = _param(params, "VALUE")
    if value_type is not None and value_type.upper() != "DATE-TIME":
        return None  # an all-day DATE (or a PERIOD) is not an instant
    match = _DATE_TIME.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    zone: tzinfo | None
    if match.group(7):
        zone = UTC
    else:
        tzid = _param(params, "TZID")
        if tzid is None:
            return None  # a floating time belongs to no time zone
        zone = _zone_for(tzid, calendar, cache)
        if zone is None:
            return None
    try:
        # A leap second (60) is clamped: Python datetimes have none.
        local = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _duration(value: str) -> timedelta | None:
    match = _DURATION.fullmatch(value.strip())
    if match is None or not any(match.groups()[1:]):
        return None
    weeks, days, hours, minutes, seconds = (int(part or 0) for part in match.groups()[1:])
    length = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    return -length if match.group(1) == "-" else length


def _sequence(prop: _Property | None) -> int:
    if prop is None:
        return 0
    try:
        sequence = int(prop[2].strip())
    except ValueError:
        return 0
    return max(sequence, 0)


def _text_value(prop: _Property | None) -> str | None:
    return None if prop is None else _decode_text(prop[2])


def _answer_rank(state: AttendeeState) -> int:
    # Any real answer (accepted, tentative, declined, delegated) beats "invited"; answers
    # do not outrank each other, so a later line wins (servers append the newer one).
    return 0 if state.calendar_status == "invited" else 1


def _attendees(
    event: _RawEvent, reply_time: datetime | None, answer_time_param: str | None
) -> tuple[dict[str, AttendeeState], tuple[str, ...]]:
    parsed: list[AttendeeState] = []
    answer_time = answer_time_param.upper() if answer_time_param else None
    for _name, params, value in event.all("ATTENDEE"):
        address = _address(value)
        if address is None:
            continue  # urn:uuid:..., an Exchange X.500 path, junk: not a student address
        # One pass over the parameters (the first of each name counts): attendee lines
        # are most of a large event, and parsing is the poll's main cost.
        found: dict[str, list[str]] = {}
        for param_name, *values in params:
            found.setdefault(param_name.upper(), values)
        raw_name = _first(found.get("CN"))
        name = _decode_param_text(raw_name).strip() if raw_name is not None else ""
        partstat = (_first(found.get("PARTSTAT")) or "NEEDS-ACTION").strip().upper()
        statuses = found.get("SCHEDULE-STATUS")
        note = found.get("X-RESPONSE-COMMENT")
        parsed.append(
            AttendeeState(
                email=address,
                name=name or None,
                partstat=partstat,
                calendar_status=partstat_to_status(partstat),
                sent_by=_address(_first(found.get("SENT-BY"))),
                reply_time=None,
                schedule_status=",".join(statuses).strip() or None if statuses else None,
                comment=decode_note_param(note) if note is not None else None,
                answered_at=_utc_param(_first(found.get(answer_time)))
                if answer_time
                else None,
            )
        )
    if reply_time is not None and len({state.email for state in parsed}) == 1:
        # Outlook puts X-MICROSOFT-CDO-REPLYTIME on the VEVENT; it is one attendee's answer
        # time only when the event carries one attendee (a REPLY).
        parsed = [replace(state, reply_time=reply_time) for state in parsed]
    states: dict[str, AttendeeState] = {}
    duplicates: dict[str, None] = {}
    for state in parsed:
        kept = states.get(state.email)
        if kept is not None:
            duplicates[state.email] = None
            if _answer_rank(state) < _answer_rank(kept):
                continue
        states[state.email] = state  # keeps the first position, takes the newer value
    return states, tuple(duplicates)


def _master(calendar: _RawCalendar) -> _RawEvent:
    if not calendar.events:
        raise ICalError("the calendar object holds no VEVENT")
    for event in calendar.events:
        if event.first("RECURRENCE-ID") is None:
            return event
    # Only overridden instances (an invitation to one occurrence): read the first of them.
    return calendar.events[0]


def read_event(text: str | bytes, *, answer_time_param: str | None = None) -> EventState:
    """Read the master VEVENT of an iCalendar object (a server copy or an iMIP message).

    The master is the first VEVENT without RECURRENCE-ID (else the first VEVENT); overridden
    instances are ignored. Addresses are normalised; an ATTENDEE whose value is not an
    e-mail address is skipped. PARTSTAT is read case-insensitively, a missing one is
    NEEDS-ACTION and an unknown one counts as ``invited``. When an address appears more
    than once, a real answer beats ``invited`` and, between equals, the later line wins; the
    address is listed in ``duplicates``. A missing or malformed SEQUENCE reads as 0.

    Each attendee's SCHEDULE-STATUS and note (``X-RESPONSE-COMMENT``) are read; with
    ``answer_time_param`` (a server profile's, e.g. ``X-DTSTAMP``) that parameter is read
    as the attendee's answer time (UTC).

    Raises :class:`ICalError` for data that is not iCalendar, has no VEVENT, or whose master
    VEVENT has no UID.
    """
    calendar = _parse(_as_text(text))
    event = _master(calendar)
    uid = _text_value(event.first("UID"))
    if uid is None or not uid.strip():
        raise ICalError("the VEVENT has no UID")
    zones: dict[str, tzinfo | None] = {}
    start = _instant(event.first("DTSTART"), calendar, zones)
    end = _instant(event.first("DTEND"), calendar, zones)
    duration = event.first("DURATION")
    if end is None and start is not None and event.first("DTEND") is None:
        # RFC 5545 §3.6.1: DTSTART + DURATION, or no length at all when neither is given.
        length = _duration(duration[2]) if duration is not None else timedelta(0)
        end = start + length if length is not None else None
    reply_time = _instant(event.first("X-MICROSOFT-CDO-REPLYTIME"), calendar, zones)
    attendees, duplicates = _attendees(event, reply_time, answer_time_param)
    organizer = event.first("ORGANIZER")
    status = (_text_value(event.first("STATUS")) or "").strip().upper()
    comments = [_decode_text(prop[2]) for prop in event.all("COMMENT")]
    return EventState(
        uid=uid.strip(),
        sequence=_sequence(event.first("SEQUENCE")),
        dtstamp=_instant(event.first("DTSTAMP"), calendar, zones),
        status=status or None,
        summary=_text_value(event.first("SUMMARY")),
        start=start,
        end=end,
        organizer=address_or_none(organizer[2]) if organizer is not None else None,
        attendees=MappingProxyType(attendees),
        duplicates=duplicates,
        method=calendar.method,
        comment="\n".join(comments) if comments else None,
    )




_UID_LINE = re.compile(r"^UID(?:;[^:\r\n]*)?:([^\r\n]+)", re.IGNORECASE | re.MULTILINE)


def find_uid(text: str) -> str | None:
    """The first UID written in iCalendar text, found without parsing it (for objects
    that do not parse: is a broken one ours?). None when there is none."""
    unfolded = re.sub(r"\r?\n[ \t]", "", text)
    found = _UID_LINE.search(unfolded)
    return found.group(1).strip() or None if found else None
