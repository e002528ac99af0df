"""VTIMEZONE from zoneinfo: the observances of a zone over the years an event spans.

vobject's own VTIMEZONE puts Berlin's and New York's autumn change an hour late, so the
rules are computed here from the zone's real transitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vobject.base import (
    Component,
    ContentLine,
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
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")



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
    return _vtimezone_of(*vtimezone_key(zone_name, earliest, latest))


def vtimezone_key(
    zone_name: str, earliest: datetime, latest: datetime
) -> tuple[str, int, int, bool]:
    """All that `_vtimezone` depends on: the zone, the years it covers, and whether the
    zone's state before its first change in them is needed (sessions of one zone and
    year share a VTIMEZONE)."""
    first_year = max(earliest.year - 1, 2)  # keep clear of datetime.min when offsets apply
    last_year = min(latest.year + 1, 9998)
    _initial, *changes = _zone_history(zone_name, first_year, last_year)
    return zone_name, first_year, last_year, not changes or changes[0].instant > earliest


def _vtimezone_of(
    zone_name: str, first_year: int, last_year: int, with_initial: bool
) -> Component:
    initial, *changes = _zone_history(zone_name, first_year, last_year)
    observances = [initial, *changes] if with_initial else changes
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


