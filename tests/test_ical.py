"""Tests for tmcaldav.ical: building a session's VEVENT and reading the answers back.

Built calendars are checked with the independent ``icalendar`` library as well as with
``read_event``; odd real-world files live in tests/data/ical/ with their expected outcome below.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tmcaldav.domain import ICONS, CalendarStatus, values
from tmcaldav.ical import (
    PARTSTAT_TO_STATUS,
    STATUS_TO_PARTSTAT,
    Attendee,
    EventSpec,
    EventState,
    ICalError,
    build_calendar,
    calendar_address,
    normalise_address,
    normalise_name,
    partstat_to_status,
    read_event,
    session_uid,
    set_partstats,
)

DATA = Path(__file__).parent / "data" / "ical"
BERLIN = ZoneInfo("Europe/Berlin")


def make_spec(**changes: Any) -> EventSpec:
    spec = EventSpec(
        uid="tmcaldav-TM-2026-0412@example.org",
        summary="Time management",
        start=datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN),
        end=datetime(2026, 12, 1, 17, 0, tzinfo=BERLIN),
        tz="Europe/Berlin",
        sequence=0,
        dtstamp=datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        status="CONFIRMED",
        organizer_email="Training@Example.org",
        organizer_name="Training Office",
        attendees=(
            Attendee("ann@example.org", "Ann Lee"),
            Attendee("bob@example.org", "Bob", partstat="ACCEPTED", rsvp=False),
        ),
    )
    return dataclasses.replace(spec, **changes)


# icalendar's property accessors return wide unions; the checks below read them as Any.
def parse_independently(text: str) -> Any:
    return icalendar.Calendar.from_ical(text)


def the_event(calendar: Any) -> Any:
    (event,) = calendar.walk("VEVENT")
    return event


def logical_lines(text: str) -> list[str]:
    return re.sub(r"\r\n[ \t]", "", text).split("\r\n")


def read_corpus_text(name: str) -> str:
    """A corpus file as text with its line endings untouched (read_text would turn CRLF
    into LF)."""
    return (DATA / name).read_bytes().decode("utf-8")


def event_text(*lines: str, calendar_lines: tuple[str, ...] = ()) -> str:
    body = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//test//EN",
        *calendar_lines,
        "BEGIN:VEVENT",
        *lines,
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(body) + "\r\n"


# --------------------------------------------------------------------------- constants


def test_every_calendar_status_has_an_icon() -> None:
    assert list(ICONS) == list(values(CalendarStatus))
    assert ICONS["accepted"] == "✓"
    assert ICONS["not_invited"] == "—"


def test_partstat_maps_are_inverse_and_leave_out_not_invited() -> None:
    assert {STATUS_TO_PARTSTAT[status] for status in PARTSTAT_TO_STATUS.values()} == set(
        PARTSTAT_TO_STATUS
    )
    assert set(STATUS_TO_PARTSTAT) == set(values(CalendarStatus)) - {"not_invited"}
    assert STATUS_TO_PARTSTAT["invited"] == "NEEDS-ACTION"
    assert PARTSTAT_TO_STATUS["DELEGATED"] == "delegated"


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MAILTO:Ann@Example.ORG", "ann@example.org"),
        ("mailto:ann@example.org", "ann@example.org"),
        ("MailTo: ann@example.org ", "ann@example.org"),
        ("  Ann.Lee+training@Example.org\n", "ann.lee+training@example.org"),
        ("Jürgen@Bücher.Example", "jürgen@bücher.example"),
    ],
)
def test_normalise_address(raw: str, expected: str) -> None:
    assert normalise_address(raw) == expected
    assert calendar_address(raw) == "mailto:" + expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "mailto:",
        "ann",
        "ann example.org",
        "ann @example.org",
        "ann@exa mple.org",
        "ann@exa\nmple.org",
        "Ann <ann@example.org>",
        '"ann"@example.org',
        "ann@",
        "@example.org",
        "ann@b@example.org",
        "ann@example..org",
        "ann@.example.org",
        "mailto:mailto:ann@example.org",
        "urn:uuid:1f0c4e7a-7b59-4c43-9d9a-9a5a4f1b6d10",
        "ann@example.org,bob@example.org",
    ],
)
def test_normalise_address_refuses_what_is_not_an_address(raw: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        normalise_address(raw)


def _respell(address: str, flips: list[bool]) -> str:
    return (
        "".join(char.upper() if flip else char for char, flip in zip(address, flips, strict=False))
        + address[len(flips) :]
    )


@given(
    email=st.emails(),
    prefix=st.sampled_from(["", "mailto:", "MAILTO:", "MailTo:", " mailto: "]),
    flips=st.lists(st.booleans(), max_size=80),
)
def test_any_spelling_of_an_address_normalises_to_one_form(
    email: str, prefix: str, flips: list[bool]
) -> None:
    expected = email.lower()
    assert normalise_address(prefix + _respell(email, flips) + " ") == expected
    assert normalise_address(expected) == expected


@pytest.mark.parametrize(
    ("partstat", "status"),
    [
        ("NEEDS-ACTION", "invited"),
        ("ACCEPTED", "accepted"),
        ("accepted", "accepted"),
        ("tentative", "tentative"),
        (" Declined ", "declined"),
        ("DELEGATED", "delegated"),
        ("X-FOO", "invited"),
        ("", "invited"),
        (None, "invited"),
    ],
)
def test_partstat_to_status(partstat: str | None, status: str) -> None:
    assert partstat_to_status(partstat) == status


# --------------------------------------------------------------------------- UIDs


def test_session_uid_of_a_plain_key_is_readable() -> None:
    assert session_uid("TM-2026-0412", "Training@Example.ORG") == (
        "tmcaldav-TM-2026-0412@example.org"
    )


def test_session_uid_makes_awkward_keys_safe_and_keeps_them_apart() -> None:
    keys = ["TM 2026/04", "TM-2026-04", "TM_2026_04", "TM/2026/04", "tm 2026/04", "TM 2026/04 "]
    uids = [session_uid(key, "training@example.org") for key in keys]
    assert len(set(uids)) == len(keys)
    assert uids[1] == "tmcaldav-TM-2026-04@example.org"
    assert re.fullmatch(r"tmcaldav-TM-2026-04_[0-9a-f]{16}@example\.org", uids[0])
    assert session_uid("TM 2026/04", "TRAINING@example.org") == uids[0]


def test_session_uid_bounds_a_long_key() -> None:
    uid = session_uid("K" * 500, "training@example.org")
    assert re.fullmatch(r"tmcaldav-K{64}_[0-9a-f]{16}@example\.org", uid)


def test_session_uid_refuses_an_empty_key_or_a_bad_organizer() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        session_uid("", "training@example.org")
    with pytest.raises(ValueError, match="not an e-mail address"):
        session_uid("TM-1", "training")


@given(first=st.text(min_size=1), second=st.text(min_size=1))
def test_session_uid_is_url_safe_deterministic_and_distinct(first: str, second: str) -> None:
    uid = session_uid(first, "training@example.org")
    assert re.fullmatch(r"tmcaldav-[A-Za-z0-9._-]+@example\.org", uid)
    assert session_uid(first, "Training@Example.org") == uid
    assert (session_uid(second, "training@example.org") == uid) == (first == second)


# --------------------------------------------------------------------------- build: format


def test_calendar_header_and_line_format() -> None:
    text = build_calendar(make_spec(attendees=(Attendee("ann@example.org", "A" * 120),)))
    assert text.startswith("BEGIN:VCALENDAR\r\n")
    assert text.endswith("END:VCALENDAR\r\n")
    physical = text.split("\r\n")[:-1]
    assert "\n" not in "".join(physical) and "\r" not in "".join(physical)
    assert all(len(line.encode("utf-8")) <= 75 for line in physical)
    assert any(line.startswith(" ") for line in physical), "the long CN must be folded"
    lines = logical_lines(text)
    for expected in ("PRODID:-//tmcaldav//tmcaldav//EN", "VERSION:2.0", "CALSCALE:GREGORIAN"):
        assert expected in lines
    assert not any(line.startswith("METHOD") for line in lines)
    assert "METHOD:REQUEST" in logical_lines(build_calendar(make_spec(), method="request"))


def test_event_properties_read_by_an_independent_parser() -> None:
    spec = make_spec(
        sequence=3,
        description="Bring a laptop, a charger; and questions.\nSecond line",
        location="Room 1, Building B",
        attendees=(
            Attendee("Ann@Example.ORG", "Lee, Ann"),
            Attendee("bob@example.org", None, partstat="accepted", rsvp=False),
        ),
    )
    event = the_event(parse_independently(build_calendar(spec)))
    assert str(event["UID"]) == spec.uid
    assert event["DTSTAMP"].dt == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert event["SEQUENCE"] == 3
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Time management"
    assert str(event["DESCRIPTION"]) == spec.description
    assert str(event["LOCATION"]) == spec.location
    assert str(event["ORGANIZER"]) == "mailto:training@example.org"
    assert event["ORGANIZER"].params["CN"] == "Training Office"
    ann, bob = event["ATTENDEE"]
    assert str(ann) == "mailto:ann@example.org"
    assert dict(ann.params) == {
        "CN": "Lee, Ann",
        "CUTYPE": "INDIVIDUAL",
        "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "NEEDS-ACTION",
        "RSVP": "TRUE",
    }
    assert str(bob) == "mailto:bob@example.org"
    assert dict(bob.params) == {
        "CUTYPE": "INDIVIDUAL",
        "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "ACCEPTED",
        "RSVP": "FALSE",
    }


def test_optional_properties_are_left_out() -> None:
    lines = logical_lines(build_calendar(make_spec(organizer_name=None)))
    assert not any(line.startswith(("DESCRIPTION", "LOCATION")) for line in lines)
    assert "ORGANIZER:mailto:training@example.org" in lines


def test_schedule_agent_client_marks_every_attendee_but_not_the_organizer() -> None:
    lines = logical_lines(build_calendar(make_spec(schedule_agent_client=True)))
    attendees = [line for line in lines if line.startswith("ATTENDEE")]
    assert len(attendees) == 2
    assert all(";SCHEDULE-AGENT=CLIENT" in line for line in attendees)
    assert not any("SCHEDULE-AGENT" in line for line in lines if line.startswith("ORGANIZER"))


def test_force_send_marks_only_the_listed_attendees() -> None:
    spec = make_spec(force_send=frozenset({"MAILTO:Bob@Example.org"}))
    lines = logical_lines(build_calendar(spec))
    (forced,) = [line for line in lines if "SCHEDULE-FORCE-SEND=REQUEST" in line]
    assert forced.endswith(":mailto:bob@example.org")
    assert not any("SCHEDULE-AGENT" in line for line in lines)


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL", "request"])
@pytest.mark.parametrize(
    "changes",
    [{"schedule_agent_client": True}, {"force_send": frozenset({"ann@example.org"})}],
)
def test_itip_messages_never_carry_scheduling_parameters(
    method: str, changes: dict[str, Any]
) -> None:
    spec = make_spec(**changes)
    assert "SCHEDULE-" in build_calendar(spec), "the server copy does carry them"
    text = build_calendar(spec, method=method)
    assert "SCHEDULE-" not in text
    assert f"METHOD:{method.upper()}" in logical_lines(text)


def test_microseconds_are_dropped() -> None:
    spec = make_spec(
        start=datetime(2026, 12, 1, 9, 0, 0, 999_999, tzinfo=BERLIN),
        dtstamp=datetime(2026, 11, 1, 10, 0, 0, 500_000, tzinfo=UTC),
    )
    state = read_event(build_calendar(spec))
    assert state.start == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert state.dtstamp == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "method", "message"),
    [
        ({"start": datetime(2026, 12, 1, 9, 0)}, None, "start must be an aware datetime"),
        ({"dtstamp": datetime(2026, 12, 1, 9, 0)}, None, "dtstamp must be an aware"),
        ({"end": datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN)}, None, "must be after start"),
        ({"end": datetime(2026, 12, 1, 8, 0, tzinfo=BERLIN)}, None, "must be after start"),
        ({"tz": "Mars/Olympus_Mons"}, None, "unknown time zone"),
        ({"tz": "Europe"}, None, "unknown time zone"),
        ({"tz": "../etc/passwd"}, None, "unknown time zone"),
        ({"status": "TENTATIVE"}, None, "CONFIRMED or CANCELLED"),
        ({"sequence": -1}, None, "must not be negative"),
        ({"uid": ""}, None, "uid must be"),
        ({"uid": "a\nb"}, None, "uid must be"),
        ({"organizer_email": "office"}, None, "not an e-mail address"),
        ({"attendees": (Attendee("ann", None),)}, None, "not an e-mail address"),
        (
            {"attendees": (Attendee("ann@example.org", None), Attendee("ANN@example.org", "A"))},
            None,
            "more than once: ann@example.org",
        ),
        (
            {"attendees": (Attendee("ann@example.org", None, partstat="NEEDS ACTION"),)},
            None,
            "PARTSTAT must be a token",
        ),
        ({"force_send": frozenset({"eve@example.org"})}, None, "not attendees: eve@example.org"),
        (
            {"force_send": frozenset({"ann@example.org"}), "schedule_agent_client": True},
            None,
            "cannot be combined",
        ),
        ({}, "INVITE", "unknown iTIP method"),
    ],
)
def test_build_refuses_an_inconsistent_spec(
    changes: dict[str, Any], method: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_calendar(make_spec(**changes), method=method)


def test_status_is_upper_cased() -> None:
    assert read_event(build_calendar(make_spec(status="cancelled"))).status == "CANCELLED"


# --------------------------------------------------------------------------- build: time zones

BERLIN_VTIMEZONE = """\
BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:STANDARD
DTSTART:20251026T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZNAME:CET
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:20250330T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZNAME:CEST
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
"""

NEW_YORK_VTIMEZONE = """\
BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:STANDARD
DTSTART:20251102T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
TZNAME:EST
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:20250309T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
TZNAME:EDT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
END:DAYLIGHT
END:VTIMEZONE
"""


def _vtimezone_block(text: str) -> str:
    lines = logical_lines(text)
    first, last = lines.index("BEGIN:VTIMEZONE"), lines.index("END:VTIMEZONE")
    return "\n".join(lines[first : last + 1]) + "\n"


@pytest.mark.parametrize(
    ("zone", "expected"),
    [("Europe/Berlin", BERLIN_VTIMEZONE), ("America/New_York", NEW_YORK_VTIMEZONE)],
)
def test_vtimezone_has_the_textbook_rules(zone: str, expected: str) -> None:
    # Onsets in wall time before the change: 02:00 when clocks spring forward, and 03:00
    # (Berlin) / 02:00 (New York) when they fall back.
    tz = ZoneInfo(zone)
    spec = make_spec(
        tz=zone,
        start=datetime(2026, 12, 1, 9, 0, tzinfo=tz),
        end=datetime(2026, 12, 1, 17, 0, tzinfo=tz),
    )
    text = build_calendar(spec)
    assert _vtimezone_block(text) == expected
    lines = logical_lines(text)
    assert f"DTSTART;TZID={zone}:20261201T090000" in lines
    assert f"DTEND;TZID={zone}:20261201T170000" in lines


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "GMT"])
def test_utc_sessions_have_no_vtimezone_and_z_times(zone: str) -> None:
    spec = make_spec(
        tz=zone,
        start=datetime(2026, 12, 1, 9, 0, tzinfo=BERLIN),
        end=datetime(2026, 12, 1, 17, 0, tzinfo=BERLIN),
    )
    text = build_calendar(spec)
    assert "VTIMEZONE" not in text
    assert "TZID" not in text
    lines = logical_lines(text)
    assert "DTSTART:20261201T080000Z" in lines
    assert "DTEND:20261201T160000Z" in lines


def test_zone_without_dst_has_one_observance() -> None:
    tz = ZoneInfo("Asia/Kolkata")
    spec = make_spec(
        tz="Asia/Kolkata",
        start=datetime(2026, 12, 1, 9, 0, tzinfo=tz),
        end=datetime(2026, 12, 1, 17, 0, tzinfo=tz),
    )
    block = _vtimezone_block(build_calendar(spec))
    assert block == (
        "BEGIN:VTIMEZONE\nTZID:Asia/Kolkata\nBEGIN:STANDARD\nDTSTART:20250101T053000\n"
        "TZNAME:IST\nTZOFFSETFROM:+0530\nTZOFFSETTO:+0530\nEND:STANDARD\nEND:VTIMEZONE\n"
    )


def _instants_by_independent_parser(text: str) -> tuple[datetime, datetime]:
    """DTSTART/DTEND instants computed by icalendar from the VTIMEZONE we wrote (not from its
    own zone database, which would hide a wrong VTIMEZONE)."""
    calendar = parse_independently(text)
    event = the_event(calendar)
    zones = calendar.walk("VTIMEZONE")
    instants = []
    for name in ("DTSTART", "DTEND"):
        prop = event[name]
        if "TZID" in prop.params:
            (vtimezone,) = zones
            assert prop.params["TZID"] == str(vtimezone["TZID"])
            wall = prop.dt.replace(tzinfo=None)
            instants.append(wall.replace(tzinfo=vtimezone.to_tz(lookup_tzid=False)))
        else:
            assert prop.dt.tzinfo is not None and prop.dt.utcoffset() == timedelta(0)
            instants.append(prop.dt)
    return instants[0], instants[1]


@pytest.mark.parametrize(
    ("zone", "start_utc", "wall"),
    [
        # 03:30 on the fall-back Sunday exists once, in CET (vobject's own VTIMEZONE
        # put the onset at 04:00 and read this as CEST).
        ("Europe/Berlin", datetime(2026, 10, 25, 2, 30, tzinfo=UTC), "20261025T033000"),
        ("Europe/Berlin", datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "20260329T033000"),
        ("America/New_York", datetime(2026, 11, 1, 7, 30, tzinfo=UTC), "20261101T023000"),
        # A DST rule that ended inside the window: the last onset must still count.
        ("Europe/Moscow", datetime(1990, 6, 9, 10, 34, 35, tzinfo=UTC), "19900609T143435"),
        # Half-hour DST shift.
        ("Australia/Lord_Howe", datetime(2026, 4, 5, 0, 0, tzinfo=UTC), "20260405T103000"),
        # No DST, but the offset changes after the session: the VTIMEZONE needs the offset
        # in force before that change too.
        ("America/Caracas", datetime(2007, 6, 1, 12, 0, tzinfo=UTC), "20070601T080000"),
        ("Europe/Moscow", datetime(2014, 6, 1, 12, 0, tzinfo=UTC), "20140601T160000"),
    ],
)
def test_vtimezone_around_transitions(zone: str, start_utc: datetime, wall: str) -> None:
    spec = make_spec(tz=zone, start=start_utc, end=start_utc + timedelta(hours=1))
    text = build_calendar(spec)
    assert f"DTSTART;TZID={zone}:{wall}" in logical_lines(text)
    assert _instants_by_independent_parser(text) == (spec.start, spec.end)
    state = read_event(text)
    assert (state.start, state.end) == (spec.start, spec.end)


@pytest.mark.parametrize(
    ("start_utc", "first_line"),
    [
        # 02:30 happens twice in Berlin on 2026-10-25: readers disagree on which one a TZID
        # time means, so both are written in UTC.
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "DTSTART:20261025T003000Z"),
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "DTSTART:20261025T013000Z"),
        (datetime(2026, 10, 25, 2, 0, tzinfo=UTC), "DTSTART;TZID=Europe/Berlin:20261025T030000"),
        (datetime(2026, 10, 24, 23, 59, tzinfo=UTC), "DTSTART;TZID=Europe/Berlin:20261025T015900"),
    ],
)
def test_ambiguous_wall_time_keeps_the_instant(start_utc: datetime, first_line: str) -> None:
    spec = make_spec(start=start_utc, end=start_utc + timedelta(minutes=30))
    text = build_calendar(spec)
    assert first_line in logical_lines(text)
    assert _instants_by_independent_parser(text) == (spec.start, spec.end)
    assert read_event(text).start == start_utc


ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Africa/Casablanca",
    "America/Sao_Paulo",
    "America/St_Johns",
    "Pacific/Chatham",
    "Europe/Dublin",
    "Europe/Moscow",
    "Antarctica/Troll",
    "Pacific/Apia",
    "UTC",
]


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    length=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=3)),
)
def test_times_survive_any_zone(zone: str, start: datetime, length: timedelta) -> None:
    start = start.replace(microsecond=0)
    end = start + timedelta(seconds=int(length.total_seconds()))
    spec = make_spec(tz=zone, start=start, end=end)
    text = build_calendar(spec)
    assert _instants_by_independent_parser(text) == (start, end)
    state = read_event(text)
    assert (state.start, state.end) == (start, end)
    # Radicale parses and re-serialises with vobject; the instants must survive that too.
    again = read_event(vobject.readOne(text).serialize())
    assert (again.start, again.end) == (start, end)


@pytest.mark.parametrize("zone", ["Africa/Casablanca", "Asia/Gaza", "Europe/Berlin"])
def test_vobject_reads_the_vtimezone(zone: str) -> None:
    # Casablanca and Gaza change irregularly, so their VTIMEZONE lists RDATEs; vobject once
    # choked on a comma-separated RDATE list there.
    start = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    text = build_calendar(make_spec(tz=zone, start=start, end=start + timedelta(hours=2)))
    assert "RDATE" in text or zone == "Europe/Berlin"
    event = vobject.readOne(text).vevent
    assert event.dtstart.value.astimezone(ZoneInfo(zone)).utcoffset() is not None
    assert read_event(vobject.readOne(text).serialize()).start == start


# --------------------------------------------------------------------------- names and text


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ('Ann "Nancy" Lee', "Ann 'Nancy' Lee"),
        ("Ann\r\nLee", "Ann Lee"),
        ("Ann\n\n\tLee", "Ann Lee"),
        ("Ann\u2028Lee", "Ann Lee"),
        ("Ann\x00Lee", "Ann Lee"),
        ("  Ann  Lee  ", "Ann  Lee"),
        ("O'Brien, Seán; Jr.: PhD", "O'Brien, Seán; Jr.: PhD"),
        ("^n and ^' and ^^", "^n and ^' and ^^"),
        ("山田\u3000太郎", "山田\u3000太郎"),
        ("   ", None),
        ("\n", None),
        (None, None),
    ],
)
def test_normalise_name(name: str | None, written: str | None) -> None:
    assert normalise_name(name) == written


def test_names_that_need_quoting_are_quoted() -> None:
    spec = make_spec(attendees=(Attendee("ann@example.org", 'Lee; Ann: Dr., "Nan" ^n'),))
    (line,) = [line for line in logical_lines(build_calendar(spec)) if line.startswith("ATTENDEE")]
    assert line.startswith("ATTENDEE;CN=\"Lee; Ann: Dr., 'Nan' ^^n\";")


@settings(max_examples=200, deadline=None)
@given(attendee_name=st.text(), organizer_name=st.text())
@example(attendee_name="^n ^' ^^ ^x ^", organizer_name="O^'Neil")
@example(attendee_name="0 =", organizer_name="a = b")
def test_any_name_survives_a_round_trip(attendee_name: str, organizer_name: str) -> None:
    spec = make_spec(
        organizer_name=organizer_name,
        attendees=(Attendee("Ann@Example.org", attendee_name),),
    )
    text = build_calendar(spec)
    expected = normalise_name(attendee_name)
    assert read_event(text).attendees["ann@example.org"].name == expected
    event = the_event(parse_independently(text))
    assert event["ATTENDEE"].params.get("CN") == expected
    assert event["ORGANIZER"].params.get("CN") == normalise_name(organizer_name)


# TEXT values keep line breaks (escaped as \n); only ASCII control characters are illegal.
# (codec="utf-8" also keeps lone surrogates out.)
clean_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r").filter(
        lambda char: char in "\n\t" or not (char < " " or char == "\x7f")
    )
)


@settings(max_examples=150, deadline=None)
@given(summary=clean_text, description=clean_text, location=clean_text)
def test_any_text_survives_a_round_trip(summary: str, description: str, location: str) -> None:
    text = build_calendar(make_spec(summary=summary, description=description, location=location))
    assert read_event(text).summary == summary
    event = the_event(parse_independently(text))
    assert str(event["SUMMARY"]) == summary
    assert str(event["DESCRIPTION"]) == description
    assert str(event["LOCATION"]) == location


def test_control_characters_in_text_become_spaces_and_cr_becomes_a_line_break() -> None:
    text = build_calendar(make_spec(summary="a\x00b\x1bc\r\nd\re\tf"))
    assert read_event(text).summary == "a b c\nd\ne\tf"


# --------------------------------------------------------------------------- read_event


def test_read_event_of_a_built_calendar() -> None:
    spec = make_spec(sequence=2, attendees=(*make_spec().attendees, Attendee("c@x.org", None)))
    state = read_event(build_calendar(spec, method="REQUEST"))
    assert state == EventState(
        uid=spec.uid,
        sequence=2,
        dtstamp=datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        status="CONFIRMED",
        summary="Time management",
        start=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        end=datetime(2026, 12, 1, 16, 0, tzinfo=UTC),
        organizer="training@example.org",
        attendees=state.attendees,
        duplicates=(),
        method="REQUEST",
        comment=None,
    )
    assert [(a.email, a.name, a.partstat, a.calendar_status) for a in state.attendees.values()] == [
        ("ann@example.org", "Ann Lee", "NEEDS-ACTION", "invited"),
        ("bob@example.org", "Bob", "ACCEPTED", "accepted"),
        ("c@x.org", None, "NEEDS-ACTION", "invited"),
    ]


def test_bytes_and_text_read_the_same() -> None:
    text = build_calendar(make_spec())
    assert read_event(text.encode("utf-8")) == read_event(text)


def test_attendees_cannot_be_changed_through_the_state() -> None:
    state = read_event(build_calendar(make_spec()))
    with pytest.raises(TypeError):
        state.attendees["eve@example.org"] = state.attendees["ann@example.org"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("param", "partstat", "status"),
    [
        (";PARTSTAT=tentative", "TENTATIVE", "tentative"),
        (";PARTSTAT=Accepted", "ACCEPTED", "accepted"),
        (";PARTSTAT=X-FOO", "X-FOO", "invited"),
        (";PARTSTAT=IN-PROCESS", "IN-PROCESS", "invited"),
        ("", "NEEDS-ACTION", "invited"),
        (";partstat=declined", "DECLINED", "declined"),
    ],
)
def test_partstat_spellings(param: str, partstat: str, status: str) -> None:
    state = read_event(event_text("UID:p@x", f"ATTENDEE{param}:MAILTO:Ann@Example.ORG"))
    assert list(state.attendees) == ["ann@example.org"]
    answer = state.attendees["ann@example.org"]
    assert (answer.partstat, answer.calendar_status) == (partstat, status)


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ("NEEDS-ACTION", "ACCEPTED", "ACCEPTED"),
        ("ACCEPTED", "NEEDS-ACTION", "ACCEPTED"),
        ("DECLINED", "X-FOO", "DECLINED"),
        ("ACCEPTED", "DECLINED", "DECLINED"),
        ("DECLINED", "TENTATIVE", "TENTATIVE"),
        ("DELEGATED", "ACCEPTED", "ACCEPTED"),
        ("NEEDS-ACTION", "X-FOO", "X-FOO"),
    ],
)
def test_duplicate_addresses_keep_the_most_advanced_answer(
    first: str, second: str, kept: str
) -> None:
    state = read_event(
        event_text(
            "UID:d@x",
            f"ATTENDEE;PARTSTAT={first}:mailto:ann@example.org",
            "ATTENDEE:mailto:bob@example.org",
            f"ATTENDEE;PARTSTAT={second}:MAILTO:ANN@example.org",
        )
    )
    assert list(state.attendees) == ["ann@example.org", "bob@example.org"]
    assert state.attendees["ann@example.org"].partstat == kept
    assert state.duplicates == ("ann@example.org",)


def test_two_hundred_attendees() -> None:
    partstats = ["NEEDS-ACTION", "ACCEPTED", "TENTATIVE", "DECLINED", "DELEGATED"]
    attendees = tuple(
        Attendee(f"Student{i:03d}@Example.org", f"Student {i}, Jr.", partstat=partstats[i % 5])
        for i in range(200)
    )
    state = read_event(build_calendar(make_spec(attendees=attendees)))
    assert list(state.attendees) == [f"student{i:03d}@example.org" for i in range(200)]
    assert [answer.partstat for answer in state.attendees.values()] == [
        partstats[i % 5] for i in range(200)
    ]
    assert state.attendees["student199@example.org"].name == "Student 199, Jr."
    assert state.duplicates == ()


def test_missing_sequence_is_zero_and_duration_gives_the_end() -> None:
    state = read_event(event_text("UID:s@x", "DTSTART:20260412T070000Z", "DURATION:PT1H30M"))
    assert state.sequence == 0
    assert state.end == datetime(2026, 4, 12, 8, 30, tzinfo=UTC)


def test_start_without_end_or_duration_ends_at_start() -> None:
    state = read_event(event_text("UID:s@x", "DTSTART:20260412T070000Z"))
    assert state.end == state.start == datetime(2026, 4, 12, 7, 0, tzinfo=UTC)


def test_reply_time_belongs_to_a_single_attendee_only() -> None:
    lines = ("UID:r@x", "X-MICROSOFT-CDO-REPLYTIME:20260329T081459Z")
    single = read_event(event_text(*lines, "ATTENDEE;PARTSTAT=ACCEPTED:mailto:a@x.org"))
    assert single.attendees["a@x.org"].reply_time == datetime(2026, 3, 29, 8, 14, 59, tzinfo=UTC)
    double = read_event(event_text(*lines, "ATTENDEE:mailto:a@x.org", "ATTENDEE:mailto:b@x.org"))
    assert [answer.reply_time for answer in double.attendees.values()] == [None, None]


def test_unknown_tzid_without_vtimezone_gives_no_start() -> None:
    state = read_event(event_text("UID:t@x", "DTSTART;TZID=Mars/Olympus:20260412T070000"))
    assert state.start is None


# --------------------------------------------------------------------------- corpus

_ANN_REPLY_TIME = datetime(2026, 3, 29, 8, 14, 59, tzinfo=UTC)
_DTSTAMP = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
_APRIL_12 = (datetime(2026, 4, 12, 7, 0, tzinfo=UTC), datetime(2026, 4, 12, 15, 0, tzinfo=UTC))


def _expect(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sequence": 0,
        "dtstamp": _DTSTAMP,
        "status": None,
        "summary": None,
        "start": _APRIL_12[0],
        "end": _APRIL_12[1],
        "organizer": None,
        "duplicates": (),
        "method": None,
        "comment": None,
        "attendees": [],
    }
    return base | fields


# Each file's full expected outcome: an ICalError message fragment, or every EventState
# field with attendees as (email, name, partstat, calendar_status, sent_by, reply_time).
CORPUS: dict[str, str | dict[str, Any]] = {
    "outlook_reply.ics": _expect(
        uid="tmcaldav-TM-2026-0412@example.org",
        sequence=2,
        dtstamp=datetime(2026, 3, 29, 8, 15, 3, tzinfo=UTC),
        status="CONFIRMED",
        summary="Accepted: Time management",
        method="REPLY",
        comment="See you there, bringing a colleague\n",
        # Windows zone name, resolved through the file's own VTIMEZONE (CEST)
        attendees=[("ann@example.org", "Ann Lee", "ACCEPTED", "accepted", None, _ANN_REPLY_TIME)],
    ),
    "recurring_override.ics": _expect(
        uid="weekly-standup@example.org",
        sequence=1,
        dtstamp=datetime(2026, 4, 1, 12, 0, tzinfo=UTC),
        summary="Stand-up",
        start=datetime(2026, 4, 7, 7, 0, tzinfo=UTC),
        end=datetime(2026, 4, 7, 7, 30, tzinfo=UTC),
        organizer="lead@example.org",
        attendees=[
            ("ann@example.org", None, "ACCEPTED", "accepted", None, None),
            ("bob@example.org", None, "NEEDS-ACTION", "invited", None, None),
        ],
    ),
    "only_overrides.ics": _expect(
        uid="series-1@example.org",
        sequence=3,
        dtstamp=datetime(2026, 4, 10, 12, 0, tzinfo=UTC),
        start=datetime(2026, 4, 14, 8, 0, tzinfo=UTC),
        end=datetime(2026, 4, 14, 8, 30, tzinfo=UTC),
        method="REQUEST",
        attendees=[("ann@example.org", None, "NEEDS-ACTION", "invited", None, None)],
    ),
    "lowercase_names.ics": _expect(
        uid="lower-1@example.org",
        sequence=7,
        status="CONFIRMED",
        summary="lower case, everywhere",
        start=datetime(2026, 3, 12, 13, 0, tzinfo=UTC),
        end=datetime(2026, 3, 12, 14, 30, tzinfo=UTC),
        organizer="office@example.org",
        method="REQUEST",
        attendees=[
            ("ann@example.org", "Ann", "TENTATIVE", "tentative", None, None),
            ("bob@example.org", None, "ACCEPTED", "accepted", None, None),
            ("carol@example.org", None, "X-FOO", "invited", None, None),
            ("dave@example.org", None, "NEEDS-ACTION", "invited", None, None),
        ],
    ),
    "folded_long_lines.ics": _expect(
        uid="folded-1@example.org",
        summary="A very long summary that a client folded in the middle of a word and again "
        "with a tab",
        attendees=[
            (
                "max@example.org",
                "Maximiliane Alexandra Wilhelmine von und zu Hohenzollern-Sigmaringen, Dr. phil.",
                "DECLINED",
                "declined",
                None,
                None,
            ),
            ("jürgen@bücher.example", "Jürgen Weiß", "ACCEPTED", "accepted", None, None),
        ],
    ),
    "lf_only.ics": _expect(
        uid="lf-1@example.org",
        # 02:30 on the fall-back night is the first (CEST) one; 03:30 exists only in CET
        start=datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        end=datetime(2026, 10, 25, 2, 30, tzinfo=UTC),
        attendees=[("ann@example.org", None, "ACCEPTED", "accepted", None, None)],
    ),
    "duplicates.ics": _expect(
        uid="dup-1@example.org",
        duplicates=("ann@example.org", "bob@example.org", "carol@example.org"),
        attendees=[
            ("ann@example.org", "Ann", "ACCEPTED", "accepted", None, None),
            ("bob@example.org", None, "TENTATIVE", "tentative", None, None),
            ("carol@example.org", "Carol C.", "DECLINED", "declined", None, None),
            ("dave@example.org", None, "NEEDS-ACTION", "invited", None, None),
        ],
    ),
    "sabre_organizer_copy.ics": _expect(
        uid="sabre-1@example.org",
        sequence=1,
        status="CANCELLED",
        organizer="training@example.org",
        attendees=[
            ("pat@example.org", 'O"Neil, Pat', "DELEGATED", "delegated", None, None),
            ("sam@example.org", "Sam", "NEEDS-ACTION", "invited", None, None),
            (
                "boss@example.org",
                "Line\nBreak ^caret",
                "ACCEPTED",
                "accepted",
                "assistant@example.org",
                None,
            ),
        ],
    ),
    "valarm_attendee.ics": _expect(
        uid="alarm-1@example.org",
        attendees=[("ann@example.org", None, "ACCEPTED", "accepted", None, None)],
    ),
    "floating_and_date.ics": _expect(uid="float-1@example.org", dtstamp=None, start=None, end=None),
    "bom_utf8.ics": _expect(
        uid="bom-1@example.org",
        summary="Grüße aus Köln",
        start=None,
        end=None,
        attendees=[("zoe@example.org", "Zoë", "ACCEPTED", "accepted", None, None)],
    ),
    "no_vevent.ics": "holds no VEVENT",
    "no_uid.ics": "has no UID",
    "empty_uid.ics": "has no UID",
    "garbage.bin": "not UTF-8",
    "html.txt": "line 1 is not a content line",
    "empty.ics": "it is empty",
    "truncated.ics": "VEVENT is never closed",
    "bare_vevent.ics": "should be BEGIN:VCALENDAR",
    "mismatched_end.ics": "END:VTODO does not close VEVENT",
}


def _outcome(state: EventState) -> dict[str, Any]:
    fields = {
        name: getattr(state, name)
        for name in (
            "uid",
            "sequence",
            "dtstamp",
            "status",
            "summary",
            "start",
            "end",
            "organizer",
            "duplicates",
            "method",
            "comment",
        )
    }
    fields["attendees"] = [
        (a.email, a.name, a.partstat, a.calendar_status, a.sent_by, a.reply_time)
        for a in state.attendees.values()
    ]
    for email, answer in state.attendees.items():
        assert answer.email == email
    return fields


def test_every_corpus_file_has_an_expected_outcome() -> None:
    assert sorted(path.name for path in DATA.iterdir()) == sorted(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus(name: str) -> None:
    data = (DATA / name).read_bytes()
    expected = CORPUS[name]
    if isinstance(expected, str):
        with pytest.raises(ICalError, match=re.escape(expected)):
            read_event(data)
        return
    assert _outcome(read_event(data)) == expected


def test_only_the_first_calendar_object_is_read_or_edited() -> None:
    first = event_text("UID:first@x", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@example.org")
    second = event_text("UID:second@x", "ATTENDEE;PARTSTAT=DECLINED:mailto:ann@example.org")
    assert read_event(first + second).uid == "first@x"
    edited = set_partstats(first + second, {"ann@example.org": "TENTATIVE"})
    assert edited == first.replace("ACCEPTED", "TENTATIVE") + second


def test_icalerror_is_a_valueerror() -> None:
    with pytest.raises(ValueError, match="holds no VEVENT"):
        read_event("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")


# --------------------------------------------------------------------------- set_partstats


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = logical_lines(before), logical_lines(after)
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_set_partstats_changes_only_that_attendee() -> None:
    long_name = "Maximiliane Alexandra Wilhelmine von und zu Hohenzollern-Sigmaringen"
    spec = make_spec(
        sequence=4,
        attendees=(Attendee("ann@example.org", long_name), *make_spec().attendees[1:]),
    )
    before = build_calendar(spec)
    after = set_partstats(before, {"MAILTO:Ann@Example.ORG": "accepted"})
    ((old, new),) = _changed_lines(before, after)
    assert new == old.replace("PARTSTAT=NEEDS-ACTION", "PARTSTAT=ACCEPTED")
    assert all(len(line.encode()) <= 75 for line in after.split("\r\n"))
    state = read_event(after)
    assert state.sequence == 4
    assert {email: a.partstat for email, a in state.attendees.items()} == {
        "ann@example.org": "ACCEPTED",
        "bob@example.org": "ACCEPTED",
    }
    assert state.attendees["ann@example.org"].name == long_name


def test_set_partstats_keeps_other_bytes_of_a_foreign_file() -> None:
    source = read_corpus_text("lowercase_names.ics")
    after = set_partstats(source, {"ann@example.org": "DECLINED", "Dave@Example.org": "TENTATIVE"})
    assert _changed_lines(source, after) == [
        (
            "attendee;partstat=tentative;cn=Ann:mailto:ANN@example.org",
            "attendee;PARTSTAT=DECLINED;cn=Ann:mailto:ANN@example.org",
        ),
        ("attendee:mailto:dave@example.org", "attendee;PARTSTAT=TENTATIVE:mailto:dave@example.org"),
    ]


def test_set_partstats_on_outlook_reply_keeps_its_spelling() -> None:
    source = (DATA / "outlook_reply.ics").read_bytes()
    after = set_partstats(source, {"ann@example.org": "DECLINED"})
    assert "ATTENDEE;PARTSTAT=DECLINED;CN=Ann Lee:MAILTO:Ann@Example.ORG\r\n" in after
    assert after.replace("PARTSTAT=DECLINED", "PARTSTAT=ACCEPTED") == source.decode()


def test_set_partstats_leaves_alarm_attendees_alone() -> None:
    source = read_corpus_text("valarm_attendee.ics")
    after = set_partstats(source, {"ann@example.org": "DECLINED"})
    assert after == source.replace(
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@example.org",
        "ATTENDEE;PARTSTAT=DECLINED:mailto:ann@example.org",
    )
    with pytest.raises(ValueError, match=re.escape("not attendees of alarm-1@example.org")):
        set_partstats(source, {"reminders@example.org": "ACCEPTED"})


def test_set_partstats_updates_master_and_overrides() -> None:
    source = read_corpus_text("recurring_override.ics")
    after = set_partstats(source, {"ann@example.org": "TENTATIVE"})
    assert after.count("ATTENDEE;PARTSTAT=TENTATIVE:mailto:ann@example.org") == 2
    assert "ATTENDEE;PARTSTAT=TENTATIVE:mailto:carol@example.org" in after
    assert "PARTSTAT=DECLINED:mailto:ann" not in after


def test_set_partstats_keeps_lf_line_endings_when_folding() -> None:
    long_name = "N" * 90
    source = event_text("UID:lf@x", f"ATTENDEE;CN={long_name}:mailto:ann@example.org").replace(
        "\r\n", "\n"
    )
    after = set_partstats(source, {"ann@example.org": "ACCEPTED"})
    assert "\r" not in after
    assert "\n " in after, "the longer line must be folded, with LF"

    assert read_event(after).attendees["ann@example.org"].partstat == "ACCEPTED"
    assert all(len(line.encode()) <= 75 for line in after.split("\n"))


def test_set_partstats_is_idempotent_and_empty_changes_nothing() -> None:
    source = build_calendar(make_spec())
    once = set_partstats(source, {"bob@example.org": "DECLINED"})
    assert set_partstats(once, {"bob@example.org": "DECLINED"}) == once
    assert set_partstats(source, {}) == source


@pytest.mark.parametrize(
    ("partstats", "error", "message"),
    [
        ({"eve@example.org": "ACCEPTED"}, ValueError, "not attendees of"),
        ({"ann@example.org": "NOT VALID"}, ValueError, "PARTSTAT must be a token"),
        ({"ann": "ACCEPTED"}, ValueError, "not an e-mail address"),
    ],
)
def test_set_partstats_refuses_bad_input(
    partstats: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        set_partstats(build_calendar(make_spec()), partstats)


def test_set_partstats_refuses_what_is_not_icalendar() -> None:
    with pytest.raises(ICalError):
        set_partstats(b"\xff\xfe", {"ann@example.org": "ACCEPTED"})


@settings(max_examples=50, deadline=None)
@given(
    answers=st.lists(
        st.sampled_from(["NEEDS-ACTION", "ACCEPTED", "TENTATIVE", "DECLINED", "DELEGATED"]),
        min_size=5,
        max_size=5,
    ),
    chosen=st.sets(st.integers(min_value=0, max_value=4)),
)
def test_set_partstats_sets_exactly_the_requested_answers(
    answers: list[str], chosen: set[int]
) -> None:
    attendees = tuple(Attendee(f"s{i}@example.org", f"S {i}") for i in range(5))
    source = build_calendar(make_spec(attendees=attendees, sequence=9))
    after = set_partstats(source, {f"S{i}@Example.org": answers[i] for i in chosen})
    state = read_event(after)
    assert state.sequence == 9
    assert {email: a.partstat for email, a in state.attendees.items()} == {
        f"s{i}@example.org": answers[i] if i in chosen else "NEEDS-ACTION" for i in range(5)
    }
