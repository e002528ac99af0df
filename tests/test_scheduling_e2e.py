"""Server mode end to end on real RFC 6638 scheduling servers, through tmcaldav's own CLI.

Each test runs on Cyrus CalDAV and on Xandikos (multi-user; fixtures from
tests/scheduling_servers.py). tmcaldav logs in as ``organizer`` and publishes into a
calendar of its own making (both servers schedule from any calendar of the organizer);
the four students answer in their own calendars, as their calendar programs would, and
the servers bring the answers back into the organizer's copy. Where the servers differ,
what tmcaldav shows is asserted per server profile (docs/servers.md).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import Cli, write_config
from tests.scheduling_servers import (
    SchedulingServer,
    cyrus_server_fixture,  # noqa: F401 - fixture
    scheduling_server_fixture,  # noqa: F401 - fixture
    xandikos_server_fixture,  # noqa: F401 - fixture
)
from tests.test_scheduling_servers import (
    answer_as,
    attendee,
    copy_of,
    find_copy,
    get,
    prop_text,
    vevent,
)
from tmcaldav.app import open_store
from tmcaldav.caldav.profiles import PROFILES

START = "2027-03-01T09:00"
END = "2027-03-01T17:00"


class Office:
    """tmcaldav as the training office runs it against one scheduling server."""

    def __init__(
        self,
        server: SchedulingServer,
        tmp_path: Path,
        organizer_email: str,
        *,
        own_calendar: bool | None = None,
    ) -> None:
        """A store and config for ``organizer_email``. With ``own_calendar`` the sessions
        go into a calendar tmcaldav makes; by default only where the server brings the
        answers back to it (Cyrus), else into the schedule-default calendar (Xandikos)."""
        self.server = server
        self.key = f"E2E-{uuid.uuid4().hex[:10]}"
        pw = tmp_path / "caldav.pw"
        pw.write_text(server.users[server.organizer])
        pw.chmod(0o600)
        if own_calendar is None:
            own_calendar = PROFILES[server.name].replies_in_any_calendar
        calendar = f'calendar = "t{uuid.uuid4().hex[:8]}"\n' if own_calendar else ""
        self.config = write_config(
            tmp_path / "daemon.toml",
            f"sqlite:///{tmp_path / 'store.db'}",
            f'mode = "server"\n\n[caldav]\nurl = "{server.url}"\n'
            f'username = "{server.organizer}"\npassword_file = "{pw}"\n'
            f"{calendar}timeout = 30\n",
        )
        text = self.config.read_text().replace(
            'organizer_email = "training@example.org"', f'organizer_email = "{organizer_email}"'
        )
        self.config.write_text(text)
        self.tm = Cli(self.config)
        self.tm.ok("db", "upgrade")
        self.students = [server.address(s) for s in server.students]
        for n, email in enumerate(self.students, 1):
            self.tm.ok("person", "add", email, "--name", f"Student {n}")
        self.tm.ok(
            "session",
            "add",
            self.key,
            "--title",
            "Scheduling e2e",
            "--start",
            START,
            "--end",
            END,
            "--tz",
            "Europe/Berlin",
        )
        self.tm.ok("enroll", self.key, *self.students)

    def page(self) -> dict[str, Any]:
        """The session page as JSON."""
        page: dict[str, Any] = json.loads(self.tm.ok("session", "show", self.key, "--json").output)
        return page

    def rows(self) -> dict[str, dict[str, Any]]:
        """Each student's row of the session page."""
        return {s["email"]: s for s in self.page()["students"]}

    def columns(self, *names: str) -> dict[str, tuple[Any, ...]]:
        """Each student's values in these columns of the session page."""
        return {email: tuple(row[n] for n in names) for email, row in self.rows().items()}

    def history(self, email: str) -> list[dict[str, Any]]:
        """One student's history as JSON."""
        rows: list[dict[str, Any]] = json.loads(
            self.tm.ok("session", "history", self.key, email, "--json").output
        )
        return rows

    @property
    def uid(self) -> str:
        uid = self.page()["uid"]
        assert uid
        return str(uid)

    def organizer_copy(self) -> str:
        """The organizer's copy as the server holds it now."""
        store_href = self._href()
        return get(self.server, self.server.organizer, store_href).text

    def _href(self) -> str:
        from tmcaldav.config import load_config
        from tmcaldav.store import get_session

        store = open_store(load_config(self.config).store.url)
        try:
            with store.transaction() as db:
                href = get_session(db, self.key).href
        finally:
            store.close()
        assert href
        return href


