"""Polling answers from a real Radicale into the store: the heart of the product."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.plugin_world import NAMES
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.publish import Publisher
from tmcaldav.store import get_session
from tmcaldav.store.model import SyncState
from tmcaldav.sync import EmptyCalendar, Poller
from tmcaldav.testing import FaultProxy, RadicaleServer

STUDENTS = NAMES


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer) -> Cli:
    runner = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    add_people(runner, STUDENTS)
    add_session(runner)
    runner.ok("enroll", "TM-1", *STUDENTS)
    runner.ok("invite", "TM-1", "--all-enrolled")
    return runner


@pytest.fixture
def student(radicale_server: RadicaleServer) -> StudentSide:
    return StudentSide(radicale_server)


class World:
    """The store, a poller and the student's side, for tests that look inside."""

    def __init__(self, tm: Cli, student: StudentSide):
        self.config = load_config(tm.config)
        self.store = open_store(self.config.store.url)
        self.publisher = Publisher(self.config, self.store)
        self.poller = Poller(
            self.store, self.publisher.calendar, self.config.scheduling.organizer_email
        )
        self.student = student

    def href(self, key: str = "TM-1") -> str:
        with self.store.transaction() as db:
            href = get_session(db, key).href
        assert href
        return href

    def responded_at(self, email: str, key: str = "TM-1") -> datetime | None:
        with self.store.transaction() as db:
            return next(
                e.responded_at for e in get_session(db, key).enrollments if e.person.email == email
            )

    def calendars(self, key: str = "TM-1") -> dict[str, str]:
        with self.store.transaction() as db:
            return {e.person.email: e.calendar_status for e in get_session(db, key).enrollments}


@pytest.fixture
def world(tm: Cli, student: StudentSide) -> World:
    w = World(tm, student)
    w.poller.poll()  # the first full sync
    return w


def ann_in_another_session(tm: Cli, key: str) -> None:
    """A second published session with Ann invited."""
    add_session(tm, key, title=f"Other {key}", end="2026-12-01T10:00")
    tm.ok("enroll", key, "ann@example.org")
    tm.ok("invite", key, "--all-enrolled")


def page(tm: Cli, key: str = "TM-1") -> dict:
    return json.loads(tm.ok("session", "show", key, "--json").output)


def test_every_kind_of_answer(tm: Cli, world: World, student: StudentSide) -> None:
    href = world.href()
    before = datetime.now(UTC).replace(microsecond=0)  # the page shows whole seconds
    text, etag = student.get(href)
    from tmcaldav.ical import set_partstats

    text = set_partstats(
        text,
        {
            "ann@example.org": "ACCEPTED",
            "bob@example.org": "DECLINED",
            "cy@example.org": "tentative",  # lower case, as some servers store it
            "dee@example.org": "DELEGATED",
            "eve@example.org": "X-SOMETHING-NEW",
            "fay@example.org": "ACCEPTED",
        },
    )
    # Outlook's spelling of an address.
    text = text.replace("mailto:fay@example.org", "MAILTO:Fay@Example.ORG")
    assert "MAILTO:Fay@Example.ORG" in text
    student.put(href, text, etag)
    out = tm.ok("sync").output
    after = datetime.now(UTC)
    assert "5 answers recorded" in out
    students = {s["email"]: s for s in page(tm)["students"]}
    assert {e: (s["calendar"], s["icon"]) for e, s in students.items()} == {
        "ann@example.org": ("accepted", "✓"),
        "bob@example.org": ("declined", "✗"),
        "cy@example.org": ("tentative", "?"),
        "dee@example.org": ("delegated", "↪"),
        "eve@example.org": ("invited", "✉"),
        "fay@example.org": ("accepted", "✓"),
    }
    for email in (
        "ann@example.org",
        "bob@example.org",
        "cy@example.org",
        "dee@example.org",
        "fay@example.org",
    ):
        answered = datetime.fromisoformat(students[email]["responded_at"])
        assert before <= answered <= after
    assert students["eve@example.org"]["responded_at"] is None
    # Nothing new: a second poll records nothing.
    assert "0 answers recorded" in tm.ok("sync").output


