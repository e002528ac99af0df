"""iMIP without servers: composing REQUEST/CANCEL, finding and validating REPLYs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.imip_support import CLIENT_REPLIES, ORGANIZER, UID, check_imip, reply_bytes
from tests.itip_method_support import as_method, next_day_counter
from tmcaldav import ical
from tmcaldav.imip import message as imip

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STUDENTS = [
    "ann@example.org",
    "bob@example.org",
    "cy@example.org",
    "dee@example.org",
    "eve@example.org",
]


def spec(method_attendee: str = "ann@example.org", sequence: int = 0) -> ical.EventSpec:
    return ical.EventSpec(
        uid=UID,
        summary="Intro",
        start=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        end=datetime(2026, 12, 1, 16, 0, tzinfo=UTC),
        tz="Europe/Berlin",
        sequence=sequence,
        dtstamp=NOW,
        status="CONFIRMED",
        organizer_email=ORGANIZER,
        organizer_name="Training Office",
        attendees=(ical.Attendee(method_attendee, "Ann Lee"),),
        location="Room 1",
        description="Bring a laptop",
    )


def event(**changes: object) -> imip.KnownEvent:
    attendees = {e: imip.KnownAttendee(i + 1, invited=True) for i, e in enumerate(STUDENTS)}
    attendees["zed@example.org"] = imip.KnownAttendee(9, invited=False)
    values: dict[str, object] = {"key": "TM-1", "uid": UID, "sequence": 0, "attendees": attendees}
    values.update(changes)
    return imip.KnownEvent(**values)  # type: ignore[arg-type]


def decide(raw: bytes, known: imip.KnownEvent | None = None, **kw: object) -> object:
    message = imip.read_message(raw, envelope_sender=kw.pop("envelope", None))  # type: ignore[arg-type]
    found = imip.find_itip(message)
    if not isinstance(found, imip.ItipObject):
        return found
    return imip.validate(
        found, known if known is not None else event(), organizer=ORGANIZER, now=NOW, **kw
    )  # type: ignore[arg-type]


# ---- composing ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
def test_composed_message_reads_back_with_independent_libraries(method: str) -> None:
    out = imip.compose(
        spec(sequence=2), method, reason="update", message_id="<m1@example.org>", date=NOW
    )
    assert out.to == "ann@example.org"
    check_imip(
        out.message.as_bytes(), method=method, uid=UID, sequence=2, attendee="ann@example.org"
    )
    text = out.message.get_body(("plain",))
    assert text is not None and "Room 1" in text.get_content()


def test_compose_refuses_more_than_one_attendee() -> None:
    two = spec()
    two = ical.EventSpec(
        **{**two.__dict__, "attendees": (*two.attendees, ical.Attendee("bob@example.org", None))}
    )
    with pytest.raises(ValueError, match="exactly one attendee"):
        imip.compose(two, "REQUEST", reason="invite", message_id="<m@x.org>", date=NOW)


def test_names_with_non_ascii_letters_are_encoded() -> None:
    s = ical.EventSpec(
        **{
            **spec().__dict__,
            "attendees": (ical.Attendee("ann@example.org", "Anné Łee"),),
            "organizer_name": "Schulungsbüro",
        }
    )
    out = imip.compose(s, "REQUEST", reason="invite", message_id="<m@x.org>", date=NOW)
    raw = out.message.as_bytes()
    assert raw.isascii()  # every header and part is encoded for 7-bit transports
    assert "Anné Łee" in str(out.message["To"])


# ---- the replies real clients send --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLIENT_REPLIES))
def test_client_replies_are_understood(name: str) -> None:
    email, status, when = CLIENT_REPLIES[name]
    reply = decide(reply_bytes(name))
    assert isinstance(reply, imip.Reply), reply
    assert (reply.email, reply.calendar_status, reply.method) == (email, status, "REPLY")
    assert reply.dtstamp == datetime.fromisoformat(when)
    assert reply.session_key == "TM-1" and reply.sequence == 0


def test_outlook_comment_and_reply_time() -> None:
    reply = decide(reply_bytes("outlook_accept.eml"))
    assert isinstance(reply, imip.Reply)
    assert reply.comment == "I will bring my laptop."
    # No DTSTAMP: Outlook's X-MICROSOFT-CDO-REPLYTIME is the answer's time.
    raw = reply_bytes("outlook_accept.eml")
    message = imip.read_message(raw)
    assert message.parts[0].data.count(b"DTSTAMP") == 1


# ---- refusals ------------------------------------------------------------------------------


def refused(result: object, words: str) -> None:
    assert isinstance(result, imip.Refusal), result
    assert words in result.reason, result.reason


@pytest.mark.parametrize(
    ("name", "replace", "words"),
    [
        pytest.param(
            "thunderbird_tentative.eml",
            {"From: Cy O'Neil <cy@example.org>": "From: Mallory <mallory@evil.example>"},
            "does not match the attendee cy@example.org",
            id="wrong sender",
        ),
        pytest.param(
            "gmail_decline.eml",
            {"bob@example.org": "zed@example.org"},
            "zed@example.org is not an invited attendee",
            id="uninvited attendee",
        ),
        pytest.param(
            "gmail_decline.eml",
            {"bob@example.org": "nobody@example.org"},
            "nobody@example.org is not an invited attendee",
            id="unknown attendee",
        ),
        pytest.param(
            "gmail_decline.eml",
            {"CN=Training Office:mailto:training@": "CN=Training Office:mailto:other@"},
            "ORGANIZER other@example.org",
            id="organizer that is not us",
        ),
        pytest.param(
            "forwarded_accept.eml",
            {
                "From: Training Office <training@example.org>": (
                    "From: Mallory <mallory@evil.example>"
                )
            },
            "forwarded by mallory@evil.example",
            id="forwarded by a stranger",
        ),
    ],
)
def test_a_changed_reply_is_refused(name: str, replace: dict[str, str], words: str) -> None:
    refused(decide(reply_bytes(name, replace)), words)


def _mallory_declines_for_bob() -> bytes:
    return reply_bytes(
        "gmail_decline.eml", {"From: Bob <bob@example.org>": "From: Mallory <mallory@evil.example>"}
    )


def test_return_path_in_the_message_is_not_proof_of_the_sender() -> None:
    # Return-Path is written by whoever sends the message (or copied from it by a
    # mailbox): it must never make a stranger's answer the student's.
    raw = b"Return-Path: <bob@example.org>\r\n" + _mallory_declines_for_bob()
    refused(decide(raw), "the sender mallory@evil.example does not match the attendee bob")
    assert imip.read_message(raw).envelope_sender is None


def test_envelope_sender_does_not_stand_for_from() -> None:
    # The envelope sender is as easy to forge as From, and it is not what the student's
    # mail program shows: it never replaces From, whether `--sender` or an mbox line.
    refused(decide(_mallory_declines_for_bob(), envelope="<bob@example.org>"), "does not match")
    raw = b"From bob@example.org  Fri Nov 20 11:15:00 2026\n" + _mallory_declines_for_bob()
    assert imip.read_message(raw).envelope_sender == "bob@example.org"
    refused(decide(raw), "does not match the attendee bob@example.org")
    # A list that rewrites From cannot pass an answer on either.
    listed = reply_bytes(
        "thunderbird_tentative.eml",
        {"From: Cy O'Neil <cy@example.org>": "From: Cy via List <list@example.net>"},
    )
    refused(decide(listed, envelope="<cy@example.org>"), "does not match the attendee cy")
    # Nor does it pick, in a COUNTER that lists every attendee, whose answer it is.
    counter = as_method(
        "thunderbird_tentative.eml",
        "COUNTER",
        {
            "From: Cy O'Neil <cy@example.org>": "From: Mallory <mallory@evil.example>",
            "ATTENDEE;RSVP=TRUE;": "ATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@example.org\r\n"
            "ATTENDEE;RSVP=TRUE;",
        },
    )
    refused(decide(counter, envelope="<cy@example.org>"), "not one of its attendees")


def test_from_the_student_counts_whatever_the_envelope_sender() -> None:
    # Calendar services send answers with their own bounce address (Google Calendar),
    # and forwarders rewrite it (SRS): a different envelope sender refuses nothing.
    raw = reply_bytes("gmail_decline.eml")
    reply = decide(raw, envelope="<3xYzbounce-bob=example.org@calendar-server.bounces.google.com>")
    assert isinstance(reply, imip.Reply) and reply.email == "bob@example.org"
    srs = b"From SRS0=HHH=TT=example.org=bob@forwarder.example  Fri Nov 20 11:15:00 2026\n" + raw
    assert isinstance(decide(srs), imip.Reply)


def test_unknown_uid_is_refused() -> None:
    raw = reply_bytes("gmail_decline.eml", {UID: "someone-else@example.org"})
    message = imip.read_message(raw)
    found = imip.find_itip(message)
    assert isinstance(found, imip.ItipObject)
    refused(
        imip.validate(found, None, organizer=ORGANIZER, now=NOW),
        "no published session has the UID",
    )


def test_two_attendees_are_refused() -> None:
    line = "ATTENDEE;CN=Eve Ng;PARTSTAT=ACCEPTED:mailto:eve@example.org"
    raw = reply_bytes(
        "forwarded_accept.eml",
        {line: line + "\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@example.org"},
    )
    refused(decide(raw), "exactly one ATTENDEE, this one has 2")
    # The same address twice is two ATTENDEE lines too.
    raw = reply_bytes(
        "forwarded_accept.eml",
        {line: line + "\r\nATTENDEE;PARTSTAT=DECLINED:mailto:eve@example.org"},
    )
    refused(decide(raw), "exactly one ATTENDEE")


def test_not_icalendar_is_refused() -> None:
    message = MIMEMultipart("mixed")
    message["From"] = "cy@example.org"
    message.attach(MIMEText("see the answer", "plain"))
    message.attach(MIMEText("this is not a calendar at all", "calendar"))
    refused(decide(message.as_bytes()), "is not iCalendar")


def test_five_megabyte_attachment_is_refused() -> None:
    message = imip.read_message(reply_bytes("thunderbird_tentative.eml"))
    assert message.parts
    raw = MIMEMultipart("mixed")
    raw["From"] = "Cy <cy@example.org>"
    inner = imip.read_message(reply_bytes("thunderbird_tentative.eml")).parts[0].data
    cal = MIMEText(inner.decode(), "calendar")
    cal.set_param("method", "REPLY")
    raw.attach(cal)
    raw.attach(MIMEApplication(b"\0" * (5 * 1024 * 1024), "octet-stream"))
    refused(decide(raw.as_bytes()), "too large")


def test_sequence_from_the_future_is_refused_older_is_accepted() -> None:
    raw = reply_bytes("gmail_decline.eml", {"SEQUENCE:0": "SEQUENCE:3"})
    refused(decide(raw, event(sequence=2)), "answers SEQUENCE 3")
    older = decide(reply_bytes("gmail_decline.eml"), event(sequence=2))
    assert isinstance(older, imip.Reply) and older.sequence == 0


def test_sent_by_needs_trust() -> None:
    raw = reply_bytes(
        "thunderbird_tentative.eml",
        {
            "From: Cy O'Neil <cy@example.org>": "From: Pat <assistant@example.org>",
            "ATTENDEE;RSVP=TRUE;": 'ATTENDEE;SENT-BY="mailto:assistant@example.org";RSVP=TRUE;',
        },
    )
    refused(decide(raw), "assistant@example.org is not in trust_sent_by")
    assert isinstance(decide(raw, trust_sent_by=["assistant@example.org"]), imip.Reply)
    assert isinstance(decide(raw, trust_sent_by=["@example.org"]), imip.Reply)


def test_future_dtstamp_is_clamped_to_now() -> None:
    raw = reply_bytes("gmail_decline.eml", {"DTSTAMP:20261120T111500Z": "DTSTAMP:20301120T111500Z"})
    reply = decide(raw)
    assert isinstance(reply, imip.Reply) and reply.dtstamp == NOW


# ---- not ours ------------------------------------------------------------------------------


def test_plain_mail_and_foreign_invitations_are_unrelated() -> None:
    plain = EmailMessage()
    plain["From"] = "ann@example.org"
    plain.set_content("Hello, can I bring a friend?")
    assert isinstance(decide(plain.as_bytes()), imip.Unrelated)
    invitation = imip.compose(
        spec(), "REQUEST", reason="invite", message_id="<m@x.org>", date=NOW
    ).message.as_bytes()
    assert isinstance(decide(invitation), imip.Unrelated)


def test_found_by_content_type_not_file_name() -> None:
    # An .ics file name on a text/plain part is not a calendar part.
    message = MIMEMultipart("mixed")
    message["From"] = "cy@example.org"
    data = imip.read_message(reply_bytes("thunderbird_tentative.eml")).parts[0].data
    part = MIMEText(data.decode(), "plain")
    part.add_header("Content-Disposition", "attachment", filename="invite.ics")
    message.attach(part)
    assert isinstance(decide(message.as_bytes()), imip.Unrelated)


def test_counter_and_refresh() -> None:
    reply = decide(next_day_counter())
    assert isinstance(reply, imip.Reply) and reply.method == "COUNTER"
    assert reply.proposed_start == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    reply = decide(as_method("gmail_decline.eml", "REFRESH"))
    assert isinstance(reply, imip.Reply) and reply.method == "REFRESH"


def test_mbox_from_line_is_read_and_the_message_after_it() -> None:
    raw = b"From cy@example.org  Fri Nov 20 12:10:00 2026\n" + reply_bytes(
        "thunderbird_tentative.eml"
    )
    message = imip.read_message(raw)
    assert message.envelope_sender == "cy@example.org"
    assert message.sender == "cy@example.org"
    assert isinstance(decide(raw), imip.Reply)


def test_delay_of_a_few_minutes_is_not_clamped() -> None:
    stamp = (NOW + timedelta(minutes=2)).strftime("%Y%m%dT%H%M%SZ")
    raw = reply_bytes("gmail_decline.eml", {"DTSTAMP:20261120T111500Z": f"DTSTAMP:{stamp}"})
    reply = decide(raw)
    assert isinstance(reply, imip.Reply) and reply.dtstamp == NOW + timedelta(minutes=2)


# ---- whatever arrives, the reader answers with a decision, never an exception ---------------

_PIECES = [
    b"From: a@b.example\r\n",
    b"From: <>\r\n",
    b"From: a@b, c@d\r\n",
    b"From: =?utf-8?q?=ff?=\r\n",
    b"Return-Path: <x>\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: text/calendar; method=REPLY; charset=klingon\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"BEGIN:VCALENDAR\r\n",
    b"METHOD:REPLY\r\n",
    b"BEGIN:VEVENT\r\n",
    b"UID:tmcaldav-TM-1@example.org\r\n",
    b"ATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@example.org\r\n",
    b"END:VEVENT\r\n",
    b"END:VCALENDAR\r\n",
    b"=?=\xff\xfe\x00",
    b"From x\n",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=40)), max_size=30))
def test_any_bytes_get_a_decision(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    result = decide(raw)
    assert isinstance(result, imip.Reply | imip.Refusal | imip.Unrelated)
