"""The administrator's verbs through click, against a real store and a real Radicale
(server mode): person edit / remove, session delete, answer, remind, invite --dry-run,
scheduled invitations, counts and local times.

iMIP mode (mail at the aiosmtpd sink) is in tests/test_verbs_mail.py; CSV and config
checks that need no server are in tests/test_export.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import Cli
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.store import Store, get_session
from tmcaldav.store.model import (
    Enrollment,
    Note,
    Outbox,
    Person,
    Reminder,
    Response,
    Suggestion,
    TrainingSession,
)
from tmcaldav.testing import RadicaleServer

PEOPLE = {
    "ann@example.org": "Ann Lee",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy",
    "dee@example.org": "Dee",
}

# A plugin file that writes each hook call as one JSON line (to see hooks fire once).
RECORDER = '''
import json, os
from tmcaldav.hookspecs import hookimpl

LOG = os.environ.get("VERBS_HOOK_LOG") or {log!r}


def _write(hook, change):
    with open(LOG, "a") as f:
        f.write(json.dumps({{"hook": hook, "email": change.email, "new": change.new,
                            "source": change.source}}) + "\\n")


@hookimpl
def on_accept(change):
    _write("on_accept", change)


@hookimpl
def on_decline(change):
    _write("on_decline", change)


@hookimpl
def on_response(change):
    _write("on_response", change)
'''


def future(days: int, hour: int = 9) -> str:
    """A local wall-clock time `days` from now (sessions must lie ahead of the clock)."""
    day = (datetime.now(UTC) + timedelta(days=days)).date()
    return f"{day.isoformat()}T{hour:02d}:00"


def recorder_section(tmp_path: Path) -> str:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    log = tmp_path / "hooks.jsonl"
    (folder / "recorder.py").write_text(RECORDER.format(log=str(log)))
    return f'\n[plugins]\nenable = ["recorder"]\nplugin_dirs = ["{folder}"]\n'


def hook_log(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "hooks.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_tm(tmp_path: Path, server: RadicaleServer, extra: str = "") -> Cli:
    tm = cli_for(tmp_path, server, f"sqlite:///{tmp_path / 'store.db'}", extra=extra)
    add_people(tm, PEOPLE)
    add_session(tm, "TM-1", "--capacity", "4", start=future(10), end=future(10, 17))
    tm.ok("enroll", "TM-1", *PEOPLE)
    return tm


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer) -> Cli:
    return make_tm(tmp_path, radicale_server, recorder_section(tmp_path))


@pytest.fixture
def student(radicale_server: RadicaleServer) -> StudentSide:
    return StudentSide(radicale_server)


def page(tm: Cli, key: str = "TM-1") -> dict:
    return json.loads(tm.ok("session", "show", key, "--json").output)


def students(tm: Cli, key: str = "TM-1") -> dict[str, dict]:
    return {s["email"]: s for s in page(tm, key)["students"]}


def store_of(tm: Cli) -> Store:
    return open_store(load_config(tm.config).store.url)


def href_of(tm: Cli, key: str = "TM-1") -> str:
    store = store_of(tm)
    with store.transaction() as db:
        href = get_session(db, key).href
    store.close()
    assert href is not None
    return href


def counts(tm: Cli, *models: type) -> dict[str, int]:
    store = store_of(tm)
    with store.transaction() as db:
        found = {m.__name__: db.scalar(select(func.count()).select_from(m)) or 0 for m in models}
    store.close()
    return found


def events_on_server(student: StudentSide) -> list[str]:
    """The organizer's events; none while the calendar does not exist yet."""
    try:
        return student.hrefs()
    except AssertionError:  # 404: nothing was ever published
        return []


def unfolded(text: str) -> list[str]:
    return text.replace("\r\n ", "").replace("\n ", "").splitlines()


def attendee_lines(text: str) -> dict[str, str]:
    """address -> the whole ATTENDEE line, as the server stores it."""
    return {
        line.rsplit("mailto:", 1)[1].lower(): line
        for line in unfolded(text)
        if line.upper().startswith("ATTENDEE")
    }


# ---- person edit ------------------------------------------------------------------------------


