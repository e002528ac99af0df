"""Every value a user types is checked at the door: bounded numbers and ids, sane dates,
times the zone skips or repeats, CSV rows with their line numbers, control characters;
and the CLI never answers with a traceback, whatever it is given (Hypothesis)."""

from __future__ import annotations

import json
import string
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Cli


def add(tm: Cli, key: str, start: str, end: str, *extra: str):  # type: ignore[no-untyped-def]
    return tm("session", "add", key, "--title", "T", "--start", start, "--end", end, *extra)


def keys(tm: Cli) -> list[str]:
    return [s["key"] for s in json.loads(tm.ok("session", "list", "--json").output)]


def test_a_time_the_clocks_skip_is_refused_with_both_choices(tm: Cli) -> None:
    result = add(tm, "GAP", "2027-03-28T02:30", "2027-03-28T05:00", "--tz", "Europe/Berlin")
    assert result.exit_code == 1
    assert (
        "02:30 does not exist on 2027-03-28 in Europe/Berlin; use 01:30 or 03:30" in result.output
    )
    assert keys(tm) == []
    tm.ok("session", "add", "GAP", "--title", "T", "--start", "2027-03-28T01:30",
          "--end", "2027-03-28T01:50", "--tz", "Europe/Berlin")
    # An edit that would end in the gap (an IntegrityError once) is refused the same way.
    result = tm("session", "edit", "GAP", "--end", "2027-03-28T02:15")
    assert result.exit_code == 1, result.output
    assert "02:15 does not exist on 2027-03-28 in Europe/Berlin; use 01:15 or 03:15" in (
        result.output
    )
    assert "Traceback" not in result.output and "IntegrityError" not in result.output
    page = json.loads(tm.ok("session", "show", "GAP", "--json").output)
    assert page["end"] == "2027-03-28T01:50:00+01:00"


def test_a_time_the_clocks_repeat_needs_fold_or_an_offset(tm: Cli) -> None:
    result = add(tm, "FOLD", "2027-10-31T02:30", "2027-10-31T04:00", "--tz", "Europe/Berlin")
    assert result.exit_code == 1
    assert "happens twice in Europe/Berlin" in result.output
    assert "--fold 0" in result.output and "--fold 1" in result.output
    assert keys(tm) == []
    tm.ok("session", "add", "FOLD", "--title", "T", "--start", "2027-10-31T02:30",
          "--end", "2027-10-31T04:00", "--tz", "Europe/Berlin", "--fold", "1")
    page = json.loads(tm.ok("session", "show", "FOLD", "--json").output)
    assert page["start"] == "2027-10-31T02:30:00+01:00"
    tm.ok("session", "add", "OFFSET", "--title", "T", "--start", "2027-10-31T02:30+02:00",
          "--end", "2027-10-31T04:00", "--tz", "Europe/Berlin")
    assert add(tm, "BADFOLD", "2027-10-31T09:00", "2027-10-31T10:00", "--fold", "2"
               ).exit_code == 2


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ("9999-12-31T23:00-11:00", "use a date between 1970 and 2200"),
        ("0001-01-01T00:00+09:00", "use a date between 1970 and 2200"),
        ("1969-12-31T23:59", "use a date between 1970 and 2200"),
    ],
)
def test_dates_out_of_range_are_refused(tm: Cli, start: str, message: str) -> None:
    result = add(tm, "Y", start, "2027-01-01T10:00")
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output and "Overflow" not in result.output


def test_capacities_and_ids_out_of_range(tm: Cli) -> None:
    for capacity in (str(2**63), "100001", "-1"):
        result = add(tm, "C", "2027-01-04T09:00", "2027-01-04T10:00", "--capacity", capacity)
        assert result.exit_code == 1, result.output
        assert "capacity must be between 0 and 100,000 seats" in result.output
    tm.ok("session", "add", "C", "--title", "T", "--start", "2027-01-04T09:00",
          "--end", "2027-01-04T10:00", "--capacity", "100000")
    result = tm("session", "edit", "C", "--capacity", str(2**64))
    assert result.exit_code == 1 and "capacity must be between" in result.output
    for command in ("dismiss", "apply"):
        result = tm("suggestions", command, "99999999999999999999999")
        assert result.exit_code == 2, result.output
        assert "is not in the range 1<=x<=2147483647" in result.output
        assert "Traceback" not in result.output


