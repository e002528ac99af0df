"""Publishing sessions against a real Radicale: invite, update, reschedule, remove,
cancel, and the merge that never loses a student's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.publish import Publisher
from tmcaldav.store import get_session
from tmcaldav.testing import RadicaleServer

EMAILS = ["ann@example.org", "bob@example.org", "cy@example.org"]


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer) -> Cli:
    runner = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    add_people(runner, dict(zip(EMAILS, ["Ann Lee", "Bob", "Cy"], strict=True)))
    add_session(runner, "TM-1", "--capacity", "3", "--location", "Room 1")
    runner.ok("enroll", "TM-1", *EMAILS[:2])
    runner.ok("enroll", "TM-1", EMAILS[2], "--waitlist")
    return runner


@pytest.fixture
def student(radicale_server: RadicaleServer) -> StudentSide:
    return StudentSide(radicale_server)


def page(tm: Cli, key: str = "TM-1") -> dict:
    return json.loads(tm.ok("session", "show", key, "--json").output)


def href_of(tm: Cli, key: str = "TM-1") -> str:
    store = open_store(load_config(tm.config).store.url)
    with store.transaction() as db:
        href = get_session(db, key).href
    store.close()
    assert href is not None
    return href


def test_invite_publishes_the_event(tm: Cli, student: StudentSide) -> None:
    out = tm.ok("invite", "TM-1", "ann@example.org", "Bob@Example.org").output
    assert "invited 2 new" in out
    p = page(tm)
    assert p["uid"] and p["sequence"] == 0 and p["calendar_state"] == "published"
    calendars = {s["email"]: (s["calendar"], s["icon"]) for s in p["students"]}
    assert calendars == {
        "ann@example.org": ("invited", "✉"),
        "bob@example.org": ("invited", "✉"),
        "cy@example.org": ("not_invited", "—"),
    }
    assert all(s["invited_at"] for s in p["students"][:2])
    event = student.event(href_of(tm))
    assert event.uid == p["uid"]
    assert event.sequence == 0
    assert event.status == "CONFIRMED"
    assert event.summary == "Intro"
    assert event.organizer == "training@example.org"
    assert event.start is not None and event.start.isoformat() == "2026-12-01T08:00:00+00:00"
    assert {a: s.partstat for a, s in event.attendees.items()} == {
        "ann@example.org": "NEEDS-ACTION",
        "bob@example.org": "NEEDS-ACTION",
    }
    assert event.attendees["ann@example.org"].name == "Ann Lee"
    text, _ = student.get(href_of(tm))
    unfolded = text.replace("\r\n ", "").replace("\n ", "")
    for line in unfolded.splitlines():
        if line.startswith("ATTENDEE"):
            for param in ("CUTYPE=INDIVIDUAL", "ROLE=REQ-PARTICIPANT", "RSVP=TRUE"):
                assert param in line
            assert "SCHEDULE-AGENT" not in line
            assert ":mailto:" in line
    assert "BEGIN:VTIMEZONE" in text and "TZID:Europe/Berlin" in text


def test_answers_survive_second_invite_and_edits(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    href = href_of(tm)
    student.answer(href, {"ann@example.org": "ACCEPTED", "bob@example.org": "tentative"})
    tm.ok("invite", "TM-1", "cy@example.org")
    assert student.partstats(href) == {
        "ann@example.org": "ACCEPTED",
        "bob@example.org": "TENTATIVE",
        "cy@example.org": "NEEDS-ACTION",
    }
    assert student.event(href).sequence == 0
    tm.ok("session", "edit", "TM-1", "--location", "Room 2", "--title", "Intro (new room)")
    event = student.event(href)
    assert event.sequence == 1
    assert event.summary == "Intro (new room)"
    assert student.partstats(href)["ann@example.org"] == "ACCEPTED"
    text, _ = student.get(href)
    assert "LOCATION:Room 2" in text
    assert page(tm)["sequence"] == 1
    # Capacity and course are not on the event: no update, no SEQUENCE change.
    tm.ok("session", "edit", "TM-1", "--capacity", "5")
    assert student.event(href).sequence == 1
    # A republish keeps answers and SEQUENCE.
    tm.ok("publish", "--all")
    assert student.event(href).sequence == 1
    assert student.partstats(href)["bob@example.org"] == "TENTATIVE"


def test_reschedule_resets_answers_and_keeps_history(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    href = href_of(tm)
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    tm.ok("session", "edit", "TM-1", "--start", "2026-12-02T09:00", "--end", "2026-12-02T17:00")
    event = student.event(href)
    assert event.sequence == 1
    assert event.start is not None and event.start.isoformat() == "2026-12-02T08:00:00+00:00"
    assert set(student.partstats(href).values()) == {"NEEDS-ACTION"}
    p = page(tm)
    for s in p["students"][:2]:
        assert (s["calendar"], s["calendar_reason"], s["responded_at"]) == (
            "invited",
            "rescheduled",
            None,
        )
    history = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [(h["calendar"], h["reason"], h["sequence"]) for h in history][-1] == (
        "invited",
        "rescheduled",
        1,
    )
    # A new zone keeps the wall-clock time (09:00), so the session moves: a reschedule.
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    tm.ok("session", "edit", "TM-1", "--tz", "UTC")
    event = student.event(href)
    assert event.sequence == 2
    assert event.start is not None and event.start.isoformat() == "2026-12-02T09:00:00+00:00"
    assert set(student.partstats(href).values()) == {"NEEDS-ACTION"}
    # A zone that agrees on the instants only rewrites the event: no one is asked again.
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    tm.ok("session", "edit", "TM-1", "--tz", "Etc/UTC")
    event = student.event(href)
    assert event.sequence == 3
    assert event.start is not None and event.start.isoformat() == "2026-12-02T09:00:00+00:00"
    assert student.partstats(href)["ann@example.org"] == "ACCEPTED"
    assert page(tm)["tz"] == "Etc/UTC"


def test_cancelled_student_is_removed(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    href = href_of(tm)
    student.answer(href, {"bob@example.org": "ACCEPTED"})
    out = tm.ok("set-status", "TM-1", "ann@example.org", "cancelled", "--note", "moved").output
    assert "enrolled → cancelled" in out
    assert student.partstats(href) == {"bob@example.org": "ACCEPTED"}
    assert student.event(href).sequence == 1
    ann = next(s for s in page(tm)["students"] if s["email"] == "ann@example.org")
    assert (ann["status"], ann["calendar"], ann["calendar_reason"]) == (
        "cancelled",
        "not_invited",
        "removed",
    )
    # Other status changes do not touch the event.
    tm.ok("set-status", "TM-1", "bob@example.org", "attended")
    assert student.event(href).sequence == 1


def test_cancel_session(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "--all-enrolled")
    href = href_of(tm)
    assert "event updated" in tm.ok("session", "cancel", "TM-1").output
    event = student.event(href)
    assert (event.status, event.sequence) == ("CANCELLED", 1)
    assert len(event.attendees) == 2
    assert page(tm)["status"] == "cancelled"
    result = tm("invite", "TM-1", "cy@example.org")
    assert result.exit_code == 1 and "cancelled" in result.output


def test_waitlisted_student_can_be_invited(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "cy@example.org")
    assert student.partstats(href_of(tm)) == {"cy@example.org": "NEEDS-ACTION"}
    cy = next(s for s in page(tm)["students"] if s["email"] == "cy@example.org")
    assert (cy["status"], cy["calendar"]) == ("waitlisted", "invited")


def test_invite_bad_input(tm: Cli) -> None:
    result = tm("invite", "TM-1", "ghost@example.org")
    assert result.exit_code == 1 and "not in session TM-1" in result.output
    result = tm("invite", "TM-1")
    assert result.exit_code == 1 and "--all-enrolled" in result.output
    assert page(tm)["calendar_state"] == "unpublished"


def test_resend_in_server_mode_forces_send(tm: Cli, student: StudentSide) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    student.answer(href_of(tm), {"ann@example.org": "ACCEPTED"})
    tm.ok("invite", "TM-1", "ann@example.org", "--resend")
    text, _ = student.get(href_of(tm))
    unfolded = text.replace("\r\n ", "").replace("\n ", "")
    lines = [line for line in unfolded.splitlines() if line.startswith("ATTENDEE")]
    forced = [line for line in lines if "SCHEDULE-FORCE-SEND=REQUEST" in line]
    assert len(forced) == 1 and "ann@example.org" in forced[0]
    assert student.partstats(href_of(tm))["ann@example.org"] == "ACCEPTED"


def test_imip_mode_marks_schedule_agent_client(
    tmp_path: Path, radicale_server: RadicaleServer, student: StudentSide
) -> None:
    tm = cli_for(
        tmp_path,
        radicale_server,
        f"sqlite:///{tmp_path / 's.db'}",
        mode="imip",
        extra='\n[smtp]\nhost = "127.0.0.1"\nport = 2525\nsecurity = "none"\n',
    )
    tm.ok("person", "add", "ann@example.org", "--name", "Ann")
    add_session(tm, "S", title="t", end="2026-12-01T10:00")
    tm.ok("enroll", "S", "ann@example.org")
    tm.ok("invite", "S", "--all-enrolled")
    text, _ = student.get(href_of(tm, "S"))
    unfolded = text.replace("\r\n ", "").replace("\n ", "")
    attendee = next(line for line in unfolded.splitlines() if line.startswith("ATTENDEE"))
    assert "SCHEDULE-AGENT=CLIENT" in attendee


def test_race_between_read_and_put_loses_nothing(
    tm: Cli, student: StudentSide, radicale_server: RadicaleServer
) -> None:
    tm.ok("invite", "TM-1", "ann@example.org")
    href = href_of(tm)
    config = load_config(tm.config)
    store = open_store(config.store.url)
    publisher = Publisher(config, store)
    calendar = publisher.calendar
    real_update = calendar.update
    raced = []

    def update_after_a_student_answers(h: str, body: str, etag: str):  # type: ignore[no-untyped-def]
        if not raced:
            # The student's answer lands between our GET and our PUT.
            student.answer(href, {"ann@example.org": "DECLINED"})
            raced.append(True)
        return real_update(h, body, etag)

    calendar.update = update_after_a_student_answers  # type: ignore[method-assign]
    publisher.invite("TM-1", ["bob@example.org"])
    assert raced
    assert student.partstats(href) == {
        "ann@example.org": "DECLINED",
        "bob@example.org": "NEEDS-ACTION",
    }
    # The store does not know Ann's answer yet, so it must not claim this version as
    # its own: the next poll fetches it.
    with store.transaction() as db:
        assert get_session(db, "TM-1").etag is None
    store.close()


def test_awkward_names_round_trip(tm: Cli, student: StudentSide) -> None:
    names = {
        "d1@example.org": "Lee, Ann; Jr.",
        "d2@example.org": 'Bob "the Builder" Müller',
        "d3@example.org": "Zoë Ångström-Ñúñez",
        "d4@example.org": "Line\nbreak: colon",
        "d5@example.org": "李小龍",
    }
    tm.ok(
        "session",
        "add",
        "AWK",
        "--title",
        'Naïve, "quoted"; title',
        "--start",
        "2026-12-01T09:00",
        "--end",
        "2026-12-01T10:00",
        "--description",
        "Two\nlines, ok;",
    )
    for email, name in names.items():
        tm.ok("person", "add", email, "--name", name)
    tm.ok("enroll", "AWK", *names)
    tm.ok("invite", "AWK", "--all-enrolled")
    event = student.event(href_of(tm, "AWK"))
    assert event.summary == 'Naïve, "quoted"; title'
    from tmcaldav.ical import normalise_name

    assert {a: s.name for a, s in event.attendees.items()} == {
        e: normalise_name(n) for e, n in names.items()
    }
    # Only what iCalendar parameters cannot hold is mapped (double quote, line break).
    assert event.attendees["d1@example.org"].name == "Lee, Ann; Jr."
    assert event.attendees["d3@example.org"].name == "Zoë Ångström-Ñúñez"


def test_two_hundred_students(tm: Cli, student: StudentSide, tmp_path: Path) -> None:
    rows = ["email,name"] + [f"s{i:03d}@example.org,Student {i}" for i in range(200)]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    tm.ok("import", str(tmp_path / "p.csv"), "--kind", "people")
    tm.ok(
        "session",
        "add",
        "BIG",
        "--title",
        "Big",
        "--start",
        "2026-12-01T09:00",
        "--end",
        "2026-12-01T10:00",
        "--capacity",
        "200",
    )
    tm.ok("enroll", "BIG", *[f"s{i:03d}@example.org" for i in range(200)])
    tm.ok("invite", "BIG", "--all-enrolled")
    href = href_of(tm, "BIG")
    student.answer(href, {"s007@example.org": "ACCEPTED"})
    tm.ok("session", "edit", "BIG", "--location", "Hall")
    states = student.partstats(href)
    assert len(states) == 200 and states["s007@example.org"] == "ACCEPTED"


def test_wrong_password_changes_nothing(tm: Cli, tmp_path: Path) -> None:
    (tmp_path / "caldav.pw").write_text("wrong-password-xyz")
    result = tm("invite", "TM-1", "ann@example.org")
    assert result.exit_code == 1
    assert "organizer" in result.output and "127.0.0.1" in result.output
    assert "wrong-password-xyz" not in result.output
    assert "Traceback" not in result.output
    p = page(tm)
    assert p["calendar_state"] == "unpublished"
    assert {s["calendar"] for s in p["students"]} == {"not_invited"}


def test_server_down_changes_nothing(tm: Cli, radicale_server: RadicaleServer) -> None:
    radicale_server.stop()
    result = tm("invite", "TM-1", "ann@example.org")
    assert result.exit_code == 1
    assert "127.0.0.1" in result.output and "Traceback" not in result.output
    p = page(tm)
    assert p["calendar_state"] == "unpublished" and p["uid"] is None
    assert {s["calendar"] for s in p["students"]} == {"not_invited"}


def test_edit_fails_when_server_down_and_store_unchanged(
    tm: Cli, radicale_server: RadicaleServer
) -> None:
    tm.ok("invite", "TM-1", "--all-enrolled")
    radicale_server.stop()
    result = tm(
        "session", "edit", "TM-1", "--start", "2026-12-03T09:00", "--end", "2026-12-03T10:00"
    )
    assert result.exit_code == 1
    p = page(tm)
    assert p["start"] == "2026-12-01T09:00:00+01:00" and p["sequence"] == 0
    assert {s["calendar_reason"] for s in p["students"]} == {None}


def test_event_deleted_on_server_is_recreated(
    tm: Cli, student: StudentSide, caplog: pytest.LogCaptureFixture
) -> None:
    tm.ok("invite", "TM-1", "ann@example.org")
    href = href_of(tm)
    student.delete(href)
    tm.ok("invite", "TM-1", "bob@example.org")
    assert student.partstats(href_of(tm)) == {
        "ann@example.org": "NEEDS-ACTION",
        "bob@example.org": "NEEDS-ACTION",
    }


def test_publish_after_import(tm: Cli, student: StudentSide, tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text(
        "key,title,start,end\nA,a,2026-12-01T09:00,2026-12-01T10:00\n"
        "B,b,2026-12-02T09:00,2026-12-02T10:00\n"
    )
    tm.ok("import", str(tmp_path / "s.csv"), "--kind", "sessions")
    out = tm.ok("publish").output
    assert "published 3 of 3 sessions" in out
    assert len(student.hrefs()) == 3
    assert "published 0 of 0" in tm.ok("publish").output
    assert "published 3 of 3" in tm.ok("publish", "--all").output
    assert len(student.hrefs()) == 3


def test_doctor(tm: Cli) -> None:
    out = tm.ok("doctor").output
    assert "ok   caldav:" in out
    assert "sync-collection" in out
    assert 'scheduling.mode = "server" but the server does no scheduling' in out


def test_doctor_fails_on_bad_password(tm: Cli, tmp_path: Path) -> None:
    (tmp_path / "caldav.pw").write_text("nope")
    result = tm("doctor")
    assert result.exit_code == 1 and "FAIL caldav" in result.output


def small_server_session(tmp_path: Path, emails: list[str]):  # type: ignore[no-untyped-def]
    """A Radicale that refuses items over 6,000 bytes (with 412), and a session S with
    `emails` enrolled."""
    from tmcaldav.testing import start_radicale

    # Radicale answers 412 for an item over max_resource_size, as for a stale ETag.
    server = start_radicale(tmp_path / "small", server_options={"max_resource_size": "6000"})
    tm = cli_for(tmp_path, server, f"sqlite:///{tmp_path / 'store.db'}")
    add_session(tm, "S", title="t", end="2026-12-01T10:00")
    for email in emails:
        tm.ok("person", "add", email, "--name", f"Student {email}")
    tm.ok("enroll", "S", *emails)
    return server, tm


def test_event_too_large_for_the_server_is_a_clear_error(tmp_path: Path) -> None:
    server, tm = small_server_session(tmp_path, ["a0@example.org"])
    try:
        tm.ok("invite", "S", "--all-enrolled")
        emails = [f"a{i}@example.org" for i in range(1, 60)]
        for email in emails:
            tm.ok("person", "add", email, "--name", f"Student {email}")
        tm.ok("enroll", "S", *emails)
        result = tm("invite", "S", "--all-enrolled")
        assert result.exit_code == 1
        assert "refused the event although nobody changed it" in result.output
        assert "too large" in result.output
        # Reported at the first refusal (not "kept changing" after every retry).
        assert "kept changing" not in result.output
        students = {s["email"]: s["calendar"] for s in page(tm, "S")["students"]}
        assert students["a1@example.org"] == "not_invited"  # the store is unchanged
        assert StudentSide(server).partstats(href_of(tm, "S")) == {"a0@example.org": "NEEDS-ACTION"}
    finally:
        server.stop()


def test_new_event_too_large_is_a_clear_error(tmp_path: Path) -> None:
    server, tm = small_server_session(tmp_path, [f"a{i}@example.org" for i in range(60)])
    try:
        result = tm("invite", "S", "--all-enrolled")
        assert result.exit_code == 1
        assert "refused to create the event" in result.output and "too large" in result.output
        assert page(tm, "S")["calendar_state"] == "unpublished"
        assert StudentSide(server).hrefs() == []
    finally:
        server.stop()


def test_event_left_by_a_lost_store_write_is_adopted(
    tm: Cli, student: StudentSide, tmp_path: Path
) -> None:
    # An earlier run created the event, then its store write was lost: the next
    # publish finds the event by its UID, merges into it, and keeps the answers.
    tm.ok("invite", "TM-1", "ann@example.org")
    href = href_of(tm)
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    store = open_store(load_config(tm.config).store.url)
    with store.transaction() as db:
        session = get_session(db, "TM-1")
        session.uid = session.href = session.etag = None
        session.calendar_state = "unpublished"
    store.close()
    tm.ok("invite", "TM-1", "bob@example.org")
    assert student.hrefs() == [href]
    assert student.partstats(href) == {
        "ann@example.org": "ACCEPTED",
        "bob@example.org": "NEEDS-ACTION",
    }


def test_store_changed_during_the_write_is_reconciled_by_the_next_poll(
    tm: Cli, student: StudentSide
) -> None:
    from tmcaldav.publish import PublishError
    from tmcaldav.sync import Poller

    config = load_config(tm.config)
    store = open_store(config.store.url)
    publisher = Publisher(config, store)
    calendar = publisher.calendar
    real_create = calendar.create

    def create_while_someone_cancels(uid: str, body: str):  # type: ignore[no-untyped-def]
        # Another administrator cancels Ann between our plan and our write.
        with store.transaction() as db:
            ann = next(
                e
                for e in get_session(db, "TM-1").enrollments
                if e.person.email == "ann@example.org"
            )
            ann.status = "cancelled"
        return real_create(uid, body)

    calendar.create = create_while_someone_cancels  # type: ignore[method-assign]
    with pytest.raises(PublishError, match="the store changed while the event was being written"):
        publisher.invite("TM-1", ["ann@example.org"])
    calendar.create = real_create  # type: ignore[method-assign]
    with store.transaction() as db:
        session = get_session(db, "TM-1")
        assert (session.calendar_state, session.etag) == ("published", None)
        href = session.href
    assert href and student.partstats(href) == {"ann@example.org": "NEEDS-ACTION"}
    # The next poll reads the event (its ETag is not "ours") and records what it holds.
    Poller.for_config(config, store, calendar).poll()
    with store.transaction() as db:
        ann = next(
            e for e in get_session(db, "TM-1").enrollments if e.person.email == "ann@example.org"
        )
        assert (ann.status, ann.calendar_status) == ("cancelled", "invited")
    store.close()
