"""Build a training session's iCalendar VEVENT and read the attendees' answers back.

Pure functions over text and plain data (no I/O); vobject does the content-line grammar.

Lossy mappings, on purpose (see :func:`normalise_name`): a display name (CN) cannot hold a
double quote or a line break in RFC 5545, so ``"`` becomes ``'`` and every run of line breaks
or other control characters becomes one space. ``^`` is written as ``^^`` (RFC 6868) and
RFC 6868 escapes are decoded on reading, as sabre/dav, Apple and the ``icalendar`` library do.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import vobject
from vobject.base import (
    Component,
    ContentLine,
    VObjectError,
    line_re,
    params_re,
    parseLine,
)
from vobject.icalendar import TimezoneComponent

__all__ = [
    "CALENDAR_STATUSES",
    "ICONS",
    "PARTSTAT_TO_STATUS",
    "PRODID",
    "STATUS_TO_PARTSTAT",
    "Attendee",
    "AttendeeState",
    "EventSpec",
    "EventState",
    "ICalError",
    "build_calendar",
    "calendar_address",
    "normalise_address",
    "normalise_name",
    "partstat_to_status",
    "read_event",
    "session_uid",
    "set_partstats",
]

CALENDAR_STATUSES: Final = (
    "not_invited",
    "invited",
    "accepted",
    "tentative",
    "declined",
    "delegated",
)
ICONS: Final[Mapping[str, str]] = {
    "not_invited": "—",
    "invited": "✉",
    "accepted": "✓",
    "tentative": "?",
    "declined": "✗",
    "delegated": "↪",
}
PARTSTAT_TO_STATUS: Final[Mapping[str, str]] = {
    "NEEDS-ACTION": "invited",
    "ACCEPTED": "accepted",
    "TENTATIVE": "tentative",
    "DECLINED": "declined",
    "DELEGATED": "delegated",
}
STATUS_TO_PARTSTAT: Final[Mapping[str, str]] = {
    status: partstat for partstat, status in PARTSTAT_TO_STATUS.items()
}
PRODID: Final = "-//tmcaldav//tmcaldav//EN"

_EVENT_STATUSES = frozenset({"CONFIRMED", "CANCELLED"})
_ITIP_METHODS = frozenset(
    {"PUBLISH", "REQUEST", "REPLY", "ADD", "CANCEL", "REFRESH", "COUNTER", "DECLINECOUNTER"}
)
# Every IANA name for "offset zero, never any DST": such a zone needs no VTIMEZONE.
_UTC_ZONES = frozenset(
    {
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Etc/Zulu",
        "Zulu",
        "GMT",
        "Etc/GMT",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Etc/Greenwich",
        "Greenwich",
    }
)
_TOKEN = re.compile(r"[A-Za-z0-9-]+")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


# --------------------------------------------------------------------------- addresses

# Characters that never occur in a usable address and would break the content line or a
# quoted parameter (SENT-BY, DELEGATED-TO) if they slipped through.
_ADDRESS_FORBIDDEN = re.compile(r'[\s"<>(),;:\\\x00-\x1f\x7f\ud800-\udfff]')


def normalise_address(value: str) -> str:
    """Return the comparable form of an e-mail or ``mailto:`` address.

    A leading ``mailto:`` (any case) and surrounding whitespace are removed and the result is
    lower-cased, because clients spell the same address differently (Outlook sends
    ``MAILTO:Ann@Example.ORG``). Raises ``ValueError`` for anything that is not a plain
    ``local@domain`` address: empty, no ``@`` (or more than one), whitespace or
    ``"<>(),;:\\`` inside, or a domain with empty labels.
    """
    address = value.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:].strip()
    address = address.lower()
    local, at, domain = address.partition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in domain
        or _ADDRESS_FORBIDDEN.search(address)
        or domain.startswith(".")
        or domain.endswith(".")
        or ".." in domain
    ):
        raise ValueError(f"not an e-mail address: {value!r}")
    return address


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


def _address_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalise_address(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------- text rules

# Line breaks (including the Unicode ones) and other control characters cannot appear in
# a parameter value; runs of them collapse to one space so "Ann\r\nLee" reads "Ann Lee".
_NAME_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# In TEXT values a line break is escaped as \n, but other control characters are illegal.
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def normalise_name(name: str | None) -> str | None:
    """Return the display name exactly as :func:`build_calendar` writes it into ``CN``.

    This is the documented lossy mapping: ``"`` becomes ``'`` (RFC 5545 has no way to put a
    double quote inside a quoted parameter value), every run of line breaks and control
    characters becomes one space, lone surrogates become U+FFFD, and surrounding whitespace
    is stripped. An empty result is ``None`` (no CN). Reading the built calendar back gives
    this value, so compare names after this function.
    """
    if name is None:
        return None
    text = _SURROGATES.sub("\ufffd", name)
    text = _NAME_BREAKS.sub(" ", text).replace('"', "'").strip()
    return text or None


def _clean_text(value: str) -> str:
    """Make a TEXT value (SUMMARY, DESCRIPTION, LOCATION) legal; line breaks survive."""
    text = _SURROGATES.sub("\ufffd", value).replace("\r\n", "\n").replace("\r", "\n")
    return _TEXT_CONTROLS.sub(" ", text)


def _encode_param_text(text: str) -> str:
    # RFC 6868: a literal caret is "^^", so readers that decode ^n and ^' (sabre, icalendar,
    # this module) get the name back unchanged.
    return text.replace("^", "^^")


_RFC6868 = re.compile(r"\^([\^nN'])")
_RFC6868_MAP = {"^": "^", "n": "\n", "N": "\n", "'": '"'}


def _decode_param_text(raw: str) -> str:
    if "^" not in raw:
        return raw
    return _RFC6868.sub(lambda match: _RFC6868_MAP[match.group(1)], raw)


_TEXT_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# Apple and others escape the double quote although RFC 5545 does not ask for it.
_TEXT_UNESCAPE = {"n": "\n", "N": "\n", "\\": "\\", ";": ";", ",": ",", '"': '"'}


def _decode_text(raw: str) -> str:
    if "\\" not in raw:
        return raw
    # Unknown escapes are kept as they are, as vobject does.
    return _TEXT_ESCAPE.sub(lambda m: _TEXT_UNESCAPE.get(m.group(1), m.group(0)), raw)


# --------------------------------------------------------------------------- UID


_UID_SAFE = re.compile(r"[A-Za-z0-9.-]+")
_UID_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9.-]+")
_UID_READABLE_MAX = 64


def session_uid(session_key: str, organizer_email: str) -> str:
    """Return the stable UID of a session: ``tmcaldav-<key>@<organizer's domain>``.

    A key made only of ASCII letters, digits, ``.`` and ``-`` (up to 64 characters) is used
    as it is. Any other key has each run of other characters replaced by ``-``, is cut to 64
    characters, and gets ``_`` plus 16 hex digits of its SHA-256, so the UID is safe in a URL
    and distinct keys keep distinct UIDs (``_`` never appears in the plain form). The result
    depends only on the arguments. Raises ``ValueError`` for an empty key or a bad address.
    """
    if not session_key:
        raise ValueError("a session key must not be empty")
    domain = normalise_address(organizer_email).rpartition("@")[2]
    if _UID_SAFE.fullmatch(session_key) and len(session_key) <= _UID_READABLE_MAX:
        readable = session_key
    else:
        digest = hashlib.sha256(session_key.encode("utf-8", "surrogatepass")).hexdigest()
        readable = _UID_UNSAFE_RUN.sub("-", session_key)[:_UID_READABLE_MAX] + "_" + digest[:16]
    # The domain may hold non-ASCII letters (IDN); UIDs are TEXT, so that is legal.
    return f"tmcaldav-{readable}@{domain}"


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
    """

    email: str
    name: str | None
    partstat: str
    calendar_status: str
    sent_by: str | None
    reply_time: datetime | None


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