def test_changed_mind_keeps_history(tm: Cli, world: World, student: StudentSide) -> None:
    href = world.href()
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    world.poller.poll()
    first = page(tm)["students"][0]["responded_at"]
    first_exact = world.responded_at("ann@example.org")
    student.answer(href, {"ann@example.org": "DECLINED"})
    world.poller.poll()
    ann = next(s for s in page(tm)["students"] if s["email"] == "ann@example.org")
    assert ann["calendar"] == "declined" and ann["responded_at"] >= first
    assert world.responded_at("ann@example.org") > first_exact
    history = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [(h["calendar"], h["source"]) for h in history] == [
        ("accepted", "poll"),
        ("declined", "poll"),
    ]
    assert history[0]["responded_at"] == first
    text = tm.ok("session", "history", "TM-1", "ann@example.org").output
    assert "✓ accepted" in text and "✗ declined" in text


def test_delegate_is_reported_never_enrolled(
    tm: Cli, world: World, student: StudentSide, caplog: pytest.LogCaptureFixture
) -> None:
    href = world.href()
    text, etag = student.get(href)
    from tmcaldav.ical import set_partstats

    text = set_partstats(text, {"dee@example.org": "DELEGATED"})
    text = text.replace(
        "END:VEVENT",
        'ATTENDEE;CN=Stand In;PARTSTAT=NEEDS-ACTION;DELEGATED-FROM="mailto:dee@example.org"'
        ":mailto:standin@example.org\r\nEND:VEVENT",
    )
    student.put(href, text, etag)
    with caplog.at_level(logging.WARNING, logger="tmcaldav"):
        result = world.poller.poll()
    assert [(s.email, s.calendar_status) for s in result.strangers] == [
        ("standin@example.org", "invited")
    ]
    assert (
        "session TM-1: 1 attendee(s) on the server are not enrolled (added in another client, "
        "or delegates); not enrolled: standin@example.org" in caplog.text
    )
    assert "standin@example.org" not in {s["email"] for s in page(tm)["students"]}
    assert world.calendars()["dee@example.org"] == "delegated"


def test_answer_on_cancelled_enrollment_is_recorded(
    tm: Cli, world: World, student: StudentSide
) -> None:
    # Cancelled in the store while the event still lists the student (e.g. the removal
    # has not reached the server): the answer is recorded, flagged for the hooks.
    with world.store.transaction() as db:
        enrollment = next(
            e for e in get_session(db, "TM-1").enrollments if e.person.email == "bob@example.org"
        )
        enrollment.status = "cancelled"
    student.answer(world.href(), {"bob@example.org": "DECLINED"})
    world.poller.poll()
    assert world.calendars()["bob@example.org"] == "declined"
    from sqlalchemy import select

    from tmcaldav.store.model import Outbox

    with world.store.transaction() as db:
        rows = db.scalars(select(Outbox).where(Outbox.hook == "response")).all()
        assert [r.payload["enrollment_status"] for r in rows] == ["cancelled"]


def test_request_counts(tm: Cli, student: StudentSide, tmp_path: Path) -> None:
    for n in range(2, 13):
        ann_in_another_session(tm, f"TM-{n}")
    world = World(tm, student)
    world.poller.poll()
    calendar = world.poller.calendar
    before = calendar.request_count
    assert world.poller.poll().answers == 0
    assert calendar.request_count - before == 1
    for n in (3, 7, 11):
        student.answer(world.href(f"TM-{n}"), {"ann@example.org": "ACCEPTED"})
    before = calendar.request_count
    result = world.poller.poll()
    assert (result.answers, result.changed_events) == (3, 3)
    assert calendar.request_count - before == 2
    # Our own write is recognised by its ETag: not news, not even parsed.
    tm.ok("session", "edit", "TM-5", "--location", "elsewhere")
    result = world.poller.poll()
    assert (result.answers, result.changed_events) == (0, 0)


