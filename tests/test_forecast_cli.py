"""The forecast through the CLI on a real store: history imported from an old system,
`report forecast` (text and JSON), the forecast line of `session show`, bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.conftest import Cli
from tests.plugin_world import answer
from tmcaldav.app import App
from tmcaldav.forecast import fit, forecast_session
from tmcaldav.store.model import utcnow

STUDENTS = ["ann", "bob", "cy", "dee"]


def when(days: float) -> str:
    return (utcnow() + timedelta(days=days)).replace(microsecond=0).isoformat()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def seed_history(tm: Cli, tmp_path: Path) -> None:
    """Ten past sessions: ann always came after accepting, bob never did."""
    people = "email,name\n" + "".join(f"{n}@example.org,{n.title()}\n" for n in STUDENTS)
    tm.ok("import", write(tmp_path / "people.csv", people), "--kind", "people")
    sessions = "key,title,start,end,capacity\n"
    rows = "session,email,status,calendar,responded_at\n"
    for i in range(10):
        start = -100 + i * 7
        sessions += f"OLD-{i},Old {i},{when(start)},{when(start + 0.1)},10\n"
        rows += f"OLD-{i},ann@example.org,attended,accepted,{when(start - 3)}\n"
        rows += f"OLD-{i},bob@example.org,no_show,accepted,{when(start - 3)}\n"
        rows += f"OLD-{i},cy@example.org,{'attended' if i % 2 else 'no_show'},invited,\n"
    sessions += f"NEXT,Next,{when(5)},{when(5.1)},3\n"
    tm.ok("import", write(tmp_path / "sessions.csv", sessions), "--kind", "sessions")
    tm.ok("import", write(tmp_path / "history.csv", rows), "--kind", "enrollments")
    tm.ok("enroll", "NEXT", "ann@example.org", "bob@example.org", "cy@example.org")


def test_history_import_feeds_the_forecast(tm: Cli, tmp_path: Path) -> None:
    seed_history(tm, tmp_path)
    history = json.loads(tm.ok("session", "history", "OLD-3", "bob@example.org", "--json").output)
    assert [(h["calendar"], h["source"]) for h in history] == [("accepted", "import")]
    [row] = json.loads(tm.ok("report", "forecast", "--json").output)
    # The CLI prints the forecast's own entries (their fields: tests/test_forecast.py).
    entry = forecast_session("NEXT", utcnow() + timedelta(days=5), 3, [], fit([]), utcnow())
    assert list(row) == list(entry)
    assert row["session"] == "NEXT" and row["enrolled"] == 3 and row["capacity"] == 3
    chance = {s["email"]: s["p_attend"] for s in row["students"]}
    # Nobody has answered NEXT: each has the organisation's rate for a silent student.
    assert chance["ann@example.org"] == chance["bob@example.org"]
    # Both accept: their own records after accepting now separate them.
    store = App(str(tm.config)).store
    for email in ("ann@example.org", "bob@example.org"):
        answer(store, "NEXT", email, "accepted")
    [row] = json.loads(tm.ok("report", "forecast", "NEXT", "--json").output)
    chance = {s["email"]: s["p_attend"] for s in row["students"]}
    assert chance["ann@example.org"] > 0.8 > 0.2 > chance["bob@example.org"]
    assert row["students"][0]["email"] == "bob@example.org"  # least likely first
    store.close()
    assert all(0 <= p <= 1 for p in chance.values())
    assert row["low"] <= row["expected"] <= row["high"] + 1
    assert abs(row["expected"] - sum(chance.values())) < 0.01
    text = tm.ok("report", "forecast").output
    assert "fitted on 30 past seats" in text and "NEXT" in text
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(tm.ok("report", "forecast", "--csv").output)))
    assert [r["email"] for r in rows] == [s["email"] for s in row["students"]]
    assert {r["session"] for r in rows} == {"NEXT"} and rows[0]["expected"] == str(row["expected"])
    page = tm.ok("session", "show", "NEXT").output
    assert f"forecast: {row['expected']:.1f} expected of 3 seats" in page


def test_forecast_without_history_says_so(tm: Cli) -> None:
    tm.ok("session", "add", "EMPTY", "--title", "E", "--start", when(3), "--end", when(3.1))
    text = tm.ok("report", "forecast").output
    assert "no history: neutral priors used" in text
    [row] = json.loads(tm.ok("report", "forecast", "EMPTY", "--json").output)
    assert row["enrolled"] == 0 and row["expected"] == 0 and row["students"] == []


def test_a_past_session_is_refused(tm: Cli) -> None:
    tm.ok("session", "add", "PAST", "--title", "P", "--start", when(-3), "--end", when(-2.9))
    result = tm("report", "forecast", "PAST")
    assert result.exit_code == 1
    assert "a forecast is for upcoming sessions" in result.output
    assert "Traceback" not in result.output


def test_an_outcome_for_a_session_that_has_not_ended_is_refused(tm: Cli, tmp_path: Path) -> None:
    tm.ok("person", "add", "ann@example.org", "--name", "Ann")
    tm.ok("session", "add", "SOON", "--title", "S", "--start", when(3), "--end", when(3.1))
    rows = "session,email,status,calendar\nSOON,ann@example.org,attended,accepted\n"
    result = tm("import", write(tmp_path / "h.csv", rows), "--kind", "enrollments")
    assert result.exit_code == 1
    assert "line 2: session SOON has not ended" in result.output
    page = json.loads(tm.ok("session", "show", "SOON", "--json").output)
    assert page["students"] == []