def test_person_edit_name_and_phone(tm: Cli) -> None:
    out = tm.ok("person", "edit", "ANN@example.org", "--name", "Ann Lee-Park", "--phone", "+1 2")
    assert "ann@example.org: changed name, phone" in out.output
    people = {p["email"]: p for p in json.loads(tm.ok("person", "list", "--json").output)}
    assert people["ann@example.org"] == {
        "email": "ann@example.org",
        "name": "Ann Lee-Park",
        "phone": "+1 2",
    }
    tm.ok("person", "edit", "ann@example.org", "--phone", "")
    people = {p["email"]: p for p in json.loads(tm.ok("person", "list", "--json").output)}
    assert people["ann@example.org"]["phone"] is None


def test_person_edit_email_replaces_the_attendee_everywhere(
    tm: Cli, student: StudentSide
) -> None:
    add_session(tm, "TM-2", start=future(12), end=future(12, 17))
    tm.ok("enroll", "TM-2", "ann@example.org")
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    tm.ok("invite", "TM-2", "ann@example.org")
    href1, href2 = href_of(tm, "TM-1"), href_of(tm, "TM-2")
    student.answer(href1, {"ann@example.org": "ACCEPTED"})
    tm.ok("sync")
    before = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [h["calendar"] for h in before] == ["accepted"]

    out = tm.ok("person", "edit", "ann@example.org", "--email", "Ann.Lee@Example.org").output
    assert "ann.lee@example.org: changed email (was ann@example.org)" in out
    assert "TM-1, TM-2" in out
    for href in (href1, href2):
        event = student.event(href)
        assert "ann@example.org" not in event.attendees
        assert "ann.lee@example.org" in event.attendees
        assert event.sequence == 1  # an attendee removed: a change clients must apply
    # Her answer goes with her, and bob's is untouched.
    assert student.partstats(href1) == {
        "ann.lee@example.org": "ACCEPTED",
        "bob@example.org": "NEEDS-ACTION",
    }
    # The history stays with the person, under the new address.
    after = json.loads(tm.ok("session", "history", "TM-1", "ann.lee@example.org", "--json").output)
    assert after == before
    assert students(tm)["ann.lee@example.org"]["calendar"] == "accepted"
    assert tm("session", "history", "TM-1", "ann@example.org").exit_code == 1
    # The next poll finds nothing new: no answer recorded, no stranger.
    assert "0 answers recorded" in tm.ok("sync").output
    assert [h["calendar"] for h in hook_log_of(tm)] == ["accepted"]


def hook_log_of(tm: Cli) -> list[dict[str, str]]:
    return [
        {"calendar": h["new"]} for h in hook_log(Path(tm.config).parent) if h["hook"] == "on_accept"
    ]


