"""iMIP mode end to end: real Radicale, a real SMTP server (aiosmtpd), a real IMAP
server (Dovecot), the CLI and the MailService the daemon ticks."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tmcaldav_plugins.waitlist import WaitlistPlugin

from tests.conftest import Cli
from tests.dovecot import DovecotServer, ImapUnavailable
from tests.imip_support import (
    CLIENT_REPLIES,
    ORGANIZER,
    UID,
    check_imip,
    imap_section,
    parse,
    password_file,
    reply_bytes,
    smtp_section,
)
from tests.itip_method_support import as_method, next_day_counter
from tests.plugin_world import Recorder, config_for, dispatcher_for, seed
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.imip import deliveries
from tmcaldav.imip.service import MailService
from tmcaldav.publish import Publisher
from tmcaldav.store import Store, get_enrollment, get_session
from tmcaldav.store.model import Delivery, MailRefusal, Outbox, Response, Suggestion, utcnow
from tmcaldav.sync import Poller
from tmcaldav.testing import RadicaleServer
from tmcaldav.testing_mail import SmtpSink, TlsFiles

STUDENTS = {
    "ann@example.org": "Ann Lee",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy O'Neil",
    "dee@example.org": "Dee Okafor",
    "eve@example.org": "Eve Ng",
}


def setup_cli(tmp_path: Path, server: RadicaleServer, extra: str) -> Cli:
    tm = cli_for(tmp_path, server, f"sqlite:///{tmp_path / 'store.db'}", mode="imip", extra=extra)
    add_people(tm, STUDENTS)
    add_session(tm, "TM-1", "--location", "Room 1", "--tz", "Europe/Berlin")
    tm.ok("enroll", "TM-1", *STUDENTS)
    return tm


class World:
    """The store and services behind a CLI config, for looking inside."""

    def __init__(self, tm: Cli, server: RadicaleServer):
        self.tm = tm
        self.config = load_config(tm.config)
        self.store = open_store(self.config.store.url)
        self.publisher = Publisher(self.config, self.store)
        self.mail = MailService(self.config, self.store, self.publisher)
        self.mail.attach()
        self.student = StudentSide(server)

    def page(self) -> dict:
        return json.loads(self.tm.ok("session", "show", "TM-1", "--json").output)

    def students(self) -> dict[str, dict]:
        return {s["email"]: s for s in self.page()["students"]}

    def href(self) -> str:
        with self.store.transaction() as db:
            href = get_session(db, "TM-1").href
        assert href
        return href

    def partstats(self) -> dict[str, str]:
        return self.student.partstats(self.href())

    def count(self, model: type, *where: object) -> int:
        with self.store.transaction() as db:
            return db.scalar(select(func.count()).select_from(model).where(*where)) or 0

    def responses(self) -> int:
        return self.count(Outbox, Outbox.hook == "response")


@pytest.fixture
def world(tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink) -> World:
    return World(
        setup_cli(tmp_path, radicale_server, smtp_section(smtp_sink.port)), radicale_server
    )


# ---- the whole loop --------------------------------------------------------------------------


ImapWorld = Callable[[str, str], tuple[World, Path]]


@pytest.fixture
def imap_world(
    tmp_path: Path,
    radicale_server: RadicaleServer,
    smtp_sink: SmtpSink,
    imap_server: DovecotServer,
    tls_files: TlsFiles,
) -> ImapWorld:
    """Builds the world that reads replies from Dovecot with `security` ("tls" on the TLS
    port, "starttls" on the plain one), logging in with `password`; returns it and the
    password file."""

    def build(security: str, password: str) -> tuple[World, Path]:
        pw = password_file(tmp_path, "imap.pw", password)
        port = imap_server.tls_port if security == "tls" else imap_server.port
        extra = smtp_section(smtp_sink.port) + imap_section(
            port, pw, security=security, ca_file=tls_files.ca_file
        )
        return World(setup_cli(tmp_path, radicale_server, extra), radicale_server), pw

    return build


def test_end_to_end_with_imap(
    imap_world: ImapWorld, smtp_sink: SmtpSink, imap_server: DovecotServer
) -> None:
    w, _ = imap_world("tls", "pw-imap")
    three = ["ann@example.org", "bob@example.org", "cy@example.org"]
    w.tm.ok("invite", "TM-1", *three)

    sent = smtp_sink.wait_for(3)
    assert sorted(m.rcpt_tos[0] for m in sent) == three
    for m in sent:
        assert m.mail_from == ORGANIZER
        check_imip(m.content, method="REQUEST", uid=UID, sequence=0, attendee=m.rcpt_tos[0])
    students = w.students()
    for email in three:
        assert students[email]["delivery"]["state"] == "sent"
        assert students[email]["delivery"]["method"] == "REQUEST"
    assert students["dee@example.org"]["delivery"] is None

    plain = b"From: ann@example.org\r\nSubject: parking?\r\n\r\nIs there parking?\r\n"
    replies = ["outlook_accept.eml", "gmail_decline.eml", "thunderbird_tentative.eml"]
    imap_server.deliver(ORGANIZER, [plain, *[reply_bytes(n) for n in replies]])
    assert w.responses() == 0

    result = w.mail.tick()
    # The plain message is never fetched: its structure shows no text/calendar part.
    assert (result.read, result.applied, result.refused) == (3, 3, 0), result
    assert w.partstats() == {
        "ann@example.org": "ACCEPTED",
        "bob@example.org": "DECLINED",
        "cy@example.org": "TENTATIVE",
    }
    students = w.students()
    for name in replies:
        email, status, when = CLIENT_REPLIES[name]
        assert students[email]["calendar"] == status
        assert datetime.fromisoformat(students[email]["responded_at"]) == datetime.fromisoformat(
            when
        )
    assert students["ann@example.org"]["notes"][0]["text"] == "I will bring my laptop."
    # Gmail puts the student's words in the ATTENDEE's X-RESPONSE-COMMENT, escaped.
    assert [n["text"] for n in students["bob@example.org"]["notes"]] == [
        "Sorry, I'm on a customer visit that week. Could I join the January session?"
    ]
    assert w.responses() == 3
    # Our own writes are recognised: the next poll finds nothing new and fires nothing.
    poll = Poller(w.store, w.publisher.calendar, ORGANIZER).poll()
    assert poll.answers == 0
    assert w.responses() == 3
    # Processed replies are filed away; the unrelated message stays where it was.
    assert imap_server.folder(ORGANIZER, "INBOX") == [plain]
    assert len(imap_server.folder(ORGANIZER, "tmcaldav-processed")) == 3
    again = w.mail.tick()
    assert (again.read, again.applied) == (0, 0)
    history = json.loads(w.tm.ok("session", "history", "TM-1", "bob@example.org", "--json").output)
    assert [(h["calendar"], h["source"], h["evidence"]) for h in history] == [
        ("declined", "imip", "reply-dtstamp")
    ]


# ---- replies in the shapes real clients send -------------------------------------------------


def test_every_client_shape_updates_the_right_student(world: World) -> None:
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    for name, (email, status, when) in CLIENT_REPLIES.items():
        before = world.partstats()
        path = Path(__file__).parent / "data" / "imip" / name
        out = world.tm.ok("mail", "ingest", str(path)).stdout
        assert out.startswith(f"applied ({email} in TM-1)"), out
        after = world.partstats()
        changed = {a for a in after if after[a] != before[a]}
        assert changed == {email}, (name, changed)
        student = world.students()[email]
        assert student["calendar"] == status
        assert datetime.fromisoformat(student["responded_at"]) == datetime.fromisoformat(when)
    assert world.responses() == len(CLIENT_REPLIES)
    # The same message again (an MTA retry) changes nothing and fires nothing.
    again = world.tm.ok(
        "mail", "ingest", str(Path(__file__).parent / "data" / "imip" / "gmail_decline.eml")
    ).stdout
    assert again.startswith("unchanged")
    assert world.responses() == len(CLIENT_REPLIES)


def _spoofs() -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """Each refused message, with the `mail ingest -` options it is piped in with."""
    big = reply_bytes("thunderbird_tentative.eml").replace(
        b"--------------tb0123456789ABCDEF--",
        b"--------------tb0123456789ABCDEF\r\nContent-Type: application/pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + (b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n" * 75000)
        + b"--------------tb0123456789ABCDEF--",
    )
    assert len(big) > 5 * 1024 * 1024
    mallory = reply_bytes(
        "gmail_decline.eml", {"From: Bob <bob@example.org>": "From: Mallory <mallory@evil.example>"}
    )
    spoofs = {
        "wrong sender": reply_bytes(
            "gmail_decline.eml", {"From: Bob <bob@example.org>": "From: Mallory <bob@evil.example>"}
        ),
        # The student's address where the sender chooses it is no proof (RFC 6047 §2.2.1).
        "Return-Path of the student": b"Return-Path: <bob@example.org>\r\n" + mallory,
        "mbox From_ line of the student": b"From bob@example.org  Fri Nov 20 11:15:00 2026\n"
        + mallory,
        "uninvited attendee": reply_bytes(
            "gmail_decline.eml", {"bob@example.org": "zed@example.org"}
        ),
        "unknown UID": reply_bytes("gmail_decline.eml", {UID: "tmcaldav-TM-9@example.org"}),
        "two ATTENDEEs": reply_bytes(
            "forwarded_accept.eml",
            {
                "CN=Eve Ng;PARTSTAT=ACCEPTED:mailto:eve@example.org": (
                    "PARTSTAT=ACCEPTED:mailto:eve@example.org\r\n"
                    "ATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@example.org"
                )
            },
        ),
        "not iCalendar": reply_bytes(
            "gmail_decline.eml", {"BEGIN:VCALENDAR\r\nPRODID": "BEGIN:VCARD\r\nPRODID"}
        ),
        "5 MB attachment": big,
    }
    found: dict[str, tuple[bytes, tuple[str, ...]]] = {k: (v, ()) for k, v in spoofs.items()}
    found["--sender of the student"] = (mallory, ("--sender", "bob@example.org"))
    return found


def test_spoofed_and_broken_replies_change_nothing(world: World) -> None:
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    before_server = world.partstats()
    before_page = world.students()
    spoofs = _spoofs()
    for label, (raw, options) in spoofs.items():
        out = world.tm.ok("mail", "ingest", "-", *options, input=raw).stdout  # type: ignore[arg-type]
        assert out.startswith("refused"), (label, out)
    assert world.partstats() == before_server
    assert world.students() == before_page
    assert world.responses() == 0
    assert world.count(Response) == 0
    with world.store.transaction() as db:
        reasons = [r.reason for r in db.scalars(select(MailRefusal).order_by(MailRefusal.id))]
    assert len(reasons) == len(spoofs)
    for reason, words in zip(
        reasons,
        [
            "does not match",
            "mallory@evil.example does not match",
            "mallory@evil.example does not match",
            "not an invited attendee",
            "no published session",
            "exactly one ATTENDEE",
            "not iCalendar",
            "too large",
            "mallory@evil.example does not match",
        ],
        strict=True,
    ):
        assert words in reason, (reason, words)
    out = world.tm("doctor").output
    assert f"warn {len(spoofs)} incoming iMIP messages refused" in out


def test_older_sequence_is_history_only(world: World) -> None:
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    world.tm.ok("session", "edit", "TM-1", "--start", "2026-12-01T10:00")  # SEQUENCE 1
    late = reply_bytes("gmail_decline.eml")  # answers SEQUENCE 0
    out = world.tm.ok("mail", "ingest", "-", input=late).stdout  # type: ignore[arg-type]
    assert out.startswith("history"), out
    assert world.partstats()["bob@example.org"] == "NEEDS-ACTION"
    assert world.students()["bob@example.org"]["calendar"] == "invited"
    history = json.loads(
        world.tm.ok("session", "history", "TM-1", "bob@example.org", "--json").output
    )
    assert [(h["calendar"], h["source"], h["sequence"]) for h in history][-1] == (
        "declined",
        "imip",
        0,
    )
    assert world.responses() == 0
    current = reply_bytes(
        "gmail_decline.eml",
        {"SEQUENCE:0": "SEQUENCE:1", "DTSTAMP:20261120T111500Z": "DTSTAMP:20261121T090000Z"},
    )
    out = world.tm.ok("mail", "ingest", "-", input=current).stdout  # type: ignore[arg-type]
    assert out.startswith("applied")
    assert world.partstats()["bob@example.org"] == "DECLINED"
    assert world.responses() == 1


# ---- outgoing: updates, cancels, failures, retries ------------------------------------------


def requests(sink: SmtpSink) -> list[tuple[str, str, int]]:
    out = []
    for m in sink.received:
        message = parse(m.content)
        part = list(message.iter_parts())[2]
        import icalendar

        event = next(
            iter(icalendar.Calendar.from_ical(part.get_payload(decode=True)).walk("VEVENT"))
        )
        out.append((m.rcpt_tos[0], str(part.get_param("method")), int(event["SEQUENCE"])))
    return out


def test_update_reschedule_remove_and_cancel_mail_the_right_people(
    world: World, smtp_sink: SmtpSink
) -> None:
    world.tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org")
    world.tm.ok("session", "edit", "TM-1", "--location", "Room 2")
    world.tm.ok("session", "edit", "TM-1", "--start", "2026-12-01T10:00")
    world.tm.ok("set-status", "TM-1", "bob@example.org", "cancelled")
    world.tm.ok("session", "cancel", "TM-1")
    got = requests(smtp_sink)
    assert got == [
        ("ann@example.org", "REQUEST", 0),
        ("bob@example.org", "REQUEST", 0),
        ("ann@example.org", "REQUEST", 1),
        ("bob@example.org", "REQUEST", 1),
        ("ann@example.org", "REQUEST", 2),
        ("bob@example.org", "REQUEST", 2),
        ("bob@example.org", "CANCEL", 3),
        ("ann@example.org", "CANCEL", 4),
    ]
    # Every message, read by independent parsers.
    for m, (to, method, sequence) in zip(smtp_sink.received, got, strict=True):
        check_imip(m.content, method=method, uid=UID, sequence=sequence, attendee=to)
    subjects = [str(parse(m.content)["Subject"]).split(":")[0] for m in smtp_sink.received]
    assert subjects[2] == "Updated invitation" and subjects[4] == "New time"
    assert subjects[-1] == "Cancelled"


def test_failed_sends_are_retried_with_backoff_and_never_resent(
    world: World, smtp_sink: SmtpSink
) -> None:
    smtp_sink.fail_next_data(count=1)
    smtp_sink.refuse("bob@example.org")
    out = world.tm.ok("invite", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    assert "invited 3 new" in out.output
    students = world.students()
    assert students["cy@example.org"]["delivery"]["state"] == "sent"
    ann, bob = students["ann@example.org"]["delivery"], students["bob@example.org"]["delivery"]
    assert ann["state"] == "failed" and "451" in ann["error"] and ann["next_attempt_at"]
    assert bob["state"] == "failed" and "550" in bob["error"] and bob["next_attempt_at"] is None
    assert "REQUEST failed" in world.tm.ok("session", "show", "TM-1").output
    # Not due yet: nothing is sent.
    assert world.mail.tick().sent == 0
    later = utcnow() + timedelta(minutes=5)
    result = world.mail.tick(later)
    assert (result.sent, result.failed) == (1, 0)
    assert [m.rcpt_tos[0] for m in smtp_sink.received] == ["cy@example.org", "ann@example.org"]
    assert world.students()["ann@example.org"]["delivery"]["state"] == "sent"
    # Delivered stays delivered, however often the daemon ticks.
    assert world.mail.tick(later + timedelta(days=2)).sent == 0
    assert len(smtp_sink.received) == 2
    # ... unless sent again on purpose.
    world.tm.ok("invite", "TM-1", "ann@example.org", "--resend")
    assert [m.rcpt_tos[0] for m in smtp_sink.received][-1] == "ann@example.org"
    assert len(smtp_sink.received) == 3
    assert world.count(Delivery, Delivery.state == "sent") == 3


def test_a_message_superseded_while_it_is_sent_is_never_due_again(
    store: Store, smtp_sink: SmtpSink
) -> None:
    """Claim D1, queue D2 for the same student, SMTP fails for D1: D1 stays superseded
    and only D2 is due (a stale REQUEST must not follow the CANCEL that replaced it)."""
    seed(store, enrolled=["ann@example.org", "bob@example.org"])
    config = config_for(
        store.url, smtp={"host": "127.0.0.1", "port": smtp_sink.port, "security": "none"}
    )
    sender = MailService(config, store, Publisher(config, store)).sender()
    now = utcnow()

    def queue_for(email: str, method: str, sequence: int) -> int:
        with store.transaction() as db:
            enrollment = get_enrollment(db, get_session(db, "TM-1"), email)
            delivery = deliveries.queue(db, enrollment, method, sequence, method.lower(), now)
            db.flush()
            return delivery.id

    def state(delivery_id: int) -> tuple[str, datetime | None]:
        with store.transaction() as db:
            delivery = db.get(Delivery, delivery_id)
            assert delivery is not None
            return delivery.state, delivery.next_attempt_at

    ann_request, bob_request = (
        queue_for("ann@example.org", "REQUEST", 0),
        queue_for("bob@example.org", "REQUEST", 0),
    )
    with store.transaction() as db:
        claimed = deliveries.claim_due(db, config, now)
    assert sorted(c.delivery_id for c in claimed) == [ann_request, bob_request]
    # While SMTP talks, the session is cancelled: CANCELs replace both REQUESTs.
    ann_cancel = queue_for("ann@example.org", "CANCEL", 1)
    bob_cancel = queue_for("bob@example.org", "CANCEL", 1)
    smtp_sink.fail_next_data(count=1)  # Ann's REQUEST fails (451), Bob's goes out
    outcomes = sender.send(claimed)
    assert [o.error is None for o in outcomes] == [False, True]
    with store.transaction() as db:
        assert deliveries.record(db, claimed, outcomes, now) == (1, 0)
    assert state(ann_request) == ("superseded", None)
    assert state(bob_request) == ("superseded", None)
    # Only the CANCELs are due, now and later.
    with store.transaction() as db:
        due = deliveries.claim_due(db, config, now + timedelta(days=1))
    assert sorted((c.delivery_id, c.outgoing.to) for c in due) == [
        (ann_cancel, "ann@example.org"),
        (bob_cancel, "bob@example.org"),
    ]


def test_smtp_down_then_up(tmp_path: Path, radicale_server: RadicaleServer) -> None:
    sink = SmtpSink()
    sink.start()
    port = sink.port
    sink.stop()  # nobody listens on the port now
    w = World(setup_cli(tmp_path, radicale_server, smtp_section(port)), radicale_server)
    w.tm.ok("invite", "TM-1", "ann@example.org")
    delivery = w.students()["ann@example.org"]["delivery"]
    assert delivery["state"] == "failed" and "127.0.0.1" in delivery["error"]
    assert w.partstats() == {"ann@example.org": "NEEDS-ACTION"}  # the event is published


def test_refresh_resends_and_counter_suggests(world: World, smtp_sink: SmtpSink) -> None:
    world.tm.ok("invite", "TM-1", "cy@example.org")
    refresh = as_method("thunderbird_tentative.eml", "REFRESH")
    out = world.tm.ok("mail", "ingest", "-", input=refresh).stdout  # type: ignore[arg-type]
    assert out.startswith("refresh")
    assert [m.rcpt_tos[0] for m in smtp_sink.received] == ["cy@example.org"] * 2
    counter = next_day_counter()
    for _ in range(2):  # the same proposal twice gives one suggestion
        out = world.tm.ok("mail", "ingest", "-", input=counter).stdout  # type: ignore[arg-type]
        assert out.startswith("counter")
    with world.store.transaction() as db:
        suggestions = db.scalars(select(Suggestion)).all()
        assert [(s.kind, s.plugin, s.state) for s in suggestions] == [
            ("contact_student", "imip", "open")
        ]
        assert "2026-12-02 09:00–17:00 (Europe/Berlin)" in suggestions[0].reason
    # on_suggestion hooks hear of it like of any plugin's suggestion.
    assert world.count(Outbox, Outbox.hook == "suggestion") == 1
    notes = world.students()["cy@example.org"]["notes"]
    assert [n["text"] for n in notes] == [
        "proposed a new time: 2026-12-02 09:00–17:00 (Europe/Berlin)"
    ]
    assert world.partstats()["cy@example.org"] == "NEEDS-ACTION"  # a proposal is no answer
    assert world.responses() == 0


# ---- transports: TLS, auth, Maildir, the MTA pipe -----------------------------------------


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_smtp_with_tls_and_login(
    tmp_path: Path, radicale_server: RadicaleServer, tls_files: TlsFiles, security: str
) -> None:
    with SmtpSink(security=security, tls=tls_files, users={"office": "s3cret"}) as sink:
        pw = password_file(tmp_path, "smtp.pw", "s3cret")
        extra = smtp_section(
            sink.port, security=security, ca_file=tls_files.ca_file, user="office", password=pw
        )
        w = World(setup_cli(tmp_path, radicale_server, extra), radicale_server)
        w.tm.ok("invite", "TM-1", "ann@example.org")
        assert [(m.authenticated_as, m.rcpt_tos) for m in sink.received] == [
            ("office", ["ann@example.org"])
        ]
        assert "ok   smtp: 127.0.0.1" in w.tm("doctor").output


def test_smtp_tls_is_verified(
    tmp_path: Path, radicale_server: RadicaleServer, tls_files: TlsFiles
) -> None:
    with SmtpSink(security="tls", tls=tls_files) as sink:
        # No tls_ca_file: the private CA is not trusted, so nothing is sent.
        w = World(
            setup_cli(tmp_path, radicale_server, smtp_section(sink.port, security="tls")),
            radicale_server,
        )
        w.tm.ok("invite", "TM-1", "ann@example.org")
        assert sink.received == []
        delivery = w.students()["ann@example.org"]["delivery"]
        assert delivery["state"] == "failed"
        assert "signed by a CA this system does not trust: set [smtp] tls_ca_file" in (
            delivery["error"]
        )


def test_imap_starttls_and_a_wrong_password(
    imap_world: ImapWorld, imap_server: DovecotServer
) -> None:
    w, wrong = imap_world("starttls", "not-it")
    w.tm.ok("invite", "TM-1", "dee@example.org")
    imap_server.deliver(ORGANIZER, [reply_bytes("apple_accept.eml")])
    result = w.mail.tick()
    assert result.read == 0 and "login as training@example.org refused" in result.errors[0]
    assert "not-it" not in result.summary()
    assert w.partstats() == {"dee@example.org": "NEEDS-ACTION"}
    wrong.write_text("pw-imap")
    result = w.mail.tick()
    assert result.applied == 1
    assert w.partstats() == {"dee@example.org": "ACCEPTED"}


def maildir_world(
    tmp_path: Path, server: RadicaleServer, smtp_sink: SmtpSink
) -> tuple[World, Path]:
    """The world that reads replies from a fresh Maildir (new, cur, tmp); returns it and
    the Maildir."""
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    extra = smtp_section(smtp_sink.port) + f'\n[maildir]\npath = "{maildir}"\n'
    return World(setup_cli(tmp_path, server, extra), server), maildir


def test_maildir(tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink) -> None:
    w, maildir = maildir_world(tmp_path, radicale_server, smtp_sink)
    w.tm.ok("invite", "TM-1", "--all-enrolled")
    (maildir / "new" / "1.host").write_bytes(reply_bytes("apple_accept.eml"))
    (maildir / "new" / "2.host").write_bytes(b"From: x@y.example\r\n\r\nhello\r\n")
    (maildir / "new" / "3.host").write_bytes(
        reply_bytes(
            "gmail_decline.eml",
            {"From: Bob <bob@example.org>": "From: Mallory <mallory@evil.example>"},
        )
    )
    out = w.tm.ok("mail", "ingest").output
    assert "3 messages read, 1 answer applied, 1 refused" in out
    assert w.partstats()["dee@example.org"] == "ACCEPTED"
    assert sorted(p.name for p in (maildir / ".tmcaldav-processed" / "cur").iterdir()) == [
        "1.host:2,",
        "3.host:2,",
    ]
    assert [p.name for p in (maildir / "cur").iterdir()] == ["2.host:2,"]
    assert list((maildir / "new").iterdir()) == []


def test_mta_pipe_with_envelope_and_a_caldav_outage(
    world: World, radicale_server: RadicaleServer
) -> None:
    world.tm.ok("invite", "TM-1", "eve@example.org")
    raw = b"From eve@example.org  Fri Nov 20 15:00:00 2026\n" + reply_bytes("forwarded_accept.eml")
    radicale_server.stop()
    result = world.tm("mail", "ingest", "-", input=raw)  # type: ignore[arg-type]
    assert result.exit_code == 75, result.output
    assert "deliver it again later" in result.output
    assert world.responses() == 0
    radicale_server.start()
    out = world.tm.ok("mail", "ingest", "-", input=raw).stdout  # type: ignore[arg-type]
    assert out.startswith("applied (eve@example.org in TM-1)")
    assert world.partstats() == {"eve@example.org": "ACCEPTED"}


@pytest.mark.parametrize("capability", ["IMAP4rev1 LITERAL+ UIDPLUS", "IMAP4rev1 LITERAL+"])
def test_imap_servers_without_move(
    tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink, capability: str
) -> None:
    """Older servers: COPY, then flag \\Deleted and UID EXPUNGE (UIDPLUS) only that
    message; without UIDPLUS never a plain EXPUNGE, which would also remove what a
    person marked deleted: the processed message stays flagged and is skipped."""
    server = DovecotServer({ORGANIZER: "pw-imap"}, extra_config=f"imap_capability = {capability}\n")
    try:
        server.start()
    except ImapUnavailable as e:
        pytest.skip(f"IMAP tests need Dovecot: {e}")
    try:
        pw = password_file(tmp_path, "imap.pw", "pw-imap")
        extra = smtp_section(smtp_sink.port) + imap_section(server.port, pw, security="none")
        w = World(setup_cli(tmp_path, radicale_server, extra), radicale_server)
        w.tm.ok("invite", "TM-1", "bob@example.org")
        # A message a person deleted but did not expunge must survive.
        server.deliver(ORGANIZER, [b"From: x@y.example\r\n\r\nold\r\n"])
        imap = server.client(ORGANIZER)
        imap.select("INBOX")
        imap.store("1", "+FLAGS", r"(\Deleted)")
        imap.logout()
        server.deliver(ORGANIZER, [reply_bytes("gmail_decline.eml")])
        assert w.mail.tick().applied == 1
        assert w.partstats() == {"bob@example.org": "DECLINED"}
        assert len(server.folder(ORGANIZER, "tmcaldav-processed")) == 1
        inbox = server.folder(ORGANIZER, "INBOX")
        assert inbox[0] == b"From: x@y.example\r\n\r\nold\r\n"
        assert len(inbox) == (1 if "UIDPLUS" in capability else 2)
        again = w.mail.tick()
        assert (again.read, again.applied) == (0, 0)
    finally:
        server.stop()


def test_crash_between_caldav_write_and_store_loses_nothing(world: World) -> None:
    """The answer reached the server but the store never recorded it (a crash): the poll
    records it, and the same message read again afterwards changes nothing."""
    world.tm.ok("invite", "TM-1", "ann@example.org")
    world.publisher.apply_reply("TM-1", "ann@example.org", "ACCEPTED")  # ... then "crash"
    assert world.students()["ann@example.org"]["calendar"] == "invited"
    poll = Poller(world.store, world.publisher.calendar, ORGANIZER).poll()
    assert poll.answers == 1
    out = world.tm.ok("mail", "ingest", "-", input=reply_bytes("outlook_accept.eml")).stdout
    assert out.startswith("unchanged")
    assert world.responses() == 1
    assert world.students()["ann@example.org"]["calendar"] == "accepted"


def test_delegated_is_recorded_and_the_delegate_not_enrolled(world: World) -> None:
    world.tm.ok("invite", "TM-1", "cy@example.org")
    delegated = reply_bytes(
        "thunderbird_tentative.eml",
        {"PARTSTAT=TENTATIVE;": 'PARTSTAT=DELEGATED;DELEGATED-TO="mailto:sub@example.org";'},
    )
    out = world.tm.ok("mail", "ingest", "-", input=delegated).stdout
    assert out.startswith("applied (cy@example.org in TM-1): delegated")
    assert world.partstats() == {"cy@example.org": "DELEGATED"}
    students = world.students()
    assert students["cy@example.org"]["calendar"] == "delegated"
    assert "sub@example.org" not in students
    # The delegate's own answer is not from an invited attendee: refused.
    sub = reply_bytes(
        "gmail_decline.eml",
        {"bob@example.org": "sub@example.org", "From: Bob <": "From: Sub <"},
    )
    assert world.tm.ok("mail", "ingest", "-", input=sub).stdout.startswith("refused")


def test_an_answer_to_a_cancelled_session_is_kept_but_moves_no_seats(world: World) -> None:
    world.tm.ok("person", "add", "zed@example.org", "--name", "Zed")
    world.tm.ok("enroll", "TM-1", "zed@example.org", "--waitlist")
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    world.tm.ok("session", "cancel", "TM-1")
    out = world.tm.ok("mail", "ingest", "-", input=reply_bytes("gmail_decline.eml")).stdout
    assert out.startswith("applied (bob@example.org in TM-1): declined"), out
    history = json.loads(
        world.tm.ok("session", "history", "TM-1", "bob@example.org", "--json").output
    )
    assert [(h["calendar"], h["source"]) for h in history][-1] == ("declined", "imip")
    # The hooks hear of it (on_response), but the waitlist hands no seat on.
    recorder = Recorder()
    dispatcher_for(
        world.config, world.store, ("waitlist", WaitlistPlugin({})), ("recorder", recorder)
    ).run()
    # (The cancel itself gave each enrolled student advice: on_suggestion hears of it.)
    answers = [c for c in recorder.calls if c.hook not in ("on_invitation_sent", "on_suggestion")]
    assert [(c.hook, c.subject.email) for c in answers] == [("on_response", "bob@example.org")]
    assert world.count(Suggestion, Suggestion.plugin != "tmcaldav") == 0