# --------------------------------------------------------------------------- time zones


@dataclass(frozen=True)
class _Observance:
    """One STANDARD/DAYLIGHT onset: the zone switches to ``offset_to`` at ``instant``."""

    kind: str
    instant: datetime
    onset: datetime  # naive wall-clock time in ``offset_from``, as VTIMEZONE DTSTART wants
    offset_from: timedelta
    offset_to: timedelta
    name: str | None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        # OSError: a key naming a directory ("Europe") or an over-long path
        raise ValueError(f"unknown time zone {name!r}") from error


def _kind(local: datetime) -> str:
    dst = local.dst()
    # A negative DST (Europe/Dublin in some tzdata builds) is still "standard" for clients.
    return "DAYLIGHT" if dst is not None and dst > timedelta(0) else "STANDARD"


@lru_cache(maxsize=128)
def _zone_history(zone_name: str, first_year: int, last_year: int) -> tuple[_Observance, ...]:
    """The observance at 1 January ``first_year`` followed by every change until the end of
    ``last_year``, found by scanning the zone day by day and bisecting to the second.

    We compute this from zoneinfo instead of using vobject's ``TimezoneComponent``: vobject
    puts STANDARD onsets one hour late for zoneinfo zones (03:30 on the last Sunday of October
    in Berlin would read as CEST) and assumes every DST shift is one hour.
    """
    zone = ZoneInfo(zone_name)

    def state(posix: int) -> tuple[timedelta | None, str, str | None]:
        local = datetime.fromtimestamp(posix, UTC).astimezone(zone)
        return local.utcoffset(), _kind(local), local.tzname()

    def observance(posix: int, before: timedelta, after: datetime) -> _Observance:
        instant = datetime.fromtimestamp(posix, UTC)
        offset_to = after.utcoffset() or timedelta(0)
        return _Observance(
            kind=_kind(after),
            instant=instant,
            onset=(instant + before).replace(tzinfo=None),
            offset_from=before,
            offset_to=offset_to,
            name=after.tzname(),
        )

    begin = int(datetime(first_year, 1, 1, tzinfo=UTC).timestamp())
    stop = int(datetime(last_year + 1, 1, 1, tzinfo=UTC).timestamp())
    first_local = datetime.fromtimestamp(begin, UTC).astimezone(zone)
    first_offset = first_local.utcoffset() or timedelta(0)
    history = [observance(begin, first_offset, first_local)]
    current, low, day = state(begin), begin, 86_400
    while low < stop:
        high = min(low + day, stop)
        if state(high) == current:
            low = high
            continue
        while high - low > 1:  # invariant: state(low) == current != state(high)
            middle = (low + high) // 2
            if state(middle) == current:
                low = middle
            else:
                high = middle
        before = current[0] or timedelta(0)
        history.append(observance(high, before, datetime.fromtimestamp(high, UTC).astimezone(zone)))
        current, low = state(high), high
    return tuple(history)


