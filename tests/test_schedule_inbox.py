"""The organizer's scheduling inbox in server mode, on the real Cyrus and Xandikos.

A scheduling server applies a student's answer to the organizer's copy, but keeps the
REPLY itself — its DTSTAMP (on Xandikos the only answer time) and the student's
comment — in the organizer's scheduling inbox (docs/servers.md). `tmcaldav sync` reads
those REPLYs after the calendar's changes, records them through the one apply step and
deletes each one it applied; what it cannot apply stays and is reported.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import icalendar
from sqlalchemy import select

from tests import test_scheduling_servers as dav
from tests.plugin_world import seed
from tests.scheduling_servers import (
    SchedulingServer,
    cyrus_server_fixture,  # noqa: F401 - fixture
    scheduling_server_fixture,  # noqa: F401 - fixture
    xandikos_server_fixture,  # noqa: F401 - fixture
)
from tests.test_scheduling_e2e import Office
from tmcaldav.app import App, open_store
from tmcaldav.caldav.profiles import PROFILES
from tmcaldav.imip.message import Reply
from tmcaldav.store import get_enrollment, get_session
from tmcaldav.store.model import Response
from tmcaldav.sync import apply_inbox_replies, inbox_reply


def _user(email: str) -> str:
    return email.split("@")[0]


def _reply_stamps(server: SchedulingServer, uid: str) -> dict[str, datetime]:
    """Each student's REPLY DTSTAMP in the organizer's inbox (the latest per student)."""
    stamps = {}
    for text in dav.inbox_messages(server, server.organizer, uid):
        event = dav.vevent(text)
        replier = event["ATTENDEE"]  # a REPLY names exactly one
        stamps[str(replier).removeprefix("mailto:")] = event.decoded("DTSTAMP").astimezone(UTC)
    return stamps


def _answer_with_comment(server: SchedulingServer, email: str, uid: str, comment: str) -> None:
    """The student accepts and writes a COMMENT on the event, as Apple Calendar does."""
    copy = dav.copy_of(server, _user(email), uid)

    def accept(event: icalendar.cal.Component) -> None:
        for line in event["ATTENDEE"]:  # the four students: a list
            if str(line) == f"mailto:{email}":
                line.params["PARTSTAT"] = "ACCEPTED"
        event.add("COMMENT", comment)

    assert dav.put(server, _user(email), copy, dav.edit(copy.text, accept)) in (200, 204)


def _answers(office: Office, email: str) -> list[tuple[str, str, str]]:
    return [
        (h["calendar"], h["responded_at"], h["evidence"])
        for h in office.history(email)
        if h["event"] == "answer"
    ]


def test_reply_brings_note_and_answer_time(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    """The comment of each student reaches the session page as a note; the answer time
    is the server's own (Cyrus) or the REPLY's DTSTAMP (Xandikos); the applied REPLYs
    are gone from the inbox, and a second sync records nothing new."""
    server = scheduling_server
    profile = PROFILES[server.name]
    office = Office(server, tmp_path, server.address(server.organizer))
    office.tm.ok("invite", office.key, "--all-enrolled")
    uid = office.uid
    s1, s2, s3, s4 = office.students
    dav.answer_as(server, _user(s1), uid, "DECLINED", **{"X-RESPONSE-COMMENT": "Ill, sorry"})
    _answer_with_comment(server, s2, uid, "I will bring my laptop")
    dav.answer_as(server, _user(s3), uid, "TENTATIVE")
    stamps = _reply_stamps(server, uid)
    assert set(stamps) == {s1, s2, s3}

    result = office.tm.ok("sync")
    assert "3 replies read from the inbox" in result.output
    rows = office.rows()
    assert [n["text"] for n in rows[s1]["notes"]] == ["Ill, sorry"]
    assert [n["text"] for n in rows[s2]["notes"]] == ["I will bring my laptop"]
    assert rows[s3]["notes"] == [] and rows[s4]["notes"] == []
    stored = office.organizer_copy()
    for email in (s1, s2, s3):
        # One answer each: the REPLY is the answer the poll read from the event.
        ((status, responded, evidence),) = _answers(office, email)
        assert status == rows[email]["calendar"]
        answered = datetime.fromisoformat(responded)
        assert answered == datetime.fromisoformat(rows[email]["responded_at"])
        if profile.answer_time_param:
            stamp = dav.attendee(stored, email).params[profile.answer_time_param]
            server_time = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            assert (answered, evidence) == (server_time, "server-dtstamp")
        else:
            assert (answered, evidence) == (stamps[email], "reply-dtstamp")
    assert dav.inbox_messages(server, server.organizer, uid) == []

    before = {email: office.history(email) for email in office.students}
    again = office.tm.ok("sync")
    assert "0 answers recorded" in again.output and "from the inbox" not in again.output
    assert {email: office.history(email) for email in office.students} == before
    assert [n["text"] for n in office.rows()[s1]["notes"]] == ["Ill, sorry"]


def test_answer_given_twice_between_polls(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    """A student accepts, then declines, before tmcaldav polls: the event shows the
    decline, dated by its own time; the acceptance goes into the history only."""
    server = scheduling_server
    office = Office(server, tmp_path, server.address(server.organizer))
    office.tm.ok("invite", office.key, "--all-enrolled")
    uid = office.uid
    email = office.students[0]
    dav.answer_as(server, _user(email), uid, "ACCEPTED")
    dav.answer_as(server, _user(email), uid, "DECLINED")
    assert len(dav.inbox_messages(server, server.organizer, uid)) == 2
    office.tm.ok("sync")
    row = office.rows()[email]
    assert row["calendar"] == "declined"
    answers = _answers(office, email)
    assert sorted(status for status, _, _ in answers) == ["accepted", "declined"]
    (declined,) = [a for a in answers if a[0] == "declined"]
    assert datetime.fromisoformat(declined[1]) == datetime.fromisoformat(row["responded_at"])
    assert dav.inbox_messages(server, server.organizer, uid) == []
    office.tm.ok("sync")
    assert _answers(office, email) == answers


def test_reply_for_unknown_event_is_left_and_reported(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    """A REPLY to an event tmcaldav did not publish (the office's own meeting, made in
    another client) stays in the inbox, logged with the reason, at every sync."""
    server = scheduling_server
    office = Office(server, tmp_path, server.address(server.organizer))
    uid = dav.new_uid()
    dav.publish(server, uid)
    dav.answer_as(server, server.students[0], uid, "ACCEPTED")
    (reply,) = dav.inbox_messages(server, server.organizer, uid)
    for _ in range(2):
        output = office.tm.ok("sync").output
        assert "1 reply left in the inbox (see the log)" in output
        assert "in the scheduling inbox: no published session has the UID" in output
        assert uid in output
        assert dav.inbox_messages(server, server.organizer, uid) == [reply]


def test_switched_off_and_what_it_costs(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    """`read_schedule_inbox = false` leaves the inbox alone (no note, REPLY kept); with
    it on, an idle poll costs exactly one request more (the inbox's PROPFIND)."""
    server = scheduling_server
    office = Office(server, tmp_path, server.address(server.organizer))
    text = office.config.read_text()
    off = text.replace("timeout = 30\n", "timeout = 30\nread_schedule_inbox = false\n")
    office.config.write_text(off)
    office.tm.ok("invite", office.key, "--all-enrolled")
    uid = office.uid
    email = office.students[0]
    dav.answer_as(server, _user(email), uid, "DECLINED", **{"X-RESPONSE-COMMENT": "Away"})
    office.tm.ok("sync")
    assert office.rows()[email]["notes"] == []
    assert len(dav.inbox_messages(server, server.organizer, uid)) == 1

    idle = {}
    for reads in (False, True):
        if reads:
            office.config.write_text(text)
        app = App(str(office.config))
        try:
            app.poll()
            calendar = app.publisher.calendar
            counted = calendar.request_count
            app.poll()
            idle[reads] = calendar.request_count - counted
        finally:
            app.close()
    assert idle[True] == idle[False] + 1, idle
    assert [n["text"] for n in office.rows()[email]["notes"]] == ["Away"]
    assert dav.inbox_messages(server, server.organizer, uid) == []


def test_unreadable_inbox_object_is_refused(tmp_path: Path) -> None:
    """Malformed iCalendar in the inbox is named, not applied; an object that is no
    REPLY (an invitation to the office's login) is not ours to judge (no server needed:
    neither reaches the store)."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    now = datetime.now(UTC)
    request = "BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\nUID:x\nEND:VEVENT\nEND:VCALENDAR\n"
    try:
        with store.scratch() as db:
            reason = inbox_reply(db, "not iCalendar at all", "organizer@example.org", now)
            assert str(reason).startswith("not readable iCalendar (")
            assert inbox_reply(db, request, "organizer@example.org", now) is None
    finally:
        store.close()


def test_reply_to_the_times_before_a_reschedule_is_history_only(tmp_path: Path) -> None:
    """A REPLY that names the session's former times (an offline client answering the
    old invitation after the reschedule) is kept in the history and moves nothing; one
    naming the current times is the answer (no server needed: the store decides)."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.upgrade()
    start = datetime(2027, 3, 1, 9, tzinfo=UTC)
    seed(store, enrolled=["ann@example.org"], start=start)
    with store.transaction() as db:  # rescheduled by an hour: SEQUENCE 1
        session = get_session(db, "TM-1")
        session.start_at, session.end_at = start + timedelta(hours=1), start + timedelta(hours=4)
        session.sequence = 1

    def reply(partstat: str, begins: datetime, sent: datetime) -> str:
        return (
            "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\nMETHOD:REPLY\nBEGIN:VEVENT\n"
            f"UID:uid-TM-1\nSEQUENCE:0\nDTSTAMP:{sent:%Y%m%dT%H%M%SZ}\n"
            f"DTSTART:{begins:%Y%m%dT%H%M%SZ}\nDTEND:{begins + timedelta(hours=3):%Y%m%dT%H%M%SZ}\n"
            "ORGANIZER:mailto:training@example.org\n"
            f"ATTENDEE;PARTSTAT={partstat}:mailto:ann@example.org\nEND:VEVENT\nEND:VCALENDAR\n"
        )

    def apply(body: str) -> str:
        now = datetime.now(UTC)
        with store.transaction() as db:
            verdict = inbox_reply(db, body, "training@example.org", now)
            assert isinstance(verdict, Reply), verdict
            apply_inbox_replies(db, [verdict], now)
        with store.scratch() as db:
            enrollment = get_enrollment(db, get_session(db, "TM-1"), "ann@example.org")
            return enrollment.calendar_status

    try:
        # Sent after the reschedule was made, to the old times: not an answer to the new.
        assert apply(reply("ACCEPTED", start, datetime.now(UTC))) == "invited"
        # The answer to the new times (sent a moment later: DTSTAMP has whole seconds).
        later = datetime.now(UTC) + timedelta(seconds=2)
        assert apply(reply("DECLINED", start + timedelta(hours=1), later)) == "declined"
        with store.scratch() as db:
            history = db.scalars(select(Response.calendar_status).order_by(Response.id)).all()
        assert history == ["accepted", "declined"]
    finally:
        store.close()