def test_invalid_token_triggers_a_full_resync(
    tm: Cli, world: World, student: StudentSide, caplog: pytest.LogCaptureFixture
) -> None:
    with world.store.transaction() as db:
        db.query(SyncState).update({"sync_token": "http://radicale.org/ns/sync/0000bogus"})
    student.answer(world.href(), {"ann@example.org": "TENTATIVE"})
    with caplog.at_level(logging.INFO, logger="tmcaldav"):
        result = world.poller.poll()
    assert result.full and result.answers == 1
    assert caplog.text.count("no longer valid; doing a full resync") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert world.calendars()["ann@example.org"] == "tentative"
    assert not world.poller.poll().full


def test_server_restart_between_polls(
    tm: Cli, world: World, student: StudentSide, radicale_server: RadicaleServer
) -> None:
    radicale_server.stop()
    radicale_server.start()
    student.answer(world.href(), {"bob@example.org": "ACCEPTED"})
    result = world.poller.poll()
    assert (result.full, result.answers) == (False, 1)


def test_malformed_objects_are_skipped(
    tm: Cli,
    world: World,
    student: StudentSide,
    radicale_server: RadicaleServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Radicale refuses bad iCalendar over HTTP, so put it into its storage folder, as a
    # broken sync tool or a restored backup would.
    folder = radicale_server.storage_dir / "collection-root" / "organizer" / "trainings"
    assert folder.is_dir()
    (folder / "garbage.ics").write_bytes(b"this is not iCalendar at all\xff")
    (folder / "novevent.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:t1\r\n"
        "SUMMARY:todo\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    )
    (folder / "nouid.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\n"
        "DTSTART:20261201T090000Z\r\nSUMMARY:no uid\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    student.answer(world.href(), {"cy@example.org": "ACCEPTED"})
    with caplog.at_level(logging.WARNING, logger="tmcaldav"):
        try:
            result = world.poller.poll()
        except Exception as e:  # Radicale may refuse to serve what it cannot parse
            pytest.fail(f"a malformed object broke the whole poll: {e}")
    assert result.answers == 1
    assert world.calendars()["cy@example.org"] == "accepted"
    served = student.hrefs()
    # Radicale 3.9 serves the VTODO-only object and hides the two it cannot parse.
    assert any(h.endswith("novevent.ics") for h in result.skipped)
    for name in ("garbage.ics", "novevent.ics", "nouid.ics"):
        if any(h.endswith(name) for h in served):
            assert any(h.endswith(name) for h in result.skipped), (name, result.skipped)
            assert name in caplog.text


def test_deleted_event_marks_session_missing(tm: Cli, world: World, student: StudentSide) -> None:
    ann_in_another_session(tm, "TM-2")
    student.answer(world.href(), {"ann@example.org": "ACCEPTED"})
    world.poller.poll()
    student.delete(world.href())
    result = world.poller.poll()
    assert result.missing == ["TM-1"]
    p = page(tm)
    assert p["calendar_state"] == "missing"
    ann = next(s for s in p["students"] if s["email"] == "ann@example.org")
    assert ann["calendar"] == "accepted"  # answers are never wiped
    assert "missing on the CalDAV server" in tm.ok("session", "show", "TM-1").output
    assert "TM-1" in tm.ok("doctor").output
    # invite recreates it, with the answers the store knows.
    tm.ok("invite", "TM-1", "--all-enrolled")
    assert student.partstats(world.href())["ann@example.org"] == "ACCEPTED"
    assert page(tm)["calendar_state"] == "published"


def test_emptied_calendar_needs_confirmation(tm: Cli, world: World, student: StudentSide) -> None:
    student.answer(world.href(), {"ann@example.org": "ACCEPTED"})
    world.poller.poll()
    for href in student.hrefs():
        student.delete(href)
    with world.store.transaction() as db:
        token = db.query(SyncState).one().sync_token
    result = tm("sync")
    assert result.exit_code == 1
    assert "no longer lists the sessions published there (1 session)" in result.output
    assert "--accept-empty" in result.output
    with pytest.raises(EmptyCalendar):
        world.poller.poll()
    with world.store.transaction() as db:
        assert db.query(SyncState).one().sync_token == token
    assert page(tm)["calendar_state"] == "published"
    tm.ok("sync", "--accept-empty")
    p = page(tm)
    assert p["calendar_state"] == "missing"
    assert (
        next(s for s in p["students"] if s["email"] == "ann@example.org")["calendar"] == "accepted"
    )


@pytest.mark.parametrize("fault", ["status:500", "status:503", "xml", "stall"])
def test_server_faults_fail_the_poll_as_a_whole(
    tm: Cli, student: StudentSide, radicale_faults: FaultProxy, fault: str
) -> None:
    world = World(tm, student)
    world.poller.poll()
    student.answer(world.href(), {"ann@example.org": "ACCEPTED"})
    with world.store.transaction() as db:
        token = db.query(SyncState).one().sync_token
    # Point a new poller at the proxy, which breaks the next request.
    from dataclasses import replace

    from tmcaldav.caldav import CalendarError, CalendarService, CalendarSettings

    settings = CalendarSettings(
        url=radicale_faults.url,
        username="organizer",
        password=world.student.server.users["organizer"],
        calendar="trainings",
        timeout=2,
    )
    calendar = CalendarService.connect(settings)
    poller = Poller(world.store, calendar, "training@example.org")
    kind, _, arg = fault.partition(":")
    if kind == "status":
        radicale_faults.fail_next(int(arg), {"Retry-After": "7"} if arg == "503" else None)
    elif kind == "xml":
        radicale_faults.garble_next()
    else:
        radicale_faults.stall_next(5)
    with pytest.raises(CalendarError) as info:
        poller.poll()
    assert "127.0.0.1" in str(info.value)
    with world.store.transaction() as db:
        assert db.query(SyncState).one().sync_token == token
    assert world.calendars()["ann@example.org"] == "invited"
    assert poller.poll().answers == 1
    del replace


def test_server_without_sync_collection_compares_etags(tm: Cli, student: StudentSide) -> None:
    ann_in_another_session(tm, "TM-2")
    world = World(tm, student)
    calendar = world.poller.calendar
    # Play a server that does not offer RFC 6578: the poller must list and compare.
    calendar.supports_sync = False
    first = world.poller.poll()
    assert first.answers == 0
    before = calendar.request_count
    assert world.poller.poll().changed_events == 0
    assert calendar.request_count - before == 1  # the ctag alone said "unchanged"
    student.answer(world.href(), {"bob@example.org": "DECLINED"})
    result = world.poller.poll()
    assert (result.answers, result.changed_events) == (1, 1)
    assert world.calendars()["bob@example.org"] == "declined"
    student.delete(world.href())
    assert world.poller.poll().missing == ["TM-1"]


def test_the_same_answer_applied_twice_is_recorded_once(world: World) -> None:
    # Two pollers (or a poll and an iMIP REPLY) racing with the same answer: the one
    # that commits second finds it already shown and records nothing.
    from sqlalchemy import func, select

    from tmcaldav.store.model import Outbox, Response, utcnow
    from tmcaldav.sync import AnswerChange, apply_answers

    with world.store.transaction() as db:
        ann = next(
            e for e in get_session(db, "TM-1").enrollments if e.person.email == "ann@example.org"
        )
        change = AnswerChange(
            ann.id, "TM-1", "ann@example.org", "invited", "accepted", 0, None, "enrolled"
        )
    for _ in range(2):
        with world.store.transaction() as db:
            apply_answers(db, [change], source="poll", observed_at=utcnow())
    with world.store.transaction() as db:
        assert db.scalar(select(func.count()).select_from(Response)) == 1
        assert (
            db.scalar(select(func.count()).select_from(Outbox).where(Outbox.hook == "response"))
            == 1
        )