def _offset_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}{minutes:02d}" + (f"{seconds:02d}" if seconds else "")


def _wall_text(moment: datetime) -> str:
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"T{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
    )


def _utc_text(moment: datetime) -> str:
    return _wall_text(moment.astimezone(UTC)) + "Z"


def _is_last_weekday_of_month(moment: datetime) -> bool:
    return (moment + timedelta(days=7)).month != moment.month


def _yearly_rule(group: list[_Observance], last_year: int) -> str | None:
    """An RRULE that yields exactly these onsets (and continues past the window when the
    onsets reach its last year), or ``None`` when they follow no "n-th weekday" rule."""
    onsets = [observance.onset for observance in group]
    first = onsets[0]
    if [onset.year for onset in onsets] != list(range(first.year, first.year + len(onsets))):
        return None
    if any(
        (onset.month, onset.weekday(), onset.time()) != (first.month, first.weekday(), first.time())
        for onset in onsets
    ):
        return None
    if all(_is_last_weekday_of_month(onset) for onset in onsets):
        ordinal = -1
    else:
        ordinals = {(onset.day - 1) // 7 + 1 for onset in onsets}
        if len(ordinals) != 1:
            return None
        ordinal = ordinals.pop()
    rule = f"FREQ=YEARLY;BYMONTH={first.month};BYDAY={ordinal}{_WEEKDAYS[first.weekday()]}"
    if onsets[-1].year < last_year:
        # The rule stopped inside the window; without UNTIL a reader would extend it. UNTIL
        # is the last onset's wall time plus a day, marked UTC: dateutil-based readers
        # (icalendar, vobject) compare UNTIL as a local wall time and would drop an onset at
        # exactly its UTC instant, while a day's margin is still far from the next year's.
        rule += f";UNTIL={_wall_text(onsets[-1] + timedelta(days=1))}Z"
    return rule


def _vtimezone(zone_name: str, earliest: datetime, latest: datetime) -> Component:
    """A VTIMEZONE that is exact from a year before ``earliest`` to a year after ``latest``.

    Onsets that repeat yearly become one STANDARD/DAYLIGHT with an RRULE (the form Outlook
    and most clients expect); irregular ones are listed with RDATE.
    """
    first_year = max(earliest.year - 1, 2)  # keep clear of datetime.min when offsets apply
    last_year = min(latest.year + 1, 9998)
    initial, *changes = _zone_history(zone_name, first_year, last_year)
    observances = changes
    if not changes or changes[0].instant > earliest:
        observances = [initial, *changes]
    groups: dict[tuple[str, timedelta, timedelta, str | None], list[_Observance]] = {}
    for observance in observances:
        key = (observance.kind, observance.offset_from, observance.offset_to, observance.name)
        groups.setdefault(key, []).append(observance)

    vtimezone = Component("VTIMEZONE")
    vtimezone.add(ContentLine("TZID", [], zone_name))
    for (kind, offset_from, offset_to, name), group in groups.items():
        sub = Component(kind)
        sub.add(ContentLine("DTSTART", [], _wall_text(group[0].onset)))
        if len(group) > 1:
            rule = _yearly_rule(group, last_year)
            if rule is not None:
                sub.add(ContentLine("RRULE", [], rule))
            else:
                # One RDATE per onset: vobject (Radicale's parser) escapes the commas of a
                # list when it hands a VTIMEZONE to dateutil, which then cannot read it.
                for observance in group[1:]:
                    sub.add(ContentLine("RDATE", [], _wall_text(observance.onset)))
        if name:
            sub.add(ContentLine("TZNAME", [], name))
        sub.add(ContentLine("TZOFFSETFROM", [], _offset_text(offset_from)))
        sub.add(ContentLine("TZOFFSETTO", [], _offset_text(offset_to)))
        vtimezone.add(sub)
    return vtimezone


# --------------------------------------------------------------------------- building


def _check_token(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} must be a token like NEEDS-ACTION, got {value!r}")
    return value.upper()


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
        self,
        buf: io.StringIO | None = None,
        lineLength: int = 75,  # vobject's name for it, kept for keyword callers
        validate: bool = True,
        behavior: object = None,
        *args: object,
        **kwargs: object,
    ) -> str | io.StringIO:
        params = "".join(
            f";{key}=" + ",".join(f'"{value}"' if key == "CN" else value for value in values)
            for key, values in sorted(self.params.items())
        )
        out = buf or io.StringIO()
        # Our own fold: vobject's walks every character (most of a 30-attendee event's
        # build time), and these lines are most of the event.
        out.write(_fold(f"{self.name}{params}:{self.value}", "\r\n") + "\r\n")
        return buf or out.getvalue()


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
        calendar.add(_vtimezone(spec.tz, start, end))

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
        event.add(_AddressLine("ATTENDEE", params, "mailto:" + address))
    calendar.add(event)
    text: str = calendar.serialize()
    return text