def _user(server: SchedulingServer, email: str) -> str:
    return email.split("@")[0]


def test_invite_answer_reschedule_cancel(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    server = scheduling_server
    profile = PROFILES[server.name]
    office = Office(server, tmp_path, server.address(server.organizer))
    doctor = office.tm.ok("doctor").output
    assert f"server profile: {server.name} (" in doctor
    assert "is one of the login's calendar addresses" in doctor

    # ---- invite 4: each delivered, the server's status recorded
    office.tm.ok("invite", office.key, "--all-enrolled")
    delivered = ("invited", "delivered", server.profile.delivered_status)
    assert office.columns("calendar", "delivery_status", "schedule_status") == dict.fromkeys(
        office.students, delivered
    )
    rows = office.rows()
    for email in office.students:
        assert rows[email]["schedule_status_meaning"].startswith("delivered")
        (check,) = office.history(email)
        assert (check["event"], check["reason"], check["delivery_status"]) == (
            "delivery",
            "invite",
            "delivered",
        )
    uid = office.uid
    for email in office.students:
        copy = copy_of(server, _user(server, email), uid)
        assert attendee(copy.text, email).params["PARTSTAT"] == "NEEDS-ACTION"
    assert "⚠" not in office.tm.ok("session", "show", office.key).output

    # ---- the students answer in their own calendars
    s1, s2, s3, s4 = office.students
    before = datetime.now(UTC).replace(microsecond=0)
    answer_as(server, _user(server, s1), uid, "ACCEPTED")
    answer_as(server, _user(server, s2), uid, "DECLINED", **{"X-RESPONSE-COMMENT": "Ill, sorry"})
    answer_as(server, _user(server, s3), uid, "TENTATIVE")
    after = datetime.now(UTC) + timedelta(seconds=1)
    office.tm.ok("sync")
    rows = office.rows()
    assert {e: rows[e]["calendar"] for e in office.students} == {
        s1: "accepted",
        s2: "declined",
        s3: "tentative",
        s4: "invited",
    }
    stored = office.organizer_copy()
    for email in (s1, s2, s3):
        answered = datetime.fromisoformat(rows[email]["responded_at"])
        (answer,) = [h for h in office.history(email) if h["event"] == "answer"]
        if profile.answer_time_param:
            # Cyrus: the answer time is the server's own record of it, to the second.
            stamp = attendee(stored, email).params[profile.answer_time_param]
            assert answered == datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            assert answer["evidence"] == "server-dtstamp"
        else:
            # Xandikos keeps no answer time in the event: the DTSTAMP of the REPLY in the
            # organizer's inbox (tests/test_schedule_inbox.py).
            assert answer["evidence"] == "reply-dtstamp"
        assert before - timedelta(seconds=2) <= answered <= datetime.now(UTC)
        if profile.answer_time_param:
            assert answered <= after
    # Neither server copies the student's note into the organizer's copy (docs/servers.md):
    # it comes from the REPLY in the organizer's inbox.
    assert [n["text"] for n in rows[s2]["notes"]] == ["Ill, sorry"]
    assert not profile.keeps_attendee_note

    # ---- reschedule: reaches every copy, answers reset here
    result = office.tm(
        "session", "edit", office.key, "--start", "2027-03-02T09:00", "--end", "2027-03-02T17:00"
    )
    assert result.exit_code == 0, result.output
    if not profile.reschedule_resets_student_copy:
        assert "leaves each student's old answer in their own calendar" in result.output
    rescheduled = ("invited", "rescheduled", "delivered")
    assert office.columns("calendar", "calendar_reason", "delivery_status") == dict.fromkeys(
        office.students, rescheduled
    )
    for email in office.students:
        assert office.history(email)[-1]["reason"] == "reschedule"
        copy = copy_of(server, _user(server, email), uid)
        assert prop_text(vevent(copy.text), "DTSTART").startswith("20270302T"), copy.text
    own_answers = {
        email: attendee(copy_of(server, _user(server, email), uid).text, email).params["PARTSTAT"]
        for email in (s1, s2)
    }
    if profile.reschedule_resets_student_copy:
        assert own_answers == {s1: "NEEDS-ACTION", s2: "NEEDS-ACTION"}
    else:
        # Xandikos: the students' calendars still show their old answers.
        assert own_answers == {s1: "ACCEPTED", s2: "DECLINED"}
    office.tm.ok("sync")
    assert {r["calendar"] for r in office.rows().values()} == {"invited"}

    # Answering again after the new time: a changed answer reaches tmcaldav on both
    # servers; re-giving the old answer reaches it only where the copy was reset.
    answer_as(server, _user(server, s2), uid, "ACCEPTED")
    answer_as(server, _user(server, s1), uid, "ACCEPTED")
    office.tm.ok("sync")
    rows = office.rows()
    assert rows[s2]["calendar"] == "accepted"
    assert rows[s1]["calendar"] == (
        "accepted" if profile.reschedule_resets_student_copy else "invited"
    )

    # ---- cancel: every student's copy is marked cancelled
    office.tm.ok("session", "cancel", office.key)
    for email in office.students:
        copy = copy_of(server, _user(server, email), uid)
        assert str(vevent(copy.text)["STATUS"]) == "CANCELLED", copy.text


def test_wrong_organizer_is_caught_by_doctor_and_invite(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    """ORGANIZER not an address of the login: the servers store the event and invite
    nobody. doctor fails with the fix; invite exits 1 naming every student, who shows
    ⚠ not delivered; with organizer_email fixed, --resend delivers."""
    server = scheduling_server
    office = Office(server, tmp_path, f"office@{server.address(server.organizer).split('@')[1]}")
    result = office.tm("doctor")
    assert result.exit_code == 1, result.output
    assert "FAIL organizer_email office@example.org is not one of the calendar addresses" in (
        result.output
    )
    assert server.address(server.organizer) in result.output

    result = office.tm("invite", office.key, "--all-enrolled")
    assert result.exit_code == 1, result.output
    assert "did not deliver the invitation to 4 students" in result.output
    for email in office.students:
        assert f"⚠ {email}: no SCHEDULE-STATUS" in result.output
    assert "organizer_email must be one of the login's calendar addresses" in result.output
    assert "--resend" in result.output
    not_delivered = ("invited", "not_delivered", None)
    assert office.columns("calendar", "delivery_status", "schedule_status") == dict.fromkeys(
        office.students, not_delivered
    )
    for row in office.rows().values():
        assert "organizer_email" in row["schedule_status_meaning"]
    shown = office.tm.ok("session", "show", office.key).output
    assert shown.count("⚠ not delivered") == 4
    history = office.tm.ok("session", "history", office.key, office.students[0]).output
    assert "not delivered" in history and "no SCHEDULE-STATUS" in history
    uid = office.uid
    assert all(find_copy(server, _user(server, e), uid) is None for e in office.students)
    # invite again without --resend: still failed, still named.
    assert office.tm("invite", office.key, office.students[0]).exit_code == 1

    # The fix the message names: the right organizer_email, then --resend. Cyrus refuses
    # to change the ORGANIZER of a stored event (403); tmcaldav replaces the copy, which
    # the server never scheduled, instead. Xandikos takes the change.
    office.config.write_text(
        office.config.read_text().replace("office@example.org", server.address(server.organizer))
    )
    office.tm.ok("doctor")
    office.tm.ok("invite", office.key, "--all-enrolled", "--resend")
    rows = office.rows()
    for email in office.students:
        assert rows[email]["delivery_status"] == "delivered", rows[email]
        assert rows[email]["schedule_status"] == server.profile.delivered_status
        assert [h["delivery_status"] for h in office.history(email)][-1] == "delivered"
        assert office.history(email)[-1]["reason"] == "resend"
        assert find_copy(server, _user(server, email), uid) is not None
    assert f"mailto:{server.address(server.organizer)}" in office.organizer_copy()
    assert "⚠" not in office.tm.ok("session", "show", office.key).output


def test_doctor_knows_where_answers_come_back(
    scheduling_server: SchedulingServer, tmp_path: Path
) -> None:
    """Both servers send invitations from any calendar of the organizer; only Cyrus
    brings the answers back into one that is not the schedule-default calendar."""
    server = scheduling_server
    office = Office(server, tmp_path, server.address(server.organizer), own_calendar=True)
    result = office.tm("doctor")
    if PROFILES[server.name].replies_in_any_calendar:
        assert result.exit_code == 0, result.output
        assert "schedules from any calendar and brings answers back to it" in result.output
    else:
        assert result.exit_code == 1, result.output
        assert "brings the students' answers back only into the default" in result.output
        assert "remove [caldav] calendar" in result.output
