"""Interoperability that tells the truth, on Radicale and on pure data: SCHEDULE-STATUS in
words, the evidence behind an answer's time, the student's own note, the login methods
(Basic, Digest, a renewing bearer token) and the server profiles.

The same features on real scheduling servers (Cyrus, Xandikos) are in
tests/test_scheduling_e2e.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests import scheduling_servers
from tests.auth_proxy import AuthProxy, start_auth_proxy
from tests.conftest import Cli, write_config
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.store_support import session_href
from tmcaldav import ical
from tmcaldav.app import App, open_store
from tmcaldav.caldav.profiles import GENERIC, PROFILES, detect_profile
from tmcaldav.config import ConfigError, parse_config
from tmcaldav.domain import AnswerEvidence, ServerDelivery
from tmcaldav.store.engine import _alembic_config, head_revision
from tmcaldav.store.model import Base
from tmcaldav.sync import KnownEnrollment, KnownSession, ServerEvent, diff
from tmcaldav.testing import RadicaleServer

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


# ---- SCHEDULE-STATUS in words -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "delivery", "code"),
    [
        ("1.2", ServerDelivery.DELIVERED, "1.2"),
        ("2.0;Success", ServerDelivery.DELIVERED, "2.0"),
        ("2.8;Success, repeated", ServerDelivery.DELIVERED, "2.8"),
        ("1.1", ServerDelivery.SENT, "1.1"),
        ("1.0", ServerDelivery.SENT, "1.0"),
        ("3.7;Invalid calendar user", ServerDelivery.NOT_DELIVERED, "3.7"),
        ("5.1", ServerDelivery.NOT_DELIVERED, "5.1"),
        ("5.3;No scheduling support for user", ServerDelivery.NOT_DELIVERED, "5.3"),
        ("3.7,1.2", ServerDelivery.DELIVERED, "1.2"),
        ("garbage", ServerDelivery.NOT_DELIVERED, None),
        (None, ServerDelivery.NOT_DELIVERED, None),
    ],
)
def test_schedule_status_in_words(raw: str | None, delivery: str, code: str | None) -> None:
    result = ical.read_schedule_status(raw)
    assert (result.delivery, result.code, result.schedule_status) == (delivery, code, raw)
    assert result.meaning
    assert result.delivered == (delivery != ServerDelivery.NOT_DELIVERED)
    if raw is None:
        assert "organizer_email" in result.meaning


# ---- reading the ATTENDEE line ------------------------------------------------------------

ORGANIZER_COPY = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
    "UID:tmcaldav-TM-1@example.org\r\nDTSTAMP:20261101T000000Z\r\n"
    "DTSTART:20261201T080000Z\r\nDTEND:20261201T160000Z\r\nSEQUENCE:2\r\n"
    "ORGANIZER:mailto:training@example.org\r\n"
    # Cyrus after a reply: X-DTSTAMP, X-SEQUENCE, no SCHEDULE-STATUS.
    "ATTENDEE;PARTSTAT=ACCEPTED;X-DTSTAMP=20261120T101500Z;X-SEQUENCE=1:\r\n"
    " mailto:ann@example.org\r\n"
    # Xandikos's quoted status.
    'ATTENDEE;PARTSTAT=NEEDS-ACTION;SCHEDULE-STATUS="3.7;Invalid calendar user":mai\r\n'
    " lto:bob@example.org\r\n"
    # A note kept on the line, Gmail-escaped.
    'ATTENDEE;PARTSTAT=DECLINED;X-RESPONSE-COMMENT="Sorry\\, I&#39\\;m away\\nback in J\r\n'
    ' anuary";SCHEDULE-STATUS=1.2:mailto:cy@example.org\r\n'
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def test_attendee_line_carries_status_note_and_server_time() -> None:
    plain = ical.read_event(ORGANIZER_COPY)
    ann, bob, cy = (plain.attendees[f"{name}@example.org"] for name in ("ann", "bob", "cy"))
    assert (ann.schedule_status, bob.schedule_status, cy.schedule_status) == (
        None,
        "3.7;Invalid calendar user",
        "1.2",
    )
    assert cy.comment == "Sorry, I'm away\nback in January"
    assert ann.comment is None and bob.comment is None
    # Without a profile's parameter no server time is read.
    assert ann.answered_at is None
    cyrus = ical.read_event(ORGANIZER_COPY, answer_time_param="X-DTSTAMP")
    assert cyrus.attendees["ann@example.org"].answered_at == datetime(
        2026, 11, 20, 10, 15, tzinfo=UTC
    )
    assert cyrus.attendees["bob@example.org"].answered_at is None


@pytest.mark.parametrize(
    ("param", "note"),
    [
        (
            '"Declined because it&#39\\;s outside of working hours"',
            "Declined because it's outside of working hours",
        ),
        ("Foo bar Bli blub", "Foo bar Bli blub"),
        ("a\\, b", "a, b"),  # unquoted, so split at the comma: joined again
        ('"line one\\nline two"', "line one\nline two"),
        ("\"^'quoted^' ^^\"", '"quoted" ^'),  # RFC 6868
        ('""', None),
    ],
)
def test_response_comment_is_unescaped(param: str, note: str | None) -> None:
    text = ORGANIZER_COPY.replace(
        "ATTENDEE;PARTSTAT=ACCEPTED;", f"ATTENDEE;X-RESPONSE-COMMENT={param};PARTSTAT=ACCEPTED;"
    )
    assert ical.read_event(text).attendees["ann@example.org"].comment == note


# ---- the evidence of when ------------------------------------------------------------------


def _session(**enrollments: KnownEnrollment) -> KnownSession:
    return KnownSession(
        1,
        "TM-1",
        "tmcaldav-TM-1@example.org",
        "/e.ics",
        "etag-old",
        2,
        "published",
        {f"{k}@example.org": v for k, v in enrollments.items()},
    )


def _answer(
    email: str,
    partstat: str,
    *,
    answered_at: datetime | None = None,
    reply_time: datetime | None = None,
) -> ical.AttendeeState:
    return ical.AttendeeState(
        email,
        None,
        partstat,
        ical.partstat_to_status(partstat),
        None,
        reply_time,
        answered_at=answered_at,
    )


def _event(*attendees: ical.AttendeeState, sequence: int = 2) -> ServerEvent:
    state = ical.EventState(
        uid="tmcaldav-TM-1@example.org",
        sequence=sequence,
        dtstamp=None,
        status=None,
        summary=None,
        start=None,
        end=None,
        organizer="training@example.org",
        attendees={a.email: a for a in attendees},
        duplicates=(),
        method=None,
        comment=None,
    )
    return ServerEvent("/e.ics", "etag-new", state)


def test_answer_time_prefers_the_servers_stamp_and_caps_the_future() -> None:
    known = _session(
        ann=KnownEnrollment(1, "ann@example.org", "enrolled", "invited", None, None),
        bob=KnownEnrollment(2, "bob@example.org", "enrolled", "invited", None, None),
        cy=KnownEnrollment(3, "cy@example.org", "enrolled", "invited", None, None),
        dee=KnownEnrollment(4, "dee@example.org", "enrolled", "invited", None, None),
    )
    earlier = NOW - timedelta(hours=3)
    found = diff(
        [known],
        [
            _event(
                _answer("ann@example.org", "ACCEPTED", answered_at=earlier),
                _answer("bob@example.org", "DECLINED", reply_time=earlier),
                _answer("cy@example.org", "TENTATIVE"),
                _answer("dee@example.org", "ACCEPTED", answered_at=NOW + timedelta(days=400)),
            )
        ],
        [],
        full=False,
        organizer="training@example.org",
        now=NOW,
    )
    got = {a.email: (a.dtstamp, a.evidence) for a in found.answers}
    assert got == {
        "ann@example.org": (earlier, AnswerEvidence.SERVER_DTSTAMP),
        "bob@example.org": (earlier, AnswerEvidence.REPLY_DTSTAMP),
        "cy@example.org": (None, AnswerEvidence.OBSERVED),
        # A stamp from the future counts as now.
        "dee@example.org": (NOW, AnswerEvidence.SERVER_DTSTAMP),
    }


def test_ordering_is_sequence_then_the_servers_time() -> None:
    shown = NOW - timedelta(hours=1)
    known = _session(
        ann=KnownEnrollment(1, "ann@example.org", "enrolled", "accepted", 2, shown),
    )

    def answers(attendee: ical.AttendeeState, sequence: int = 2) -> list[str]:
        found = diff(
            [known],
            [_event(attendee, sequence=sequence)],
            [],
            full=False,
            organizer="training@example.org",
            now=NOW,
        )
        return [a.new for a in found.answers]

    # Same SEQUENCE: an answer stamped before the one shown is older; after it, newer.
    assert answers(_answer("ann@example.org", "DECLINED", answered_at=shown - timedelta(1))) == []
    assert answers(_answer("ann@example.org", "DECLINED", answered_at=shown + timedelta(1))) == [
        "declined"
    ]
    # A higher SEQUENCE wins whatever the time says; a lower one loses.
    assert answers(
        _answer("ann@example.org", "DECLINED", answered_at=shown - timedelta(1)), sequence=3
    ) == ["declined"]
    assert (
        answers(
            _answer("ann@example.org", "DECLINED", answered_at=shown + timedelta(1)), sequence=1
        )
        == []
    )


# ---- server profiles ------------------------------------------------------------------------


def test_profiles_agree_with_what_the_servers_were_measured_doing() -> None:
    """tmcaldav's profile table and the measured table of tests/scheduling_servers.py
    (every field there asserted against the running servers) say the same."""
    for name, measured in scheduling_servers.PROFILES.items():
        ours = PROFILES[name]
        assert ours.schedules
        assert ours.answer_time_param == next(
            (p for p in measured.reply_params if p.endswith("DTSTAMP")), None
        ), name
        assert ours.reply_drops_schedule_status == (not measured.reply_keeps_schedule_status)
        assert ours.reschedule_resets_student_copy == measured.reschedule_resets_partstat
        assert ours.organizer_match_ignores_case == measured.organizer_match_ignores_case
        assert ours.force_send_reaches == measured.force_send_reaches
        # docs/servers.md: neither server copies the student's note into the organizer's copy.
        assert not ours.keeps_attendee_note
        assert ours.schedules_from_any_calendar
        assert ours.replies_in_any_calendar == measured.replies_in_any_calendar
    assert not PROFILES["radicale"].schedules


@pytest.mark.parametrize(
    ("server", "token", "profile"),
    [
        (
            "Cyrus-HTTP/3.6.1-Debian-3.6.1-4+deb12u5 Cyrus-SASL/2.1.28",
            "data:,1796084644-6",
            "cyrus",
        ),
        ("Python/3.11 aiohttp/3.14.5", "9f1c0a0e4e0b4cbb8d3c2f1e0a9b8c7d6e5f4a3b", "xandikos"),
        ("Python/3.11 aiohttp/3.14.5", "http://example.org/sync/1", "generic"),
        ("Xandikos/0.4.10", "0" * 40, "xandikos"),
        ("Radicale", None, "radicale"),
        (None, None, "generic"),
        ("nginx", "data:,1", "generic"),
    ],
)
def test_the_profile_is_recognised(server: str | None, token: str | None, profile: str) -> None:
    assert detect_profile(server, token).name == profile


def test_the_generic_profile_is_the_rfcs() -> None:
    assert GENERIC.schedules and not GENERIC.schedules_from_any_calendar
    assert GENERIC is PROFILES["generic"]
    assert {f.name for f in dataclasses.fields(GENERIC)} >= {
        "answer_time_param",
        "reply_drops_schedule_status",
        "reschedule_resets_student_copy",
    }


# ---- login methods in the configuration ------------------------------------------------------


def _caldav(**keys: object) -> dict[str, object]:
    return {
        "store": {"url": "sqlite:///x.db"},
        "scheduling": {"organizer_email": "t@example.org"},
        "caldav": {"url": "https://dav.example.org/", "username": "u", **keys},
    }


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"auth": "bearer"}, 'caldav.auth = "bearer" needs token_command'),
        (
            {"auth": "bearer", "token_command": ["t"], "password_env": "X"},
            "remove password_file, password_command and password_env",
        ),
        ({"auth": "bearer", "token_command": []}, "caldav.token_command: must not be empty"),
        ({}, 'set one of password_file, password_command, password_env (auth = "basic"'),
        ({"auth": "digest"}, '(auth = "digest" logs in with a password)'),
        (
            {"auth": "basic", "password_env": "X", "token_command": ["t"]},
            'caldav.token_command is used only with auth = "bearer"',
        ),
        ({"auth": "ntlm", "password_env": "X"}, "caldav.auth: must be one of basic, digest"),
        ({"password_env": "X", "server_profile": "exchange"}, "unknown profile 'exchange'"),
    ],
)
def test_login_settings_are_checked(keys: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_caldav(**keys))
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_valid_login_settings() -> None:
    bearer = parse_config(_caldav(auth="bearer", token_command=["oauth2l", "fetch"]))
    assert bearer.caldav is not None and bearer.caldav.token_command == ("oauth2l", "fetch")
    digest = parse_config(_caldav(auth="digest", password_env="X", server_profile="cyrus"))
    assert digest.caldav is not None and digest.caldav.server_profile == "cyrus"
    assert parse_config(_caldav(password_env="X")).caldav.auth == "basic"  # type: ignore[union-attr]


# ---- the schema ------------------------------------------------------------------------------


def test_migration_0007_matches_the_models_and_goes_down_and_up(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.upgrade() == head_revision()
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        with store.engine.begin() as connection:
            config = _alembic_config(store.engine, connection)
            command.downgrade(config, "0003")  # type: ignore[arg-type]
        assert "schedule_checks" not in store.table_names()
        assert store.upgrade() == head_revision()
        assert "schedule_checks" in store.table_names()
    finally:
        store.close()


# ---- on Radicale, in server mode: notes and the server's answer time ---------------------------


def _href(tm: Cli, key: str = "TM-1") -> str:
    return session_href(tm.config, key)


def _answer_with(student: StudentSide, href: str, email: str, partstat: str, params: str) -> None:
    """The student's answer as a scheduling server writes it into the organizer's copy,
    with extra ATTENDEE parameters (``;X-DTSTAMP=...``)."""
    text, etag = student.get(href)
    text = re.sub(r"\r?\n[ \t]", "", ical.set_partstats(text, {email: partstat}))
    line = next(line for line in text.splitlines() if line.startswith("ATTENDEE") and email in line)
    for name in re.findall(r";([A-Z-]+)=", params):
        line_without = re.sub(rf';{name}=("[^"]*"|[^;:]*)', "", line)
        text, line = text.replace(line, line_without), line_without
    edited = line.replace(f":mailto:{email}", f"{params}:mailto:{email}")
    student.put(href, text.replace(line, edited), etag)


def _page(tm: Cli) -> dict[str, dict[str, Any]]:
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    return {s["email"]: s for s in page["students"]}


def _history(tm: Cli, email: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        tm.ok("session", "history", "TM-1", email, "--json").output
    )
    return rows


@pytest.fixture
def on_radicale(tmp_path: Path, radicale_server: RadicaleServer) -> Iterator[Cli]:
    tm = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    add_people(tm, {"ann@example.org": "Ann", "bob@example.org": "Bob"})
    add_session(tm, "TM-1")
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org")
    yield tm


def test_a_note_on_the_attendee_line_becomes_the_students_note(
    on_radicale: Cli, radicale_server: RadicaleServer
) -> None:
    tm, student = on_radicale, StudentSide(radicale_server)
    tm.ok("invite", "TM-1", "--all-enrolled")
    page = _page(tm)
    # Radicale schedules nothing: no delivery is read back, nothing is claimed.
    assert [s["delivery_status"] for s in page.values()] == [None, None]
    href = _href(tm)
    _answer_with(
        student,
        href,
        "bob@example.org",
        "DECLINED",
        ';X-RESPONSE-COMMENT="Sorry\\, I&#39\\;m ill"',
    )
    tm.ok("sync")
    bob = _page(tm)["bob@example.org"]
    assert bob["calendar"] == "declined"
    assert [n["text"] for n in bob["notes"]] == ["Sorry, I'm ill"]
    (answer,) = _history(tm, "bob@example.org")
    assert (answer["event"], answer["source"], answer["evidence"]) == ("answer", "poll", "observed")
    # Seen again (another change to the event): the note is not repeated.
    student.answer(href, {"ann@example.org": "ACCEPTED"})
    tm.ok("sync")
    assert [n["text"] for n in _page(tm)["bob@example.org"]["notes"]] == ["Sorry, I'm ill"]
    assert "Sorry, I'm ill" in tm.ok("session", "show", "TM-1").output


def test_the_servers_answer_time_is_responded_at(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    """With the cyrus profile (set in the config: Radicale plays the server), X-DTSTAMP on
    the ATTENDEE is the answer's time; SEQUENCE then that time orders answers; a stamp
    from the future counts as now."""
    tm = cli_for(
        tmp_path,
        radicale_server,
        f"sqlite:///{tmp_path / 'store.db'}",
        extra='server_profile = "cyrus"\n',
    )
    add_people(tm, {"ann@example.org": "Ann"})
    add_session(tm, "TM-1")
    tm.ok("enroll", "TM-1", "ann@example.org")
    tm.ok("invite", "TM-1", "ann@example.org")
    student, href = StudentSide(radicale_server), _href(tm)

    _answer_with(student, href, "ann@example.org", "TENTATIVE", ";X-DTSTAMP=20261110T083000Z")
    tm.ok("sync")
    ann = _page(tm)["ann@example.org"]
    assert (ann["calendar"], ann["responded_at"]) == ("tentative", "2026-11-10T08:30:00+00:00")
    assert _history(tm, "ann@example.org")[-1]["evidence"] == "server-dtstamp"

    # An answer stamped before the one shown (same SEQUENCE) is older: it changes nothing.
    _answer_with(student, href, "ann@example.org", "DECLINED", ";X-DTSTAMP=20261109T083000Z")
    tm.ok("sync")
    assert _page(tm)["ann@example.org"]["calendar"] == "tentative"
    assert [h["calendar"] for h in _history(tm, "ann@example.org")] == ["tentative"]

    before = datetime.now(UTC)
    _answer_with(student, href, "ann@example.org", "ACCEPTED", ";X-DTSTAMP=20991231T000000Z")
    tm.ok("sync")
    ann = _page(tm)["ann@example.org"]
    assert ann["calendar"] == "accepted"
    answered = datetime.fromisoformat(ann["responded_at"])
    assert before - timedelta(seconds=1) <= answered <= datetime.now(UTC)
    history = tm.ok("session", "history", "TM-1", "ann@example.org").output
    assert "EVIDENCE" in history and "server-dtstamp" in history


# ---- login methods against a server that demands them -------------------------------------

TOKEN_COMMAND = (
    "import pathlib, sys\n"
    "folder = pathlib.Path(sys.argv[1])\n"
    "count = folder / 'count'\n"
    "count.write_text(str(int(count.read_text() if count.exists() else '0') + 1))\n"
    "print((folder / 'token').read_text())\n"
)


@pytest.fixture
def bearer_proxy(radicale_server: RadicaleServer) -> Iterator[AuthProxy]:
    yield from start_auth_proxy(
        radicale_server.url, "organizer", radicale_server.users["organizer"], scheme="bearer"
    )


@pytest.fixture
def digest_proxy(radicale_server: RadicaleServer) -> Iterator[AuthProxy]:
    yield from start_auth_proxy(
        radicale_server.url,
        "organizer",
        radicale_server.users["organizer"],
        scheme="digest",
        password="digest-secret",
    )


def _proxied_cli(tmp_path: Path, url: str, login: str) -> Cli:
    tmp_path.mkdir(exist_ok=True)
    config = write_config(
        tmp_path / "daemon.toml",
        f"sqlite:///{tmp_path / 'store.db'}",
        f'mode = "server"\n\n[caldav]\nurl = "{url}"\nusername = "organizer"\n'
        f'calendar = "trainings"\ntimeout = 10\n{login}',
    )
    tm = Cli(config)
    tm.ok("db", "upgrade")
    add_people(tm, {"ann@example.org": "Ann"})
    add_session(tm, "TM-1")
    tm.ok("enroll", "TM-1", "ann@example.org")
    return tm


def _token_login(folder: Path, token: str) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "token").write_text(token)
    argv = json.dumps([sys.executable, "-c", TOKEN_COMMAND, str(folder)])
    return f'auth = "bearer"\ntoken_command = {argv}\n'


def _fetches(folder: Path) -> int:
    return int((folder / "count").read_text())


def test_bearer_token_is_fetched_again_once_after_a_401(
    tmp_path: Path,
    bearer_proxy: AuthProxy,
    radicale_server: RadicaleServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "oauth"
    tm = _proxied_cli(tmp_path, bearer_proxy.url, _token_login(folder, bearer_proxy.token))
    assert "ok" in tm.ok("check-config").output
    assert _fetches(folder) == 1
    app = App(str(tm.config))
    try:
        app.publisher.invite("TM-1", ["ann@example.org"])
        assert _fetches(folder) == 2 and bearer_proxy.refused == 0
        # The token expires; the service issues a new one.
        (folder / "token").write_text(bearer_proxy.rotate())
        StudentSide(radicale_server).answer(_href(tm), {"ann@example.org": "ACCEPTED"})
        result = app.poll()
    finally:
        app.close()
    assert result.answers == 1
    # One 401, one new token, and the request went through with it.
    assert bearer_proxy.refused == 1 and _fetches(folder) == 3
    assert _page(tm)["ann@example.org"]["calendar"] == "accepted"
    tokens = {a.removeprefix("Bearer ") for a in bearer_proxy.authorizations if a}
    assert bearer_proxy.token in tokens
    for token in tokens:
        assert token not in caplog.text


def test_a_refused_new_token_fails_once_and_names_the_token_command(
    tmp_path: Path, bearer_proxy: AuthProxy
) -> None:
    folder = tmp_path / "oauth"
    tm = _proxied_cli(tmp_path, bearer_proxy.url, _token_login(folder, "not-the-token"))
    result = tm("invite", "TM-1", "ann@example.org")
    assert result.exit_code == 1, result.output
    assert "token_command" in result.output and "not-the-token" not in result.output
    # The first token, then exactly one more after the 401 (refused too): no loop.
    assert _fetches(folder) == 2 and bearer_proxy.refused == 2
    broken = _proxied_cli(
        tmp_path / "broken",
        bearer_proxy.url,
        f'auth = "bearer"\ntoken_command = {json.dumps([sys.executable, "-c", "exit(4)"])}\n',
    )
    result = broken("check-config")
    assert result.exit_code == 2 and "exited 4" in result.output


def test_digest_login(
    tmp_path: Path, digest_proxy: AuthProxy, radicale_server: RadicaleServer
) -> None:
    pw = tmp_path / "dav.pw"
    pw.write_text("digest-secret")
    pw.chmod(0o600)
    tm = _proxied_cli(tmp_path, digest_proxy.url, f'auth = "digest"\npassword_file = "{pw}"\n')
    tm.ok("invite", "TM-1", "ann@example.org")
    StudentSide(radicale_server).answer(_href(tm), {"ann@example.org": "DECLINED"})
    tm.ok("sync")
    assert _page(tm)["ann@example.org"]["calendar"] == "declined"
    assert all(
        a.startswith("Digest ") for a in digest_proxy.authorizations if a
    ) and "digest-secret" not in "".join(digest_proxy.authorizations)
    # The same password sent as Basic is refused, and the message says what to check.
    basic = _proxied_cli(tmp_path / "basic", digest_proxy.url, f'password_file = "{pw}"\n')
    result = basic("invite", "TM-1", "ann@example.org")
    assert result.exit_code == 1 and "auth (now 'basic')" in result.output, result.output


def test_a_poll_records_the_servers_later_word_on_delivery(
    on_radicale: Cli, radicale_server: RadicaleServer
) -> None:
    """A SCHEDULE-STATUS that appears or changes in the organizer's copy after our write
    (a server that delivers later, or another client's re-send) is recorded by the next
    poll: a failure shows as ⚠ not delivered, a later success clears it."""
    tm, student = on_radicale, StudentSide(radicale_server)
    tm.ok("invite", "TM-1", "--all-enrolled")
    href = _href(tm)
    _answer_with(student, href, "bob@example.org", "NEEDS-ACTION", ";SCHEDULE-STATUS=5.1")
    tm.ok("sync")
    bob = _page(tm)["bob@example.org"]
    assert (bob["calendar"], bob["delivery_status"], bob["schedule_status"]) == (
        "invited",
        "not_delivered",
        "5.1",
    )
    assert "could not be reached" in bob["schedule_status_meaning"]
    shown = tm.ok("session", "show", "TM-1").output
    assert "⚠ not delivered" in shown and "bob@example.org: not delivered (5.1)" in shown
    assert _page(tm)["ann@example.org"]["delivery_status"] is None

    _answer_with(student, href, "bob@example.org", "NEEDS-ACTION", ';SCHEDULE-STATUS="2.0;Success"')
    tm.ok("sync")
    bob = _page(tm)["bob@example.org"]
    assert (bob["delivery_status"], bob["schedule_status"]) == ("delivered", "2.0;Success")
    assert "⚠" not in tm.ok("session", "show", "TM-1").output
    checks = [h for h in _history(tm, "bob@example.org") if h["event"] == "delivery"]
    assert [(c["delivery_status"], c["reason"]) for c in checks] == [
        ("not_delivered", "poll"),
        ("delivered", "poll"),
    ]
    text = tm.ok("session", "history", "TM-1", "bob@example.org").output
    assert "⚠ not delivered" in text and "5.1" in text and "2.0;Success" in text
