"""Helpers for the iMIP tests: config sections, reply files, and an independent check of
sent messages with the `icalendar` library and the standard `email` parser."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import icalendar

DATA = Path(__file__).parent / "data" / "imip"
ORGANIZER = "training@example.org"
UID = "tmcaldav-TM-1@example.org"

#: The reply files: who answers, what, and when (the REPLY's DTSTAMP).
CLIENT_REPLIES = {
    "outlook_accept.eml": ("ann@example.org", "accepted", "2026-11-20T10:00:03+00:00"),
    "gmail_decline.eml": ("bob@example.org", "declined", "2026-11-20T11:15:00+00:00"),
    "thunderbird_tentative.eml": ("cy@example.org", "tentative", "2026-11-20T12:10:00+00:00"),
    "apple_accept.eml": ("dee@example.org", "accepted", "2026-11-20T13:05:00+00:00"),
    "forwarded_accept.eml": ("eve@example.org", "accepted", "2026-11-20T14:00:00+00:00"),
}


def reply_bytes(name: str, replace: dict[str, str] | None = None) -> bytes:
    """A reply file, with text replaced (to make spoofed or broken variants)."""
    text = (DATA / name).read_bytes()
    for old, new in (replace or {}).items():
        assert old.encode() in text, f"{old!r} not in {name}"
        text = text.replace(old.encode(), new.encode())
    return text


def password_file(folder: Path, name: str, password: str) -> Path:
    """A password file only its owner can read."""
    path = folder / name
    path.write_text(password)
    path.chmod(0o600)
    return path


def smtp_section(
    port: int,
    *,
    security: str = "none",
    ca_file: Path | None = None,
    user: str | None = None,
    password: Path | None = None,
) -> str:
    """An [smtp] table for a test server on 127.0.0.1."""
    text = f'\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "{security}"\ntimeout = 10\n'
    if ca_file is not None:
        text += f'tls_ca_file = "{ca_file}"\n'
    if user is not None:
        text += f'username = "{user}"\npassword_file = "{password}"\n'
    return text


def imap_section(
    port: int,
    password: Path,
    *,
    security: str = "starttls",
    ca_file: Path | None = None,
    trust_sent_by: tuple[str, ...] = (),
) -> str:
    """An [imap] table for the test Dovecot."""
    text = (
        f'\n[imap]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "{security}"\n'
        f'username = "{ORGANIZER}"\npassword_file = "{password}"\ntimeout = 10\n'
        f"trust_sent_by = {list(trust_sent_by)!r}\n".replace("'", '"')
    )
    if ca_file is not None:
        text += f'tls_ca_file = "{ca_file}"\n'
    return text


def parse(raw: bytes) -> EmailMessage:
    """A message parsed by the standard library."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def check_imip(
    raw: bytes,
    *,
    method: str,
    uid: str,
    sequence: int,
    attendee: str,
    tz: str = "Europe/Berlin",
) -> icalendar.Event:
    """Check one sent iMIP message with libraries independent of tmcaldav's own parser.

    MIME: multipart/alternative with text/plain, text/html and a text/calendar part whose
    Content-Type carries the method and charset=UTF-8. iCalendar (parsed by icalendar):
    METHOD, one VEVENT with UID, SEQUENCE, ORGANIZER, exactly the one ATTENDEE with
    RSVP=TRUE, a VTIMEZONE for the zone, and no SCHEDULE-AGENT anywhere.
    """
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in message.iter_parts()]
    assert types == ["text/plain", "text/html", "text/calendar"], types
    assert str(message["From"]) == f"Training Office <{ORGANIZER}>"
    assert attendee in str(message["To"]).lower()
    assert message["Message-ID"] and message["Date"]
    part = list(message.iter_parts())[2]
    assert part.get_param("method") == method
    assert str(part.get_param("charset")).upper() == "UTF-8"
    data = part.get_payload(decode=True)
    assert b"\r\n" in data and b"SCHEDULE-AGENT" not in data and b"SCHEDULE-FORCE" not in data
    calendar = icalendar.Calendar.from_ical(data)
    assert str(calendar["METHOD"]) == method
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 1
    event = events[0]
    assert str(event["UID"]) == uid
    assert int(event["SEQUENCE"]) == sequence
    assert str(event["ORGANIZER"]) == f"mailto:{ORGANIZER}"
    attendees = event.get("ATTENDEE")
    attendees = attendees if isinstance(attendees, list) else [attendees]
    assert [str(a) for a in attendees] == [f"mailto:{attendee}"]
    assert attendees[0].params["RSVP"] == "TRUE"
    zones = [str(z["TZID"]) for z in calendar.walk("VTIMEZONE")]
    assert zones == [tz]
    assert event["DTSTART"].params["TZID"] == tz
    assert isinstance(event["DTSTART"].dt, datetime)
    if method == "CANCEL":
        assert str(event["STATUS"]) == "CANCELLED"
    return event