# --------------------------------------------------------------------------- reading

_FOLD = re.compile(r"(?:\r\n|\r|\n)[ \t]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})[Tt](\d{2})(\d{2})(\d{2})([Zz]?)")
_DURATION = re.compile(
    r"([+-])?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", re.IGNORECASE
)

_Params = list[list[str]]
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
            name, params, value, _group = parseLine(line, number)
        except VObjectError as error:
            raise ICalError(f"not iCalendar data: line {number} is not a content line") from error
        name = name.upper()
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
    event: _RawEvent, reply_time: datetime | None
) -> tuple[dict[str, AttendeeState], tuple[str, ...]]:
    parsed: list[AttendeeState] = []
    for _name, params, value in event.all("ATTENDEE"):
        address = _address_or_none(value)
        if address is None:
            continue  # urn:uuid:..., an Exchange X.500 path, junk: not a student address
        raw_name = _param(params, "CN")
        name = _decode_param_text(raw_name).strip() if raw_name is not None else ""
        partstat = (_param(params, "PARTSTAT") or "NEEDS-ACTION").strip().upper()
        parsed.append(
            AttendeeState(
                email=address,
                name=name or None,
                partstat=partstat,
                calendar_status=partstat_to_status(partstat),
                sent_by=_address_or_none(_param(params, "SENT-BY")),
                reply_time=None,
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


def read_event(text: str | bytes) -> EventState:
    """Read the master VEVENT of an iCalendar object (a server copy or an iMIP message).

    The master is the first VEVENT without RECURRENCE-ID (else the first VEVENT); overridden
    instances are ignored. Addresses are normalised; an ATTENDEE whose value is not an
    e-mail address is skipped. PARTSTAT is read case-insensitively, a missing one is
    NEEDS-ACTION and an unknown one counts as ``invited``. When an address appears more
    than once, a real answer beats ``invited`` and, between equals, the later line wins; the
    address is listed in ``duplicates``. A missing or malformed SEQUENCE reads as 0.

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
    attendees, duplicates = _attendees(event, reply_time)
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
        organizer=_address_or_none(organizer[2]) if organizer is not None else None,
        attendees=MappingProxyType(attendees),
        duplicates=duplicates,
        method=calendar.method,
        comment="\n".join(comments) if comments else None,
    )


# --------------------------------------------------------------------------- editing


def _fold(line: str, newline: str) -> str:
    """Fold a logical line at 75 octets without splitting a UTF-8 sequence (RFC 5545 §3.1)."""
    if line.isascii():
        # One octet a character: slice (75 on the first line, 74 after the space).
        if len(line) <= 75:
            return line
        rest = [line[i : i + 74] for i in range(75, len(line), 74)]
        return (newline + " ").join([line[:75], *rest])
    pieces: list[str] = []
    current: list[str] = []
    size, limit = 0, 75
    for char in line:
        width = len(char.encode("utf-8", "surrogatepass"))
        if size + width > limit:
            pieces.append("".join(current))
            current, size, limit = [], 0, 74  # continuation lines start with a space
        current.append(char)
        size += width
    pieces.append("".join(current))
    return (newline + " ").join(pieces)


def _with_partstat(line: str, partstat: str) -> str:
    """``line`` (an unfolded ATTENDEE) with its PARTSTAT parameter set to ``partstat``.

    Only the PARTSTAT parameter is rewritten (or appended); every other byte of the line,
    including the quoting of CN, stays as the server or client wrote it.
    """
    match = line_re.match(line)
    if match is None:  # parseLine accepted this line already; keep the invariant visible
        raise ICalError(f"cannot edit content line {line[:40]!r}")
    params_start, params_end = match.span("params")
    replacement = f";PARTSTAT={partstat}"
    found = False

    def set_value(param: re.Match[str]) -> str:
        nonlocal found
        if param.group(1).upper() != "PARTSTAT":
            return param.group(0)
        found = True
        return replacement

    params: str = params_re.sub(set_value, line[params_start:params_end])
    if not found:
        params += replacement
    return line[:params_start] + params + line[params_end:]


def _physical_lines(text: str) -> Iterable[tuple[str, str]]:
    """(content, line ending) pairs; the last ending may be empty."""
    parts = _LINE_BREAK.split(text)
    endings = _LINE_BREAK.findall(text)
    return zip(parts, [*endings, ""], strict=True)


def set_partstats(text: str | bytes, partstats: Mapping[str, str]) -> str:
    """Return the calendar with the given attendees' PARTSTAT replaced, all else untouched.

    ``partstats`` maps addresses (any spelling) to PARTSTAT tokens. Every ATTENDEE line of
    that address in every VEVENT (master and overridden instances, never a VALARM) is
    rewritten; SEQUENCE and every other line keep their exact bytes. Raises ``ValueError``
    for an address that is not an attendee of the event or a PARTSTAT that is not a token,
    and :class:`ICalError` for data :func:`read_event` cannot read.
    """
    source = _as_text(text)
    state = read_event(source)
    wanted = {
        normalise_address(address): _check_token(partstat, "PARTSTAT")
        for address, partstat in partstats.items()
    }
    missing = sorted(set(wanted) - set(state.attendees))
    if missing:
        raise ValueError(f"not attendees of {state.uid}: {', '.join(missing)}")
    if not wanted:
        return source

    # Group physical lines into logical ones, remembering each one's exact source text.
    logical: list[tuple[str, list[tuple[str, str]]]] = []
    for content, ending in _physical_lines(source):
        if content[:1] in (" ", "\t") and logical:
            unfolded, physical = logical[-1]
            logical[-1] = (unfolded + content[1:], [*physical, (content, ending)])
        else:
            logical.append((content, [(content, ending)]))

    out: list[str] = []
    stack: list[str] = []
    done = False  # read_event reads the first calendar object only; edit no further
    for unfolded, physical in logical:
        original = "".join(content + ending for content, ending in physical)
        if done or not unfolded.strip():
            out.append(original)
            continue
        # read_event has parsed these very lines, so parseLine cannot fail here.
        name, _params, value, _group = parseLine(unfolded)
        name = name.upper()
        if name == "BEGIN":
            stack.append(value.strip().upper())
        elif name == "END":
            stack.pop()
            done = not stack
        elif name == "ATTENDEE" and stack[1:] == ["VEVENT"]:
            address = _address_or_none(value)
            if address in wanted:
                newline = next((end for _content, end in physical if end), "\r\n")
                edited = _fold(_with_partstat(unfolded, wanted[address]), newline)
                out.append(edited + physical[-1][1])
                continue
        out.append(original)
    return "".join(out)
