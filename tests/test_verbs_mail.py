"""The administrator's verbs in iMIP mode: real Radicale, real SMTP (aiosmtpd sink).

Reminders and scheduled invitations reach exactly the right students as mail, with the
`[invitation]` templates; a dry run prints the mails and sends none; a new address gets
the invitation and the old one a CANCEL; a hand-recorded answer is overtaken by a newer
REPLY and not by an older one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import Cli
from tests.imip_support import parse, reply_bytes, smtp_section
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.test_verbs import future, href_of, students
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.store.model import Delivery, Reminder
from tmcaldav.testing import RadicaleServer
from tmcaldav.testing_mail import ReceivedMail, SmtpSink

PEOPLE = {
    "ann@example.org": "Ann Lee",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy O'Neil",
    "dee@example.org": "Dee Okafor",
}
TEMPLATES = '''
[invitation]
subject = "{{ title }} on {{ start }}"
body = """Dear {{ student_name }},

please join {{ title }} ({{ when }}){% if location %} in {{ location }}{% endif %}.
"""
waitlist_body = """Dear {{ student_name }}, a seat has opened in {{ title }}:
you are number {{ waitlist_position }} on the waitlist.
"""
'''


def setup(tmp_path: Path, server: RadicaleServer, sink: SmtpSink, extra: str = "") -> Cli:
    tm = cli_for(
        tmp_path,
        server,
        f"sqlite:///{tmp_path / 'store.db'}",
        mode="imip",
        extra=smtp_section(sink.port) + TEMPLATES + extra,
    )
    add_people(tm, PEOPLE)
    add_session(tm, "TM-1", "--location", "Room 1", start=future(10), end=future(10, 17))
    tm.ok("enroll", "TM-1", *PEOPLE)
    return tm


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink) -> Cli:
    return setup(tmp_path, radicale_server, smtp_sink)


def plain(mail: ReceivedMail) -> str:
    body = parse(mail.content).get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def method_of(mail: ReceivedMail) -> str:
    message = parse(mail.content)
    part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
    return str(part.get_param("method"))


def count(tm: Cli, model: type) -> int:
    store = open_store(load_config(tm.config).store.url)
    with store.transaction() as db:
        n = db.scalar(select(func.count()).select_from(model)) or 0
    store.close()
    return n


def test_remind_no_answer_mails_exactly_the_silent_students(
    tm: Cli, smtp_sink: SmtpSink
) -> None:
    tm.ok("invite", "TM-1", "--all-enrolled")
    first = smtp_sink.wait_for(4)
    assert len(first) == 4
    invitation = next(m for m in first if m.rcpt_tos == ["ann@example.org"])
    assert parse(invitation.content)["Subject"].startswith("Intro on ")
    assert plain(invitation).startswith("Dear Ann Lee,") and "in Room 1." in plain(invitation)
    # Ann accepts by mail, Bob is unsure (said on the phone): Cy and Dee are silent.
    assert tm.ok("mail", "ingest", "-", input=reply_bytes("outlook_accept.eml")).stdout.startswith(
        "applied"
    )
    tm.ok("answer", "TM-1", "bob@example.org", "tentative", "--note", "phoned: maybe")
    deliveries = count(tm, Delivery)

    out = tm.ok("remind", "TM-1", "--no-answer", "--dry-run").output
    assert out.count("--- mail to ") == 2
    assert "--- mail to cy@example.org (REQUEST, remind)" in out
    assert "Subject: Reminder: Intro on " in out and "Dear Dee Okafor," in out
    assert len(smtp_sink.received) == 4
    assert (count(tm, Delivery), count(tm, Reminder)) == (deliveries, 0)

    out = tm.ok("remind", "TM-1", "--no-answer").output
    assert "reminded 2: cy@example.org, dee@example.org" in out
    assert "not ann@example.org: answered ✓ accepted" in out
    mails = smtp_sink.wait_for(6)[4:]
    assert sorted(m.rcpt_tos[0] for m in mails) == ["cy@example.org", "dee@example.org"]
    for mail in mails:
        assert method_of(mail) == "REQUEST"
        assert parse(mail.content)["Subject"].startswith("Reminder: Intro on ")
    page = students(tm)
    assert page["cy@example.org"]["delivery"]["reason"] == "remind"
    assert page["cy@example.org"]["delivery"]["state"] == "sent"
    history = json.loads(tm.ok("session", "history", "TM-1", "cy@example.org", "--json").output)
    assert [(h["event"], h["source"]) for h in history] == [("reminder", "mail")]
    # Again at once: nobody (remind_min_interval); with --tentative: Bob.
    assert "nobody to remind" in tm.ok("remind", "TM-1", "--no-answer").output
    assert "reminded 1: bob@example.org" in tm.ok("remind", "TM-1", "--tentative").output
    assert smtp_sink.wait_for(7)[6].rcpt_tos == ["bob@example.org"]
    assert len(smtp_sink.received) == 7


def test_invite_dry_run_prints_the_mails_and_sends_none(tm: Cli, smtp_sink: SmtpSink) -> None:
    tm.ok("person", "add", "eve@example.org", "--name", "Eve Ng")
    tm.ok("session", "edit", "TM-1", "--capacity", "4")
    tm.ok("enroll", "TM-1", "eve@example.org", "--waitlist")
    before = tm.ok("session", "show", "TM-1", "--json").output
    out = tm.ok("invite", "TM-1", "ann@example.org", "eve@example.org", "--dry-run").output
    assert "--- mail to ann@example.org (REQUEST, invite)" in out
    assert "To: Ann Lee <ann@example.org>" in out
    assert "Dear Ann Lee,\n\nplease join Intro" in out
    # Eve comes from the waitlist: the waitlist text, with her place.
    assert "Dear Eve Ng, a seat has opened in Intro:\nyou are number 1 on the waitlist." in out
    assert "(dry run: nothing was sent or changed)" in out
    assert smtp_sink.received == []
    assert tm.ok("session", "show", "TM-1", "--json").output == before
    assert count(tm, Delivery) == 0
    # The real thing sends exactly what was shown.
    tm.ok("invite", "TM-1", "ann@example.org", "eve@example.org")
    sent = {m.rcpt_tos[0]: m for m in smtp_sink.wait_for(2)}
    assert set(sent) == {"ann@example.org", "eve@example.org"}
    assert plain(sent["eve@example.org"]) in out
    assert plain(sent["ann@example.org"]).rstrip() in out


def test_new_address_gets_the_invitation_and_the_old_one_a_cancel(
    tm: Cli, smtp_sink: SmtpSink, radicale_server: RadicaleServer
) -> None:
    tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    smtp_sink.wait_for(2)
    href = href_of(tm)
    out = tm.ok("person", "edit", "bob@example.org", "--email", "robert@example.org").output
    assert "robert@example.org: changed email (was bob@example.org)" in out
    mails = smtp_sink.wait_for(4)[2:]
    assert sorted((m.rcpt_tos[0], method_of(m)) for m in mails) == [
        ("bob@example.org", "CANCEL"),
        ("robert@example.org", "REQUEST"),
    ]
    attendees = StudentSide(radicale_server).event(href).attendees
    assert set(attendees) == {"ann@example.org", "robert@example.org"}
    assert students(tm)["robert@example.org"]["delivery"]["method"] == "REQUEST"


def test_hand_answer_against_older_and_newer_replies(
    tm: Cli, smtp_sink: SmtpSink, radicale_server: RadicaleServer
) -> None:
    tm.ok("invite", "TM-1", "--all-enrolled")
    href = href_of(tm)
    server = StudentSide(radicale_server)
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    tm.ok("answer", "TM-1", "bob@example.org", "accepted", "--at", hour_ago)
    # Bob's decline by mail was written before he phoned (DTSTAMP 2026-11-20): older.
    out = tm.ok("mail", "ingest", "-", input=reply_bytes("gmail_decline.eml")).stdout
    assert out.startswith("history"), out
    bob = students(tm)["bob@example.org"]
    assert (bob["calendar"], bob["by_hand"]) == ("accepted", True)
    assert server.partstats(href)["bob@example.org"] == "NEEDS-ACTION"
    # A decline sent after the phone call is newer: it wins, and reaches the server.
    stamp = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y%m%dT%H%M%SZ")
    newer = reply_bytes("gmail_decline.eml", {"DTSTAMP:20261120T111500Z": f"DTSTAMP:{stamp}"})
    assert tm.ok("mail", "ingest", "-", input=newer).stdout.startswith("applied")
    bob = students(tm)["bob@example.org"]
    assert (bob["calendar"], bob["by_hand"]) == ("declined", False)
    assert server.partstats(href)["bob@example.org"] == "DECLINED"
    history = json.loads(tm.ok("session", "history", "TM-1", "bob@example.org", "--json").output)
    assert [(h["calendar"], h["source"]) for h in history] == [
        ("accepted", "manual"),
        ("declined", "imip"),
        ("declined", "imip"),
    ]


def test_scheduled_invitations_are_mailed_once_across_restarts(
    tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink
) -> None:
    tm = setup(tmp_path, radicale_server, smtp_sink, "send_days_before = 14\n")
    add_session(tm, "LATER", start=future(60), end=future(60, 17))
    tm.ok("enroll", "LATER", "ann@example.org")
    assert tm.ok("run", "--once").exit_code == 0
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.wait_for(4)) == sorted(PEOPLE)
    for _restart in range(2):
        assert tm.ok("run", "--once").exit_code == 0
        assert tm.ok("sync").exit_code == 0
    assert len(smtp_sink.received) == 4
    # A student enrolled later is invited on the next tick, and only they.
    tm.ok("person", "add", "eve@example.org", "--name", "Eve Ng")
    tm.ok("enroll", "TM-1", "eve@example.org")
    tm.ok("run", "--once")
    assert [m.rcpt_tos for m in smtp_sink.wait_for(5)[4:]] == [["eve@example.org"]]
    assert len(smtp_sink.received) == 5
