"""Every foundation command through click's runner, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, write_config
from tests.scenario import add_session
from tmcaldav.app import open_store
from tmcaldav.store import get_session

CONTRACT_SESSION_FIELDS = {
    "key",
    "title",
    "course",
    "start",
    "end",
    "tz",
    "location",
    "capacity",
    "status",
    "uid",
    "sequence",
    "students",
}
CONTRACT_STUDENT_FIELDS = {
    "email",
    "name",
    "status",
    "calendar",
    "icon",
    "responded_at",
    "waitlist_position",
    "notes",
}


def seed(tm: Cli) -> None:
    tm.ok("person", "add", "Ann@Example.org", "--name", "Ann Lee", "--phone", "+49 30 1")
    tm.ok("person", "add", "bob@example.org", "--name", "Bob")
    tm.ok("person", "add", "cy@example.org", "--name", "Cy")
    add_session(
        tm,
        "TM-1",
        "--capacity",
        "2",
        "--location",
        "Room 1",
        start="2026-12-01T09:00",
        end="2026-12-01T17:00",
    )


def test_person_add_and_list(tm: Cli) -> None:
    seed(tm)
    people = json.loads(tm.ok("person", "list", "--json").output)
    assert people == [
        {"email": "ann@example.org", "name": "Ann Lee", "phone": "+49 30 1"},
        {"email": "bob@example.org", "name": "Bob", "phone": None},
        {"email": "cy@example.org", "name": "Cy", "phone": None},
    ]
    text = tm.ok("person", "list").output
    assert "ann@example.org" in text and "Ann Lee" in text


def test_person_add_duplicate_any_case(tm: Cli) -> None:
    seed(tm)
    result = tm("person", "add", "ANN@example.ORG", "--name", "Ann again")
    assert result.exit_code == 1
    assert "already a person" in result.output
    assert len(json.loads(tm.ok("person", "list", "--json").output)) == 3


@pytest.mark.parametrize("address", ["not-an-address", "ann@ex..org"])
def test_person_add_bad_email(tm: Cli, address: str) -> None:
    result = tm("person", "add", address, "--name", "X")
    assert result.exit_code == 1
    assert "not an e-mail address" in result.output
    assert "Traceback" not in result.output
    assert tm.ok("person", "list", "--json").output.strip() == "[]"


def test_session_add_show_json_matches_contract(tm: Cli) -> None:
    seed(tm)
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org")
    tm.ok("enroll", "TM-1", "cy@example.org", "--waitlist")
    tm.ok("note", "TM-1", "bob@example.org", "phoned, will come")
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    assert set(page) >= CONTRACT_SESSION_FIELDS
    assert page["key"] == "TM-1"
    assert page["title"] == "Intro"
    assert page["course"] is None
    assert page["start"] == "2026-12-01T09:00:00+01:00"
    assert page["end"] == "2026-12-01T17:00:00+01:00"
    assert page["tz"] == "Europe/Berlin"
    assert page["location"] == "Room 1"
    assert page["capacity"] == 2
    assert page["status"] == "scheduled"
    assert page["uid"] is None and page["sequence"] == 0
    students = {s["email"]: s for s in page["students"]}
    assert list(students) == ["ann@example.org", "bob@example.org", "cy@example.org"]
    for s in page["students"]:
        assert set(s) >= CONTRACT_STUDENT_FIELDS
    assert students["ann@example.org"] | {"notes": None} == students["ann@example.org"] | {
        "email": "ann@example.org",
        "name": "Ann Lee",
        "status": "enrolled",
        "calendar": "not_invited",
        "icon": "—",
        "responded_at": None,
        "waitlist_position": None,
        "notes": None,
    }
    assert students["cy@example.org"]["status"] == "waitlisted"
    assert students["cy@example.org"]["waitlist_position"] == 1
    assert [n["text"] for n in students["bob@example.org"]["notes"]] == ["phoned, will come"]


def test_session_show_text(tm: Cli) -> None:
    seed(tm)
    tm.ok("enroll", "TM-1", "ann@example.org")
    tm.ok("note", "TM-1", "ann@example.org", "needs a parking permit")
    out = tm.ok("session", "show", "TM-1").output
    assert "TM-1  Intro" in out
    assert "2026-12-01T09:00:00+01:00" in out
    assert "Ann Lee <ann@example.org>" in out
    assert "— not_invited" in out
    assert "needs a parking permit" in out
    assert "seats 1/2" in out


def test_session_list(tm: Cli) -> None:
    seed(tm)
    add_session(
        tm,
        "TM-0",
        "--tz",
        "UTC",
        title="Earlier",
        start="2026-11-30T10:00+00:00",
        end="2026-11-30T12:00+00:00",
    )
    rows = json.loads(tm.ok("session", "list", "--json").output)
    assert [r["key"] for r in rows] == ["TM-0", "TM-1"]
    assert rows[0]["start"] == "2026-11-30T10:00:00+00:00"
    assert "Earlier" in tm.ok("session", "list").output


def test_session_edit(tm: Cli) -> None:
    seed(tm)
    out = tm.ok("session", "edit", "TM-1", "--location", "Room 2", "--capacity", "5").output
    assert "capacity" in out and "location" in out
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    assert (page["location"], page["capacity"]) == ("Room 2", 5)
    assert "no change" in tm.ok("session", "edit", "TM-1", "--location", "Room 2").output


def test_session_add_bad_input(tm: Cli) -> None:
    seed(tm)
    # A valid hour of TM-2 (not yet in the store); each case spoils one thing.
    hour = ["--title", "x", "--start", "2026-12-01T09:00", "--end", "2026-12-01T10:00"]
    cases = [
        (["TM-1", *hour], "already exists"),
        (
            ["TM-2", "--title", "x", "--start", "2026-12-01T09:00", "--end", "2026-12-01T08:00"],
            "must be after the start",
        ),
        (
            ["TM-2", "--title", "x", "--start", "soon", "--end", "2026-12-01T08:00"],
            "not an ISO 8601 time",
        ),
        (["TM-2", *hour, "--tz", "Mars/Base"], "unknown time zone"),
        (
            ["TM-2", *hour, "--capacity", "-1"],
            "capacity must be between 0 and 100,000 seats (got -1)",
        ),
        (["K" * 201, *hour], "the session key is too long (201 characters; at most 200)"),
    ]
    for args, message in cases:
        result = tm("session", "add", *args)
        assert result.exit_code == 1, args
        assert message in result.output
    assert [r["key"] for r in json.loads(tm.ok("session", "list", "--json").output)] == ["TM-1"]


def test_enroll_errors_change_nothing(tm: Cli) -> None:
    seed(tm)
    result = tm("enroll", "TM-1", "ann@example.org", "ghost@example.org")
    assert result.exit_code == 1 and "no person with e-mail 'ghost@example.org'" in result.output
    tm.ok("enroll", "TM-1", "ann@example.org")
    result = tm("enroll", "TM-1", "bob@example.org", "ann@example.org")
    assert result.exit_code == 1 and "already in session TM-1" in result.output
    result = tm("enroll", "TM-X", "bob@example.org")
    assert result.exit_code == 1 and "no session with key 'TM-X'" in result.output
    result = tm("enroll", "TM-1", "bob@example.org", "cy@example.org")
    assert result.exit_code == 1 and "1 free seat of 2" in result.output
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    assert [s["email"] for s in page["students"]] == ["ann@example.org"]


def test_set_status_and_waitlist_order(tm: Cli) -> None:
    seed(tm)
    tm.ok("enroll", "TM-1", "ann@example.org")
    tm.ok("enroll", "TM-1", "cy@example.org", "--waitlist")
    tm.ok("enroll", "TM-1", "bob@example.org", "--waitlist")
    out = tm.ok("set-status", "TM-1", "ann@example.org", "waitlisted", "--note", "asked").output
    assert "enrolled → waitlisted" in out
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    positions = {s["email"]: s["waitlist_position"] for s in page["students"]}
    assert positions == {"cy@example.org": 1, "bob@example.org": 2, "ann@example.org": 3}
    ann = next(s for s in page["students"] if s["email"] == "ann@example.org")
    assert [n["text"] for n in ann["notes"]] == ["asked"]


def test_set_status_bad_input(tm: Cli) -> None:
    seed(tm)
    tm.ok("enroll", "TM-1", "ann@example.org")
    result = tm("set-status", "TM-1", "ann@example.org", "vanished")
    assert result.exit_code == 1
    assert "unknown status 'vanished'" in result.output and "enrolled" in result.output
    result = tm("set-status", "TM-1", "bob@example.org", "cancelled")
    assert result.exit_code == 1 and "not enrolled in session TM-1" in result.output
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    assert page["students"][0]["status"] == "enrolled"


def test_history_empty_before_any_answer(tm: Cli) -> None:
    seed(tm)
    tm.ok("enroll", "TM-1", "ann@example.org")
    assert json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output) == []


def test_import_all_kinds(tm: Cli, tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text(
        "key,title,start,end,tz,capacity,course,location\n"
        "CSV-1,Excel basics,2026-12-02T09:00,2026-12-02T12:00,Europe/Berlin,3,EXC,Room A\n"
        "CSV-2,Excel advanced,2026-12-09T09:00,2026-12-09T12:00,,,EXC,\n"
    )
    (tmp_path / "p.csv").write_text(
        '\ufeffemail,name,phone\nann@example.org,"Lee, Ann",\nbob@example.org,Bob,+1\n'
    )
    (tmp_path / "e.csv").write_text(
        "session,email,status\nCSV-1,ann@example.org,\nCSV-1,bob@example.org,waitlisted\n"
    )
    assert (
        "imported 2 sessions"
        in tm.ok("import", str(tmp_path / "s.csv"), "--kind", "sessions").output
    )
    assert (
        "imported 2 people" in tm.ok("import", str(tmp_path / "p.csv"), "--kind", "people").output
    )
    tm.ok("import", str(tmp_path / "e.csv"), "--kind", "enrollments")
    page = json.loads(tm.ok("session", "show", "CSV-1", "--json").output)
    assert page["capacity"] == 3 and page["course"] == "EXC"
    assert [(s["email"], s["status"], s["name"]) for s in page["students"]] == [
        ("ann@example.org", "enrolled", "Lee, Ann"),
        ("bob@example.org", "waitlisted", "Bob"),
    ]
    assert json.loads(tm.ok("session", "show", "CSV-2", "--json").output)["tz"] == "Europe/Berlin"


def test_import_is_all_or_nothing(tm: Cli, tmp_path: Path) -> None:
    seed(tm)
    cases = {
        "sessions": [
            ("key,title,start\nA,x,2026-12-01T09:00\n", "line 1: missing column(s) end"),
            (
                "key,title,start,end\nA,x,2026-12-01T09:00,2026-12-01T10:00\n"
                "B,y,2026-12-01T09:00,2026-12-01T08:00\n",
                "line 3: the end",
            ),
            (
                "key,title,start,end,tz\nA,x,2026-12-01T09:00,2026-12-01T10:00,Nowhere/Land\n",
                "line 2: unknown time zone 'Nowhere/Land'",
            ),
            (
                "key,title,start,end,capacity\nA,x,2026-12-01T09:00,2026-12-01T10:00,-3\n",
                "line 2: capacity must be between 0 and 100,000 seats (got -3)",
            ),
            (
                "key,title,start,end\nA,x,2026-12-01T09:00,2026-12-01T10:00\n"
                "A,x,2026-12-01T09:00,2026-12-01T10:00\n",
                "line 3: session 'A' already exists",
            ),
            (
                "key,title,start,end\nTM-1,x,2026-12-01T09:00,2026-12-01T10:00\n",
                "line 2: session 'TM-1' already exists",
            ),
            ("key,title,start,end\nA,x,2026-12-01T09:00\n", "line 2: expected 4 fields"),
        ],
        "people": [
            (
                "email,name\nzed@example.org,Zed\nbroken-address,Nobody\n",
                "line 3: not an e-mail address",
            ),
            ("name\nZed\n", "line 1: missing column(s) email"),
        ],
        "enrollments": [
            (
                "session,email\nTM-1,ann@example.org\nTM-9,bob@example.org\n",
                "line 3: no session with key 'TM-9'",
            ),
            (
                "session,email\nTM-1,ann@example.org\nTM-1,ghost@example.org\n",
                "line 3: no person with e-mail",
            ),
        ],
    }
    before = {
        kind: tm.ok(*cmd, "--json").output
        for kind, cmd in (("sessions", ("session", "list")), ("people", ("person", "list")))
    }
    before_page = tm.ok("session", "show", "TM-1", "--json").output
    for kind, files in cases.items():
        for i, (text, message) in enumerate(files):
            path = tmp_path / f"{kind}-{i}.csv"
            path.write_text(text)
            result = tm("import", str(path), "--kind", kind)
            assert result.exit_code == 1, (kind, i, result.output)
            assert message in result.output, (kind, i, result.output)
            assert "nothing was written" in result.output
    assert tm.ok("session", "list", "--json").output == before["sessions"]
    assert tm.ok("person", "list", "--json").output == before["people"]
    assert tm.ok("session", "show", "TM-1", "--json").output == before_page


def test_check_config(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.toml", f"sqlite:///{tmp_path / 's.db'}")
    assert Cli(good).ok("check-config").output.startswith(f"{good}: ok")
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nurl = "sqlite:///x.db"\nbogus = 1\n[scheduling]\nmode = "x"\n')
    result = Cli(bad)("check-config")
    assert result.exit_code == 2
    assert "store.bogus: unknown key" in result.output
    assert "scheduling.organizer_email: missing key" in result.output
    assert "Traceback" not in result.output


def test_check_config_reads_password_sources(tmp_path: Path) -> None:
    pw = tmp_path / "caldav.pw"
    pw.write_text("secret")
    pw.chmod(0o644)
    config = write_config(
        tmp_path / "c.toml",
        f"sqlite:///{tmp_path / 's.db'}",
        f'[caldav]\nurl = "https://dav.example.org/"\nusername = "u"\npassword_file = "{pw}"\n',
    )
    result = Cli(config)("check-config")
    assert result.exit_code == 2 and "chmod 600" in result.output and "secret" not in result.output
    pw.chmod(0o600)
    Cli(config).ok("check-config")


def test_config_not_toml_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    result = Cli(bad)("session", "list")
    assert result.exit_code == 2
    assert "not valid TOML" in result.output and "Traceback" not in result.output


def test_store_that_cannot_be_opened(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", f"sqlite:///{tmp_path / 'no' / 'such' / 's.db'}")
    for args in (("db", "upgrade"), ("session", "list")):
        result = Cli(config)(*args)
        assert result.exit_code == 2, result.output
        assert "does not exist" in result.output and "Traceback" not in result.output
    pg = write_config(tmp_path / "p.toml", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = Cli(pg)("db", "upgrade")
    assert result.exit_code == 2 and "cannot open the store" in result.output


def test_store_without_schema_says_upgrade(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", f"sqlite:///{tmp_path / 's.db'}")
    result = Cli(config)("session", "list")
    assert result.exit_code == 2 and "run: tmcaldav db upgrade" in result.output


def test_db_upgrade_is_idempotent(tm: Cli, store_url: str) -> None:
    assert "is at revision" in tm.ok("db", "upgrade").output
    store = open_store(store_url)
    assert {
        "training_sessions",
        "people",
        "enrollments",
        "responses",
        "notes",
        "suggestions",
        "outbox",
        "sync_state",
        "alembic_version",
    } <= set(store.table_names())
    store.close()


def test_times_are_aware_after_a_round_trip(tm: Cli, store_url: str) -> None:
    seed(tm)
    store = open_store(store_url)
    with store.transaction() as db:
        session = get_session(db, "TM-1")
        assert session.start_at.utcoffset() is not None
        assert session.start_at.isoformat() == "2026-12-01T08:00:00+00:00"
    store.close()


def test_python_m_and_help() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "--help"], capture_output=True, text=True, check=True
    )
    for command in (
        "db",
        "check-config",
        "person",
        "session",
        "enroll",
        "set-status",
        "note",
        "import",
    ):
        assert command in done.stdout
