"""Bounded by design: hostile input cannot grow the log or the store without limit.

5,000 strangers on one event make one log line per poll; a 5,000-part mail stores a
short refusal reason; twenty REFRESH mails send one invitation; an oversized message in
the Maildir is refused and recorded, not silently put aside.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.imip_support import reply_bytes, smtp_section
from tests.itip_method_support import as_method
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.test_mail import World, maildir_world, setup_cli
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.domain import REASON_MAX
from tmcaldav.imip.message import MAX_MESSAGE_BYTES
from tmcaldav.publish import Publisher
from tmcaldav.store import get_session
from tmcaldav.store.model import Delivery, MailRefusal
from tmcaldav.sync import Poller
from tmcaldav.testing import RadicaleServer
from tmcaldav.testing_mail import SmtpSink


def test_five_thousand_strangers_make_one_line_per_poll(
    tmp_path: Path,
    radicale_server: RadicaleServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tm = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    add_people(tm, {"ann@example.org": "Ann"})
    add_session(tm, "TM-1", start="2027-01-04T09:00", end="2027-01-04T12:00")
    tm.ok("enroll", "TM-1", "ann@example.org")
    tm.ok("invite", "TM-1", "--all-enrolled")
    config = load_config(tm.config)
    store = open_store(config.store.url)
    with store.transaction() as db:
        href = get_session(db, "TM-1").href
    assert href
    student = StudentSide(radicale_server)
    text, etag = student.get(href)
    strangers = "".join(
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:stranger{i}@example.net\r\n" for i in range(5000)
    )
    student.put(href, text.replace("END:VEVENT", strangers + "END:VEVENT"), etag)
    poller = Poller(store, Publisher(config, store).calendar, config.scheduling.organizer_email)
    # The CLI above set up tmcaldav's own log handler, which does not pass records on.
    monkeypatch.setattr(logging.getLogger("tmcaldav"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="tmcaldav"):
        result = poller.poll()
    assert len(result.strangers) == 5000
    lines = [r.getMessage() for r in caplog.records if "stranger" in r.getMessage()]
    assert len(lines) == 1, caplog.text[:2000]
    assert "5000 attendee(s) on the server are not enrolled" in lines[0]
    assert "and 4995 more" in lines[0] and len(lines[0]) < 500
    store.close()


@pytest.fixture
def imip_world(tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink) -> World:
    return World(
        setup_cli(tmp_path, radicale_server, smtp_section(smtp_sink.port)), radicale_server
    )


def _many_parts(count: int) -> bytes:
    message = EmailMessage()
    message["From"] = "Cy <cy@example.org>"
    message["To"] = "training@example.org"
    message["Subject"] = "many parts"
    message.set_content("hello")
    for i in range(count):
        message.add_attachment(f"part {i}".encode(), maintype="text", subtype="calendar")
    return bytes(message)


def test_a_mail_of_five_thousand_parts_stores_a_short_reason(imip_world: World) -> None:
    result = imip_world.tm("mail", "ingest", "-", input=_many_parts(5000))  # type: ignore[arg-type]
    assert result.exit_code == 0
    assert result.stdout.startswith("refused")
    assert len(result.stdout) < REASON_MAX + 200
    # The log line is as short: the reason is cut before it is logged.
    assert len(result.output) < 3 * REASON_MAX
    with imip_world.store.scratch() as db:
        reasons = db.scalars(select(MailRefusal.reason)).all()
    assert len(reasons) == 1 and len(reasons[0]) <= REASON_MAX
    assert "too many parts" in reasons[0]


def test_twenty_refresh_mails_send_one_invitation(
    imip_world: World, smtp_sink: SmtpSink
) -> None:
    imip_world.tm.ok("invite", "TM-1", "cy@example.org")
    refresh = as_method("thunderbird_tentative.eml", "REFRESH")
    outputs = [
        imip_world.tm.ok("mail", "ingest", "-", input=refresh).output  # type: ignore[arg-type]
        for _ in range(20)
    ]
    assert all(o.startswith("refresh") for o in outputs)
    assert "not sent now" in outputs[-1]
    # The invitation, and one answer to twenty requests for it.
    assert [m.rcpt_tos[0] for m in smtp_sink.received] == ["cy@example.org"] * 2
    with imip_world.store.scratch() as db:
        assert db.query(Delivery).filter(Delivery.reason == "refresh").count() == 1


def test_an_oversized_maildir_message_is_refused_and_recorded(
    tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink
) -> None:
    world, maildir = maildir_world(tmp_path, radicale_server, smtp_sink)
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    reply = reply_bytes("apple_accept.eml")
    head, _, body = reply.partition(b"\r\n\r\n") if b"\r\n\r\n" in reply else reply.partition(
        b"\n\n"
    )
    # A large header block first: the calendar part lies beyond what is read of it.
    padding = b"".join(b"X-Padding: " + b"p" * 990 + b"\r\n" for _ in range(2200))
    big = head + b"\r\n" + padding + b"\r\n" + body
    assert len(big) > MAX_MESSAGE_BYTES
    (maildir / "new" / "big.host").write_bytes(big)
    out = world.tm.ok("mail", "ingest").output
    assert "1 message read, 0 answers applied, 1 refused" in out
    with world.store.scratch() as db:
        reasons = db.scalars(select(MailRefusal.reason)).all()
    assert len(reasons) == 1 and "the message is too large" in reasons[0]
    assert [p.name for p in (maildir / ".tmcaldav-processed" / "cur").iterdir()] == [
        "big.host:2,"
    ]
    assert list((maildir / "cur").iterdir()) == []
    assert world.partstats()["dee@example.org"] == "NEEDS-ACTION"