def test_csv_rows_are_checked_with_their_line_numbers(tm: Cli, tmp_path: Path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(
        "key,title,start,end,tz,capacity\n"
        "A,x,2027-01-04T09:00,2027-01-04T10:00,Europe/Berlin,10\n"
        "B,x,2027-03-28T02:30,2027-03-28T04:00,Europe/Berlin,10\n"
        f"C,x,2027-01-04T09:00,2027-01-04T10:00,Europe/Berlin,{2**63}\n"
        "D,x,2027-10-31T02:30,2027-10-31T04:00,Europe/Berlin,10\n"
        "E,x,9999-01-01T00:00-11:00,2027-01-04T10:00,UTC,\n"
    )
    result = tm("import", str(path), "--kind", "sessions")
    assert result.exit_code == 1, result.output
    assert "line 3: 02:30 does not exist on 2027-03-28 in Europe/Berlin; use 01:30 or 03:30" in (
        result.output
    )
    assert "line 4: capacity must be a whole number between 0 and 100,000" in result.output
    assert "line 5: the start 02:30 on 2027-10-31 happens twice" in result.output
    assert "line 6: the start '9999-01-01T00:00-11:00' is out of range" in result.output
    assert "CHECK constraint" not in result.output
    assert keys(tm) == []


def test_control_characters_in_notes_are_shown_escaped(tm: Cli) -> None:
    tm.ok("person", "add", "ann@example.org", "--name", "Ann")
    tm.ok("session", "add", "N", "--title", "T", "--start", "2027-01-04T09:00",
          "--end", "2027-01-04T10:00")
    tm.ok("enroll", "N", "ann@example.org")
    tm.ok("note", "N", "ann@example.org", "ring\x07 back \x01 later \x1b[31mred")
    shown = tm.ok("session", "show", "N").output
    assert "ring\\x07 back \\x01 later \\x1b[31mred" in shown
    assert not any(c in shown for c in "\x07\x01\x1b")
    # JSON keeps the text as it was typed (escaped the JSON way).
    page = json.loads(tm.ok("session", "show", "N", "--json").output)
    assert page["students"][0]["notes"][0]["text"] == "ring\x07 back \x01 later \x1b[31mred"
    assert tm("note", "N", "ann@example.org", "x" * 2001).exit_code == 1
    # Keys and names with control characters are refused at the door.
    result = tm("session", "add", "K\x07", "--title", "T", "--start", "2027-01-04T09:00",
                "--end", "2027-01-04T10:00")
    assert result.exit_code == 1 and "control character (U+0007)" in result.output


# ---- no traceback, whatever the input --------------------------------------------------------

_text = st.one_of(
    st.text(string.printable, max_size=12),
    st.sampled_from(["", " ", "Europe/Berlin", "Mars/Base", "ann@example.org", "\x07\x01",
                     "é" * 5]),
)
_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["9" * 30, str(2**63), str(2**31), "-0", "1e3", "0x10", ""]),
)
_offset = st.sampled_from(["", "Z", "+09:00", "-11:00", "+14:00", "-12:00"])
_time = st.one_of(
    st.builds(
        lambda moment, offset: moment.isoformat(timespec="minutes") + offset,
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
        _offset,
    ),
    st.sampled_from(["2027-03-28T02:30", "2027-10-31T02:30", "2027-01-04T09:00", "soon", ""]),
)
_zone = st.sampled_from(["Europe/Berlin", "UTC", "Pacific/Kiritimati", "Mars/Base", ""])
_commands = st.one_of(
    st.tuples(st.just("session"), st.just("add"), _text, st.just("--title"), _text,
              st.just("--start"), _time, st.just("--end"), _time,
              st.just("--capacity"), _number, st.just("--tz"), _zone),
    st.tuples(st.just("session"), st.just("edit"), st.just("S"),
              st.sampled_from(["--capacity", "--fold"]), _number),
    st.tuples(st.just("session"), st.just("edit"), st.just("S"),
              st.sampled_from(["--start", "--end"]), _time, st.just("--tz"), _zone),
    st.tuples(st.just("session"), st.just("edit"), st.just("S"), st.just("--title"), _text),
    st.tuples(st.just("suggestions"), st.sampled_from(["apply", "dismiss"]), _number),
    st.tuples(st.just("person"), st.just("add"), _text, st.just("--name"), _text),
    st.tuples(st.just("enroll"), _text, _text),
    st.tuples(st.just("set-status"), st.just("S"), st.just("ann@example.org"), _text),
    st.tuples(st.just("note"), st.just("S"), _text, _text),
    st.tuples(st.just("session"), st.sampled_from(["show", "history", "cancel"]), _text),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=_commands)
def test_the_cli_never_answers_with_a_traceback(tm_sqlite: Cli, args: tuple[str, ...]) -> None:
    if "S" not in keys(tm_sqlite):
        tm_sqlite.ok("person", "add", "ann@example.org", "--name", "Ann")
        tm_sqlite.ok("session", "add", "S", "--title", "T", "--start", "2027-01-04T09:00",
                     "--end", "2027-01-04T10:00", "--tz", "Europe/Berlin")
        tm_sqlite.ok("enroll", "S", "ann@example.org")
    result = tm_sqlite(*args)
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, repr(result.exception)
    )
    assert "Traceback" not in result.output, (args, result.output)
    assert "internal error" not in result.output, (args, result.output)