def test_person_edit_bad_input_changes_nothing(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org")
    href = href_of(tm)
    _, etag_before = student.get(href)
    people_before = tm.ok("person", "list", "--json").output
    cases = [
        (("person", "edit", "ghost@example.org", "--name", "X"), 1, "no person with e-mail"),
        (("person", "edit", "ann@example.org", "--email", "BOB@example.org"), 1, "already a"),
        (("person", "edit", "ann@example.org", "--email", "not an address"), 1, "not an e-mail"),
        (("person", "edit", "ann@example.org"), 2, "nothing to change"),
        (("person", "edit", "ann@example.org", "--name", ""), 1, "must not be empty"),
    ]
    for args, code, message in cases:
        result = tm(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert tm.ok("person", "list", "--json").output == people_before
    assert student.get(href)[1] == etag_before


# ---- person remove ----------------------------------------------------------------------------


def test_person_remove(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    href = href_of(tm)
    result = tm("person", "remove", "bob@example.org")
    assert result.exit_code == 1
    assert "still in upcoming sessions: TM-1" in result.output
    assert "--cancel-enrollments" in result.output
    assert "bob@example.org" in student.event(href).attendees
    out = tm.ok("person", "remove", "bob@example.org", "--cancel-enrollments").output
    assert "removed bob@example.org (1 enrollment" in out and "cancelled in TM-1" in out
    assert "bob@example.org" not in student.event(href).attendees
    assert "bob@example.org" not in students(tm)
    emails = [p["email"] for p in json.loads(tm.ok("person", "list", "--json").output)]
    assert "bob@example.org" not in emails
    # Never enrolled: removed at once; unknown: exit 1.
    tm.ok("person", "add", "zed@example.org", "--name", "Zed")
    assert "removed zed@example.org (0 enrollments" in tm.ok(
        "person", "remove", "zed@example.org"
    ).output
    assert tm("person", "remove", "zed@example.org").exit_code == 1


# ---- session delete ---------------------------------------------------------------------------


def test_session_delete(tm: Cli, student: StudentSide) -> None:
    # Never published: deleted from the store alone.
    add_session(tm, "TM-2", start=future(12), end=future(12, 17))
    tm.ok("enroll", "TM-2", "ann@example.org")
    assert tm.ok("session", "delete", "TM-2").output.strip() == "session TM-2 deleted"
    # Published and scheduled: refused, nothing changed.
    tm.ok("invite", "TM-1", "--all-enrolled")
    href = href_of(tm)
    tm.ok("answer", "TM-1", "ann@example.org", "accepted", "--note", "phoned")
    tm.ok("sync")
    result = tm("session", "delete", "TM-1")
    assert result.exit_code == 1
    assert "cancel it first: tmcaldav session cancel TM-1" in result.output
    assert href in student.hrefs()
    # Cancelled: the event leaves the server (If-Match), and nothing is left in the store.
    tm.ok("session", "cancel", "TM-1")
    assert "TM-1 deleted (and its event on the server)" in tm.ok("session", "delete", "TM-1").output
    assert href not in student.hrefs()
    assert counts(
        tm, TrainingSession, Enrollment, Response, Note, Outbox, Suggestion, Reminder
    ) == dict.fromkeys(
        ["TrainingSession", "Enrollment", "Response", "Note", "Outbox", "Suggestion", "Reminder"],
        0,
    )
    assert counts(tm, Person)["Person"] == len(PEOPLE)  # the people stay
    assert tm("session", "delete", "TM-1").exit_code == 1  # unknown now


def test_session_delete_keeps_attendance(tm: Cli) -> None:
    add_session(tm, "OLD", start=future(-3), end=future(-3, 17))
    tm.ok("enroll", "OLD", "ann@example.org")
    tm.ok("set-status", "OLD", "ann@example.org", "no_show")
    result = tm("session", "delete", "OLD")
    assert result.exit_code == 1 and "attendance records" in result.output
    assert "OLD" in [s["key"] for s in json.loads(tm.ok("session", "list", "--json").output)]


def test_session_delete_after_the_event_changed(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "--all-enrolled")
    tm.ok("session", "cancel", "TM-1")
    href = href_of(tm)
    # A late answer lands after the cancel: the store's ETag is stale; If-Match still holds
    # because the event is read first.
    student.answer(href, {"bob@example.org": "DECLINED"})
    tm.ok("session", "delete", "TM-1")
    assert href not in student.hrefs()


# ---- answer -------------------------------------------------------------------------------------


def test_manual_answer_fires_once_and_a_newer_calendar_answer_wins(
    tm: Cli, student: StudentSide
) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    href = href_of(tm)
    out = tm.ok("answer", "TM-1", "Ann@example.org", "accepted", "--note", "phoned, will come")
    assert "ann@example.org in TM-1: ✓ accepted by hand" in out.output
    assert "(was ✉ invited)" in out.output
    ann = students(tm)["ann@example.org"]
    assert (ann["calendar"], ann["by_hand"]) == ("accepted", True)
    assert [n["text"] for n in ann["notes"]] == ["phoned, will come"]
    assert "✓ accepted by hand" in tm.ok("session", "show", "TM-1").output
    # Never written into her PARTSTAT: only the student may do that.
    assert student.partstats(href)["ann@example.org"] == "NEEDS-ACTION"

    tm.ok("sync")
    accepts = [h for h in hook_log(Path(tm.config).parent) if h["hook"] == "on_accept"]
    assert accepts == [
        {"hook": "on_accept", "email": "ann@example.org", "new": "accepted", "source": "manual"}
    ]
    # Another student answers: the event changes, and still says NEEDS-ACTION for ann.
    # That is not her news: the answer by hand stays.
    student.answer(href, {"bob@example.org": "TENTATIVE"})
    tm.ok("sync")
    tm.ok("sync")
    ann = students(tm)["ann@example.org"]
    assert (ann["calendar"], ann["by_hand"]) == ("accepted", True)
    log = hook_log(Path(tm.config).parent)
    assert [h["email"] for h in log if h["hook"] == "on_accept"] == ["ann@example.org"]
    assert [h["email"] for h in log if h["hook"] == "on_response"] == [
        "ann@example.org",
        "bob@example.org",
    ]
    # Later she declines in her calendar: that answer is newer, so it wins.
    student.answer(href, {"ann@example.org": "DECLINED"})
    tm.ok("sync")
    ann = students(tm)["ann@example.org"]
    assert (ann["calendar"], ann["by_hand"]) == ("declined", False)
    log = hook_log(Path(tm.config).parent)
    assert [h["email"] for h in log if h["hook"] == "on_decline"] == ["ann@example.org"]
    assert [h["email"] for h in log if h["hook"] == "on_accept"] == ["ann@example.org"]
    history = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [(h["event"], h["calendar"], h["source"]) for h in history] == [
        ("answer", "accepted", "manual"),
        ("answer", "declined", "poll"),
    ]
    text = tm.ok("session", "history", "TM-1", "ann@example.org").output
    assert "by hand" in text and "poll" in text


def test_calendar_confirming_a_manual_answer_fires_nothing_new(
    tm: Cli, student: StudentSide
) -> None:
    tm.ok("invite", "TM-1", "ann@example.org")
    href = href_of(tm)
    tm.ok("answer", "TM-1", "ann@example.org", "accepted")
    tm.ok("sync")
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    tm.ok("sync")
    ann = students(tm)["ann@example.org"]
    assert (ann["calendar"], ann["by_hand"]) == ("accepted", False)
    log = hook_log(Path(tm.config).parent)
    assert len([h for h in log if h["hook"] == "on_accept"]) == 1
    history = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [(h["calendar"], h["source"]) for h in history] == [
        ("accepted", "manual"),
        ("accepted", "poll"),
    ]


def test_manual_answer_older_than_the_shown_one_goes_into_the_history(
    tm: Cli, student: StudentSide
) -> None:
    tm.ok("invite", "TM-1", "ann@example.org")
    tm.ok("answer", "TM-1", "ann@example.org", "declined")
    earlier = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds")
    out = tm.ok("answer", "TM-1", "ann@example.org", "accepted", "--at", earlier).output
    assert "kept in the history" in out
    assert students(tm)["ann@example.org"]["calendar"] == "declined"
    history = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [h["calendar"] for h in history] == ["declined", "accepted"]


def test_answer_bad_input_changes_nothing(tm: Cli) -> None:
    tm.ok("invite", "TM-1", "ann@example.org")
    before = tm.ok("session", "show", "TM-1", "--json").output
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
    cases = [
        (("answer", "TM-1", "ann@example.org", "maybe"), 2, "'maybe' is not one of 'accepted'"),
        (("answer", "TM-1", "ann@example.org", "delegated"), 2, "Invalid value"),
        (("answer", "TM-9", "ann@example.org", "accepted"), 1, "no session with key 'TM-9'"),
        (("answer", "TM-1", "zed@example.org", "accepted"), 1, "not enrolled in session TM-1"),
        (("answer", "TM-1", "bob@example.org", "accepted"), 1, "has not been invited"),
        (("answer", "TM-1", "ann@example.org", "accepted", "--at", soon), 2, "in the future"),
        (("answer", "TM-1", "ann@example.org", "accepted", "--at", "soon"), 1, "not an ISO"),
    ]
    for args, code, message in cases:
        result = tm(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
    assert tm.ok("session", "show", "TM-1", "--json").output == before


# ---- remind (server mode: SCHEDULE-FORCE-SEND) ------------------------------------------------


def test_remind_no_answer_asks_the_server_to_send_to_the_silent_ones(
    tm: Cli, student: StudentSide
) -> None:
    tm.ok("invite", "TM-1", "--all-enrolled")
    href = href_of(tm)
    student.answer(href, {"ann@example.org": "ACCEPTED", "bob@example.org": "TENTATIVE"})
    tm.ok("sync")
    _, etag = student.get(href)
    # A dry run says what would be asked, and changes nothing anywhere.
    out = tm.ok("remind", "TM-1", "--no-answer", "--dry-run").output
    assert "cy@example.org, dee@example.org" in out and "SCHEDULE-FORCE-SEND" in out
    assert "dry run" in out
    assert student.get(href)[1] == etag
    assert counts(tm, Reminder)["Reminder"] == 0

    out = tm.ok("remind", "TM-1", "--no-answer").output
    assert "reminded 2: cy@example.org, dee@example.org" in out
    lines = attendee_lines(student.get(href)[0])
    forced = {a for a, line in lines.items() if "SCHEDULE-FORCE-SEND=REQUEST" in line.upper()}
    assert forced == {"cy@example.org", "dee@example.org"}
    # Only the parameter: answers and SEQUENCE stay.
    assert student.partstats(href)["ann@example.org"] == "ACCEPTED"
    assert student.event(href).sequence == 0
    history = json.loads(tm.ok("session", "history", "TM-1", "cy@example.org", "--json").output)
    assert [(h["event"], h["source"], h["calendar"]) for h in history] == [
        ("reminder", "server", "invited")
    ]
    assert "reminded" in tm.ok("session", "history", "TM-1", "cy@example.org").output
    # Not twice within remind_min_interval, unless forced.
    out = tm.ok("remind", "TM-1", "--no-answer").output
    assert "nobody to remind" in out and "not cy@example.org: reminded 0 min ago" in out
    assert counts(tm, Reminder)["Reminder"] == 2
    out = tm.ok("remind", "TM-1", "cy@example.org", "--force").output
    assert "reminded 1: cy@example.org" in out
    # --tentative reaches the unsure.
    assert "reminded 1: bob@example.org" in tm.ok("remind", "TM-1", "--tentative").output
    # A later poll is not news (our own writes).
    assert "0 answers recorded" in tm.ok("sync").output


def test_remind_bad_input(tm: Cli) -> None:
    result = tm("remind", "TM-1", "--no-answer")
    assert result.exit_code == 1 and "not published" in result.output
    tm.ok("invite", "TM-1", "ann@example.org")
    cases = [
        (("remind", "TM-1"), 2, "name the students to remind"),
        (("remind", "TM-9", "--no-answer"), 1, "no session with key"),
        (("remind", "TM-1", "zed@example.org"), 1, "not in session TM-1: zed@example.org"),
        (("remind", "TM-1", "bob@example.org"), 1, "not invited to session TM-1"),
    ]
    for args, code, message in cases:
        result = tm(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
    assert counts(tm, Reminder)["Reminder"] == 0


# ---- invite --dry-run and the [invitation] body as DESCRIPTION ---------------------------------


def test_invite_dry_run_and_template_description(
    tmp_path: Path, radicale_server: RadicaleServer, student: StudentSide
) -> None:
    body = (
        '\n[invitation]\nbody = """Welcome to {{ title }} on {{ when }}.'
        '{% if location %} Room: {{ location }}.{% endif %}\nHello {{ student_name }}!"""\n'
    )
    tm = make_tm(tmp_path, radicale_server, body)
    tm.ok("session", "edit", "TM-1", "--location", "Room 7")
    before = tm.ok("session", "show", "TM-1", "--json").output
    out = tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org", "--dry-run").output
    assert "ann@example.org, bob@example.org" in out
    assert "Welcome to Intro on" in out and "Room: Room 7." in out
    # Server mode: one event for everyone, so the student's fields are empty.
    assert "Hello !" in out
    assert events_on_server(student) == []
    assert tm.ok("session", "show", "TM-1", "--json").output == before
    tm.ok("invite", "TM-1", "ann@example.org")
    text = " ".join(unfolded(student.get(href_of(tm))[0]))
    assert "Welcome to Intro on" in text and "Room: Room 7." in text


# ---- scheduled invitations -------------------------------------------------------------------


def test_scheduled_invitations_go_out_once(
    tmp_path: Path, radicale_server: RadicaleServer, student: StudentSide
) -> None:
    tm = make_tm(tmp_path, radicale_server, "\n[invitation]\nsend_days_before = 14\n")
    add_session(tm, "LATER", start=future(40), end=future(40, 17))
    tm.ok("enroll", "LATER", "ann@example.org")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
    add_session(tm, "OWN", "--invite-at", past, start=future(40), end=future(40, 12))
    tm.ok("enroll", "OWN", "bob@example.org")
    assert page(tm, "OWN")["invite_at"] is not None

    assert tm.ok("run", "--once").exit_code == 0
    invited = {
        k: {s["email"] for s in page(tm, k)["students"] if s["calendar"] == "invited"}
        for k in ("TM-1", "LATER", "OWN")
    }
    assert invited == {"TM-1": set(PEOPLE), "LATER": set(), "OWN": {"bob@example.org"}}
    etag = student.get(href_of(tm))[1]
    # A restart (another tick) sends nothing again.
    assert tm.ok("run", "--once").exit_code == 0
    assert student.get(href_of(tm))[1] == etag
    # A student removed from the event is not invited again by the schedule.
    tm.ok("set-status", "TM-1", "dee@example.org", "cancelled")
    tm.ok("set-status", "TM-1", "dee@example.org", "enrolled")
    tm.ok("sync")
    assert students(tm)["dee@example.org"]["calendar"] == "not_invited"
    assert "dee@example.org" not in student.event(href_of(tm)).attendees


# ---- counts and time zones ----------------------------------------------------------------------


def test_counts_and_local_times(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    href = href_of(tm)
    student.answer(href, {"ann@example.org": "ACCEPTED", "bob@example.org": "DECLINED"})
    tm.ok("sync")
    p = page(tm)
    assert p["counts"] == {
        "accepted": 1,
        "tentative": 0,
        "declined": 1,
        "invited": 1,
        "not_invited": 1,
        "delegated": 0,
    }
    text = tm.ok("session", "show", "TM-1").output
    assert "✓ 1  ? 0  ✗ 1  ✉ 1  — 1" in text
    rows = json.loads(tm.ok("session", "list", "--json").output)
    assert rows[0]["counts"]["accepted"] == 1
    assert "✓ 1  ? 0  ✗ 1  ✉ 1  — 1" in tm.ok("session", "list").output
    # JSON: ISO 8601 with its offset (UTC); people: the session's zone (Europe/Berlin).
    answered = students(tm)["ann@example.org"]["responded_at"]
    assert answered.endswith("+00:00")
    local = datetime.fromisoformat(answered).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    assert local.strftime("%Y-%m-%d %H:%M") in text
    history = tm.ok("session", "history", "TM-1", "ann@example.org").output
    assert local.strftime("%Y-%m-%d %H:%M") in history and "Europe/Berlin" in history


def test_the_diff_reads_a_hand_answer_against_what_the_server_held() -> None:
    """Pure: the server's unchanged copy is no news; a changed one is, if newer."""
    from types import MappingProxyType

    from tmcaldav.ical import AttendeeState, EventState
    from tmcaldav.sync import KnownEnrollment, KnownSession, ServerEvent, diff

    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    ann = KnownEnrollment(1, "ann@example.org", "enrolled", "accepted", 0, at, "invited")
    session = KnownSession(1, "TM-1", "uid-1", "/e.ics", None, 0, "published", {ann.email: ann})

    def event(partstat: str, status: str) -> ServerEvent:
        state = AttendeeState(ann.email, None, partstat, status, None, None)
        parsed = EventState(
            "uid-1", 0, None, None, None, None, None, None,
            MappingProxyType({ann.email: state}), (), None, None,
        )  # fmt: skip
        return ServerEvent("/e.ics", "etag-2", parsed)

    def run(partstat: str, status: str) -> list[tuple[str, str]]:
        found = diff([session], [event(partstat, status)], [], full=False, organizer="o@x.org")
        return [(a.old, a.new) for a in found.answers]

    assert run("NEEDS-ACTION", "invited") == []
    assert run("DECLINED", "declined") == [("accepted", "declined")]
    assert run("ACCEPTED", "accepted") == [("accepted", "accepted")]
