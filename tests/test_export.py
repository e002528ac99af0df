"""`--csv` on the listing commands, and `[invitation]` templates in check-config; on
SQLite and on PostgreSQL, through click."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli, write_config
from tmcaldav.app import open_store
from tmcaldav.cli.export import cell, to_csv
from tmcaldav.config import load_config
from tmcaldav.invitations import FIELDS, check_template
from tmcaldav.store.model import Suggestion
from tmcaldav.store.roster import SessionFields, add_session, enroll

ROOT = Path(__file__).resolve().parent.parent


def csv_of(tm: Cli, *args: str) -> str:
    """A command's CSV as printed (click's `output` would normalise the line ends)."""
    return tm.ok(*args, "--csv").stdout_bytes.decode("utf-8")


def parse_csv(text: str) -> list[dict[str, str]]:
    assert text.endswith("\r\n")  # RFC 4180 line ends
    return list(csv.DictReader(io.StringIO(text, newline="")))


def seed(tm: Cli) -> None:
    tm.ok("person", "add", "ann@example.org", "--name", "=HYPERLINK(\"http://x\")")
    tm.ok("person", "add", "bob@example.org", "--name", "Bob, \"the\" builder", "--phone", "+49 30")
    tm.ok("person", "add", "cy@example.org", "--name", "@cy")
    start = (datetime.now(UTC) + timedelta(days=5)).date().isoformat()
    tm.ok(
        "session", "add", "TM-1", "--title", "-Excel, \"basics\"\nday one",
        "--start", f"{start}T09:00", "--end", f"{start}T12:00", "--capacity", "5",
    )  # fmt: skip
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org")
    tm.ok("enroll", "TM-1", "cy@example.org", "--waitlist")
    tm.ok("note", "TM-1", "bob@example.org", "phoned;\nwill come")


def test_csv_session_list_and_show_parse_back_with_formulas_escaped(tm: Cli) -> None:
    seed(tm)
    rows = parse_csv(csv_of(tm, "session", "list"))
    as_json = json.loads(tm.ok("session", "list", "--json").output)
    assert len(rows) == 1
    row = rows[0]
    assert row["key"] == "TM-1"
    assert row["title"] == "'-Excel, \"basics\"\nday one"  # escaped, quotes and newline kept
    assert row["capacity"] == "5" and row["course"] == ""
    assert row["counts.not_invited"] == "3" and row["counts.accepted"] == "0"
    # The same fields as --json (counts flattened, one column each).
    flat = {k for k in as_json[0] if k != "counts"} | {f"counts.{k}" for k in as_json[0]["counts"]}
    assert set(row) == flat

    students = parse_csv(csv_of(tm, "session", "show", "TM-1"))
    by_email = {s["email"]: s for s in students}
    assert list(by_email) == ["ann@example.org", "bob@example.org", "cy@example.org"]
    assert by_email["ann@example.org"]["name"] == "'=HYPERLINK(\"http://x\")"
    assert by_email["bob@example.org"]["name"] == 'Bob, "the" builder'
    assert by_email["bob@example.org"]["phone"] == "'+49 30"
    assert by_email["cy@example.org"]["name"] == "'@cy"
    assert by_email["cy@example.org"]["waitlist_position"] == "1"
    assert all(s["session"] == "TM-1" for s in students)
    notes = json.loads(by_email["bob@example.org"]["notes"])
    assert [n["text"] for n in notes] == ["phoned;\nwill come"]
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    expected = {"session"} | {k for k in page["students"][0] if k != "delivery"}
    assert expected <= set(students[0])


def test_csv_suggestions_and_no_shows(tm: Cli, store_url: str) -> None:
    seed(tm)
    store = open_store(store_url)
    past = datetime.now(UTC) - timedelta(days=3)
    with store.transaction() as db:
        add_session(
            db,
            "OLD",
            SessionFields(
                title="Old", start=past.isoformat(), end=(past + timedelta(hours=2)).isoformat()
            ),
            "UTC",
        )
        enroll(db, "OLD", ["ann@example.org"])
        session_id = db.query(Suggestion).count()  # none yet
        from tmcaldav.store import get_session

        old = get_session(db, "OLD")
        db.add(
            Suggestion(
                session_id=old.id,
                enrollment_id=old.enrollments[0].id,
                kind="mark_no_show",
                reason="-1 seat; =SUM(A1)",
                plugin="noshow",
                dedupe_key="x",
                details={"why": "test"},
            )
        )
    store.close()
    assert session_id == 0
    rows = parse_csv(csv_of(tm, "suggestions"))
    assert len(rows) == 1
    assert rows[0]["reason"] == "'-1 seat; =SUM(A1)"
    assert rows[0]["kind"] == "mark_no_show" and rows[0]["email"] == "ann@example.org"
    assert rows[0]["details.why"] == "test"
    tm.ok("set-status", "OLD", "ann@example.org", "no_show")
    rows = parse_csv(csv_of(tm, "report", "no-shows"))
    assert rows == [
        {
            "email": "ann@example.org",
            "name": "'=HYPERLINK(\"http://x\")",
            "sessions": "1",
            "accepted": "0",
            "no_shows": "1",
            "accepted_no_shows": "0",
        }
    ]


def test_csv_empty_listings_have_a_header(tm: Cli) -> None:
    for args in (("session", "list"), ("suggestions",), ("report", "no-shows")):
        text = csv_of(tm, *args)
        assert text.count("\r\n") == 1 and parse_csv(text) == []


def test_csv_and_json_together_is_a_usage_error(tm: Cli) -> None:
    result = tm("session", "list", "--csv", "--json")
    assert result.exit_code == 2 and "choose one of --json and --csv" in result.output


def test_csv_cells() -> None:
    for text in ("=1+1", "+1", "-1", "@x", "\tx", "\rx"):
        assert cell(text) == "'" + text
    assert cell(-1) == "-1"  # a number is a number
    assert cell(None) == "" and cell(True) == "true" and cell("a=b") == "a=b"
    assert to_csv([{"a": {"b": 1}, "c": [1]}]) == 'a.b,c\r\n1,[1]\r\n'


# ---- [invitation] templates in check-config -----------------------------------------------------


def config_with(tmp_path: Path, invitation: str) -> Path:
    return write_config(
        tmp_path / "c.toml", f"sqlite:///{tmp_path / 's.db'}", "\n[invitation]\n" + invitation
    )


@pytest.mark.parametrize(
    ("invitation", "message"),
    [
        ('body = "Hello {{ student_nmae }}"', "invitation.body: unknown field student_nmae"),
        ('subject = "{{ title"', "invitation.subject: not a valid template"),
        ('waitlist_body = "{{ title | frobnicate }}"', "invitation.waitlist_body: not a valid"),
        ('subject = """two\nlines {{ title }}"""', "invitation.subject: a subject is one line"),
        ('body = "{{ title.__class__ }}"', "invitation.body: cannot be rendered"),
        ("send_days_before = -1", "invitation.send_days_before: must be 0 or more"),
        (
            "remind_min_interval = -5",
            "invitation.remind_min_interval: must be between 0 and a year",
        ),
        ('bogus = "x"', "invitation.bogus: unknown key"),
    ],
)
def test_check_config_refuses_bad_templates(tmp_path: Path, invitation: str, message: str) -> None:
    result = Cli(config_with(tmp_path, invitation))("check-config")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_check_config_takes_every_field(tmp_path: Path) -> None:
    body = " ".join(f"{{{{ {name} }}}}" for name in FIELDS)
    path = config_with(tmp_path, f'body = "{body}"\nsend_days_before = 14\n')
    Cli(path).ok("check-config")
    config = load_config(path)
    assert config.invitation.send_days_before == 14
    assert config.invitation.remind_min_interval == 86400.0


def test_the_example_templates_are_valid() -> None:
    text = (ROOT / "daemon.example.toml").read_text()
    section = text[text.index("[invitation]") :]
    pattern = r'^# (subject|body|waitlist_body) = (""".*?"""|".*?")$'
    examples = re.findall(pattern, section, re.S | re.M)
    assert {key for key, _ in examples} == {"subject", "body", "waitlist_body"}
    for key, value in examples:
        lines = value.splitlines()
        template = "\n".join(line.removeprefix("# ").removeprefix("#") for line in lines)
        assert check_template(key, template.strip('"')) == [], key
