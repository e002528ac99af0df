"""iMIP (RFC 6047): compose REQUEST / CANCEL mails, find and validate incoming REPLYs.

Pure functions over bytes and plain data: no network, no store. `compose` turns one
session's event into the message one student receives; `read_message` finds the
iTIP parts of an incoming message (also inside forwarded messages); `find_itip`
parses them; `validate` decides, against the published session, whether the answer
may be applied (RFC 6047 §2.2.1, DESIGN.md §6) or must be refused.
"""

from __future__ import annotations

import email
import email.policy
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import format_datetime
from zoneinfo import ZoneInfo

from tmcaldav import ical
from tmcaldav.domain import normalise_address

__all__ = [
    "INCOMING_METHODS",
    "MAX_CALENDAR_BYTES",
    "MAX_MESSAGE_BYTES",
    "CalendarPart",
    "ItipObject",
    "KnownAttendee",
    "KnownEvent",
    "MailMessage",
    "Outgoing",
    "Refusal",
    "Reply",
    "Unrelated",
    "compose",
    "find_itip",
    "read_message",
    "validate",
]

#: A REPLY is a few kilobytes; anything much larger is not an answer we process.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_CALENDAR_BYTES = 256 * 1024
#: Methods an attendee sends to the organizer; every other method is not ours to process.
INCOMING_METHODS = frozenset({"REPLY", "REFRESH", "COUNTER"})
# Guards against MIME bombs: nesting depth and number of parts looked at.
_MAX_DEPTH = 8
_MAX_PARTS = 200
# A DTSTAMP further in the future than this is clock skew or a forgery: it must not win
# iTIP ordering against answers that really come later.
_MAX_SKEW = timedelta(minutes=5)

_SUBJECTS = {
    "invite": "Invitation",
    "resend": "Invitation",
    "refresh": "Invitation",
    "update": "Updated invitation",
    "reschedule": "New time",
    "cancel": "Cancelled",
    "remove": "Cancelled",
    "remind": "Reminder",
}


# --------------------------------------------------------------------------- outgoing


@dataclass(frozen=True)
class Outgoing:
    """One iMIP message to one student, ready for SMTP."""

    to: str
    message_id: str
    message: EmailMessage


def _when(spec: ical.EventSpec) -> str:
    zone = ZoneInfo(spec.tz)
    start, end = spec.start.astimezone(zone), spec.end.astimezone(zone)
    day = start.strftime("%a %d %b %Y").replace(" 0", " ")
    if start.date() == end.date():
        return f"{day}, {start:%H:%M}–{end:%H:%M} ({spec.tz})"
    last = end.strftime("%a %d %b %Y %H:%M").replace(" 0", " ")
    return f"{day} {start:%H:%M} – {last} ({spec.tz})"


def _texts(spec: ical.EventSpec, method: str, reason: str, name: str | None) -> tuple[str, str]:
    greeting = f"Hello {name}," if name else "Hello,"
    when = _when(spec)
    if method == "CANCEL":
        lead = (
            "this training session has been cancelled:"
            if reason == "cancel"
            else "you are no longer on the list for this training session:"
        )
        ask = "Your calendar program removes it when you open this message."
    else:
        lead = {
            "update": "the details of this training session have changed:",
            "reschedule": "this training session has a new time; please answer again:",
            "remind": "a reminder: please tell us whether you will come to this training session:",
        }.get(reason, "you are invited to this training session:")
        ask = (
            "Please answer with Yes, No or Maybe in your calendar or mail program; "
            "your answer reaches the training office by itself."
        )
    rows = [("What", spec.summary), ("When", when)]
    if spec.location:
        rows.append(("Where", spec.location))
    plain = [greeting, "", lead, ""]
    plain += [f"  {label}: {value}" for label, value in rows]
    if spec.description and method != "CANCEL":
        plain += ["", spec.description]
    plain += ["", ask, "", "-- ", spec.organizer_name or spec.organizer_email]
    table = "".join(
        f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    description = (
        f"<p>{html.escape(spec.description).replace(chr(10), '<br>')}</p>"
        if spec.description and method != "CANCEL"
        else ""
    )
    rich = (
        "<!DOCTYPE html><html><body>"
        f"<p>{html.escape(greeting)}</p><p>{html.escape(lead)}</p>"
        f"<table>{table}</table>{description}<p>{html.escape(ask)}</p>"
        f"<p>{html.escape(spec.organizer_name or spec.organizer_email)}</p>"
        "</body></html>"
    )
    return "\n".join(plain) + "\n", rich


def _own_texts(body: str) -> tuple[str, str]:
    """An administrator's text (the `[invitation]` body) as the plain and HTML parts."""
    plain = body.strip("\n") + "\n"
    paragraphs = [p for p in plain.split("\n\n") if p.strip()]
    rich = (
        "<!DOCTYPE html><html><body>"
        + "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
        + "</body></html>"
    )
    return plain, rich


def compose(
    spec: ical.EventSpec,
    method: str,
    *,
    reason: str,
    message_id: str,
    date: datetime,
    html_part: bool = True,
    subject: str | None = None,
    body: str | None = None,
) -> Outgoing:
    """The iMIP message for the one attendee in `spec` (REQUEST or CANCEL).

    multipart/alternative: text/plain (and text/html) for people, then the iTIP object
    as ``text/calendar; method=...; charset=UTF-8`` (base64, so its CRLF line ends
    survive every relay). From and ORGANIZER are the organizer's mailbox. `subject` and
    `body` replace tmcaldav's own subject and text (the `[invitation]` templates). Raises
    ValueError when `spec` has not exactly one attendee or cannot be built.
    """
    method = method.upper()
    if method not in ("REQUEST", "CANCEL"):
        raise ValueError(f"only REQUEST and CANCEL are sent, not {method}")
    if len(spec.attendees) != 1:
        raise ValueError("an iMIP message goes to exactly one attendee")
    if method == "CANCEL":
        spec = replace(spec, status="CANCELLED")  # RFC 5546 §3.2.5
    attendee = spec.attendees[0]
    calendar = ical.build_calendar(spec, method=method).encode("utf-8")
    if body is not None:
        plain, rich = _own_texts(body)
    else:
        plain, rich = _texts(spec, method, reason, ical.normalise_name(attendee.name))
    to = normalise_address(attendee.email)

    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = _address(spec.organizer_name, spec.organizer_email)
    message["To"] = _address(attendee.name, to)
    label = _SUBJECTS.get(reason, "Invitation")
    title = ical.normalise_name(spec.summary) or spec.summary
    message["Subject"] = (
        " ".join(subject.split()) if subject else f"{label}: {title} ({_when(spec)})"
    )
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    # Tells Exchange/Outlook to treat the message as a meeting request, not plain mail.
    message["Content-Class"] = "urn:content-classes:calendarmessage"
    message.set_content(plain, subtype="plain", cte="quoted-printable")
    if html_part:
        message.add_alternative(rich, subtype="html", cte="quoted-printable")
    message.add_alternative(
        calendar,
        maintype="text",
        subtype="calendar",
        cte="base64",
        params={"method": method, "charset": "UTF-8"},
    )
    return Outgoing(to=to, message_id=message_id, message=message)


def _address(name: str | None, addr: str) -> Address:
    local, _, domain = normalise_address(addr).partition("@")
    return Address(display_name=ical.normalise_name(name) or "", username=local, domain=domain)


# --------------------------------------------------------------------------- incoming


@dataclass(frozen=True)
class CalendarPart:
    """A text/calendar part and the From addresses of the messages around it.

    ``senders`` lists the From of each enclosing message, outermost first: one entry for
    a plain message, two when the part sits in a forwarded message/rfc822.
    """

    data: bytes
    method: str | None
    senders: tuple[str | None, ...]


@dataclass(frozen=True)
class MailMessage:
    """What tmcaldav reads from an incoming message (never the human-readable text).

    `sender` is the From address. `envelope_sender` is what the MTA said (`mail ingest
    --sender`, an mbox "From " line): kept for the record of a refusal, never proof of
    who answered (see `validate`).
    """

    message_id: str | None
    sender: str | None
    envelope_sender: str | None
    size: int
    parts: tuple[CalendarPart, ...]
    # A part that is text/calendar but could not be decoded (broken base64, too large).
    broken: tuple[str, ...] = ()


def _from_address(message: Message) -> str | None:
    """The single From address, normalised; None when missing, several or malformed."""
    try:
        header = message.get("From")
        addresses = getattr(header, "addresses", None)
        if header is None or not addresses or len(addresses) != 1:
            return None
        return normalise_address(addresses[0].addr_spec)
    except (ValueError, TypeError, IndexError, AttributeError):
        return None


def _envelope(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip("<>").strip()
    try:
        return normalise_address(value) if value else None
    except ValueError:
        return None


def read_message(raw: bytes, *, envelope_sender: str | None = None) -> MailMessage:
    """Parse a message as it arrives (an mbox "From " line first is allowed).

    The envelope sender is `envelope_sender` (from the MTA), else the mbox "From "
    line. A Return-Path header is not read: inside the message it is whatever the
    sender (or a mailbox that copied it) wrote. Calendar parts are found by
    Content-Type ``text/calendar`` at any depth, including inside message/rfc822
    (forwarded mail).
    """
    size = len(raw)
    mbox_sender = None
    if raw.startswith(b"From "):
        first, _, raw = raw.partition(b"\n")
        words = first.decode("ascii", "replace").split()
        mbox_sender = words[1] if len(words) > 1 else None
    message = email.message_from_bytes(raw, policy=email.policy.default)
    envelope = _envelope(envelope_sender) or _envelope(mbox_sender)
    parts: list[CalendarPart] = []
    broken: list[str] = []
    _walk(message, (_from_address(message),), 0, parts, broken, [0])
    try:
        message_id = str(message.get("Message-ID") or "").strip() or None
    except (ValueError, TypeError):
        message_id = None
    return MailMessage(
        message_id=message_id[:300] if message_id else None,
        sender=_from_address(message),
        envelope_sender=envelope,
        size=size,
        parts=tuple(parts),
        broken=tuple(broken),
    )


def _walk(
    part: Message,
    senders: tuple[str | None, ...],
    depth: int,
    found: list[CalendarPart],
    broken: list[str],
    seen: list[int],
) -> None:
    seen[0] += 1
    if depth > _MAX_DEPTH or seen[0] > _MAX_PARTS:
        broken.append("the message nests too many parts")
        return
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        for inner in part.get_payload() or []:
            if isinstance(inner, Message):
                _walk(inner, (*senders, _from_address(inner)), depth + 1, found, broken, seen)
        return
    if part.is_multipart():
        for sub in part.get_payload() or []:
            if isinstance(sub, Message):
                _walk(sub, senders, depth + 1, found, broken, seen)
        return
    if content_type != "text/calendar":
        return
    try:
        data = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding must not stop the other parts
        data = None
    if not isinstance(data, bytes) or not data.strip():
        broken.append("a text/calendar part could not be decoded")
        return
    if len(data) > MAX_CALENDAR_BYTES:
        broken.append(f"a text/calendar part is too large ({len(data)} bytes)")
        return
    charset = part.get_content_charset()
    if charset and charset.lower().replace("_", "-") not in ("utf-8", "us-ascii", "utf8"):
        try:
            data = data.decode(charset).encode("utf-8")
        except (LookupError, UnicodeDecodeError):
            broken.append(f"a text/calendar part has an unreadable charset {charset!r}")
            return
    method = part.get_param("method")
    found.append(
        CalendarPart(
            data=data,
            method=str(method).strip().upper() if isinstance(method, str) else None,
            senders=senders,
        )
    )


@dataclass(frozen=True)
class Unrelated:
    """Not an iTIP message for the organizer: left where it is, untouched."""

    reason: str


@dataclass(frozen=True)
class Refusal:
    """A message that claims to be an answer but may not be applied; changes nothing."""

    reason: str


@dataclass(frozen=True)
class ItipObject:
    """The one iTIP object of a message: its method, event and where it came from."""

    method: str
    event: ical.EventState
    part: CalendarPart
    # How many ATTENDEE lines the VEVENT holds (EventState merges repeated addresses).
    attendee_lines: int


def _count_attendees(data: bytes) -> int:
    """ATTENDEE lines of the VEVENT that has most of them (VALARM attendees not counted)."""
    text = data.decode("utf-8", "replace").replace("\r\n ", "").replace("\n ", "")
    depth, count, most = 0, 0, 0
    for line in text.replace("\r", "\n").split("\n"):
        upper = line.upper()
        if upper.startswith("BEGIN:"):
            depth += 1
            count = 0 if upper.strip() == "BEGIN:VEVENT" else count
        elif upper.startswith("END:"):
            depth -= 1
        elif depth == 2 and upper.startswith(("ATTENDEE;", "ATTENDEE:")):
            count += 1
            most = max(most, count)
    return most


def find_itip(message: MailMessage) -> ItipObject | Refusal | Unrelated:
    """The message's iTIP object for the organizer (REPLY, REFRESH, COUNTER), if any.

    Other methods (an invitation from someone else, a published calendar) and messages
    without a calendar part are Unrelated. Parts that differ, broken parts and parts
    that are not iCalendar are refused.
    """
    if not message.parts:
        if message.broken:
            return Refusal("; ".join(message.broken))
        return Unrelated("no text/calendar part")
    if message.size > MAX_MESSAGE_BYTES:
        return Refusal(
            f"the message is too large ({message.size} bytes, at most {MAX_MESSAGE_BYTES})"
        )
    objects: list[ItipObject] = []
    problems: list[str] = list(message.broken)
    for part in message.parts:
        try:
            event = ical.read_event(part.data)
        except ical.ICalError as e:
            problems.append(f"a text/calendar part is not iCalendar ({e})")
            continue
        method = event.method or part.method
        if method not in INCOMING_METHODS:
            continue
        objects.append(ItipObject(method, event, part, _count_attendees(part.data)))
    if not objects:
        if problems:
            return Refusal("; ".join(problems))
        return Unrelated("no REPLY, REFRESH or COUNTER in the calendar parts")
    first = objects[0]
    for other in objects[1:]:
        if _signature(other) != _signature(first):
            return Refusal("the message holds several different iTIP objects")
    return first


def _signature(obj: ItipObject) -> tuple[object, ...]:
    e = obj.event
    answers = tuple(sorted((a, s.partstat) for a, s in e.attendees.items()))
    return (obj.method, e.uid, e.sequence, answers, obj.part.senders)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class KnownAttendee:
    """An enrollment of the published session, as validation needs it."""

    enrollment_id: int
    # Invited and not cancelled: an attendee on the event.
    invited: bool


@dataclass(frozen=True)
class KnownEvent:
    """A published session, looked up by the UID of an incoming message."""

    key: str
    uid: str
    sequence: int
    attendees: Mapping[str, KnownAttendee] = field(hash=False)


@dataclass(frozen=True)
class Reply:
    """A validated answer from one invited student (REPLY, REFRESH or COUNTER)."""

    method: str
    session_key: str
    uid: str
    email: str
    enrollment_id: int
    partstat: str
    calendar_status: str
    sequence: int
    # The REPLY's own time (DTSTAMP, else Outlook's reply time), never in the future.
    dtstamp: datetime | None
    comment: str | None
    sent_by: str | None
    proposed_start: datetime | None = None
    proposed_end: datetime | None = None


def _trusted(address: str, trusted: Iterable[str]) -> bool:
    for entry in trusted:
        entry = entry.strip().lower()
        if entry.startswith("@") and address.endswith(entry):
            return True
        if entry and entry == address:
            return True
    return False


def _pick_attendee(itip: ItipObject, event: KnownEvent) -> str | Refusal:
    attendees = list(itip.event.attendees)
    if itip.method == "COUNTER":
        # A COUNTER may carry the whole attendee list: the one answering is the From of
        # the message that carries it (themselves, or through their SENT-BY).
        sender = itip.part.senders[-1]
        mine = [
            a
            for a, state in itip.event.attendees.items()
            if sender is not None and sender in (a, state.sent_by) and a in event.attendees
        ]
        if len(mine) == 1:
            return mine[0]
        if len(attendees) != 1:
            return Refusal("a COUNTER whose sender is not one of its attendees")
        return attendees[0]
    if itip.attendee_lines != 1 or len(attendees) != 1:
        return Refusal(
            f"a {itip.method} must carry exactly one ATTENDEE, this one has "
            f"{max(itip.attendee_lines, len(attendees))}"
        )
    return attendees[0]


def _check_sender(
    attendee: ical.AttendeeState,
    part: CalendarPart,
    organizer: str,
    trusted: Iterable[str],
) -> Refusal | None:
    """RFC 6047 §2.2.1: the sender must be the attendee (or a trusted SENT-BY).

    The sender is the From of the message that carries the calendar part: the one
    address the student's mail program shows and DMARC protects. The envelope sender
    and Return-Path never stand in for it: both are the sender's to choose. Nor are
    they required to match it: calendar services answer with their own bounce address
    (Google Calendar) and forwarders rewrite it (SRS).
    """
    trusted = tuple(trusted)
    inner = part.senders[-1]
    allowed = {attendee.email}
    if attendee.sent_by and _trusted(attendee.sent_by, trusted):
        allowed.add(attendee.sent_by)
    if inner not in allowed:
        shown = inner or "(no usable From)"
        if attendee.sent_by and attendee.sent_by == inner:
            return Refusal(
                f"sent by {inner} on behalf of {attendee.email}, and {inner} is not in "
                "trust_sent_by"
            )
        return Refusal(f"the sender {shown} does not match the attendee {attendee.email}")
    # A forwarded answer: everyone who passed it on must be the student or the office.
    for outer in part.senders[:-1]:
        if outer not in allowed and outer != organizer and not (outer and _trusted(outer, trusted)):
            return Refusal(
                f"the answer of {attendee.email} was forwarded by {outer or '(no usable From)'}, "
                "who is neither that student nor the organizer"
            )
    return None


def validate(
    itip: ItipObject,
    event: KnownEvent | None,
    *,
    organizer: str,
    trust_sent_by: Iterable[str] = (),
    now: datetime,
) -> Reply | Refusal:
    """Decide whether an iTIP answer may be applied to the published session `event`.

    Refused: an unknown UID, an ORGANIZER that is not us, not exactly one ATTENDEE, an
    attendee who is not invited, a From address that is not that attendee (unless a
    SENT-BY address in `trust_sent_by`) whatever the envelope sender, or a SEQUENCE
    newer than the event's. An answer to an older SEQUENCE is accepted: the apply step
    keeps it in the history only.
    """
    organizer = normalise_address(organizer)
    state = itip.event
    if event is None:
        return Refusal(f"no published session has the UID {state.uid!r}")
    if state.organizer is not None and state.organizer != organizer:
        return Refusal(f"the ORGANIZER {state.organizer} is not {organizer}")
    picked = _pick_attendee(itip, event)
    if isinstance(picked, Refusal):
        return picked
    attendee = state.attendees[picked]
    known = event.attendees.get(picked)
    if known is None or not known.invited:
        return Refusal(f"{picked} is not an invited attendee of session {event.key}")
    refused = _check_sender(attendee, itip.part, organizer, trust_sent_by)
    if refused is not None:
        return refused
    if state.sequence > event.sequence:
        return Refusal(
            f"it answers SEQUENCE {state.sequence}, but session {event.key} is at {event.sequence}"
        )
    stamp = state.dtstamp or attendee.reply_time
    if stamp is not None and stamp > now + _MAX_SKEW:
        stamp = now
    partstat = ical.STATUS_TO_PARTSTAT[attendee.calendar_status]
    return Reply(
        method=itip.method,
        session_key=event.key,
        uid=event.uid,
        email=picked,
        enrollment_id=known.enrollment_id,
        partstat=partstat,
        calendar_status=attendee.calendar_status,
        sequence=state.sequence,
        dtstamp=stamp,
        comment=(state.comment or "").strip() or None,
        sent_by=attendee.sent_by,
        proposed_start=state.start if itip.method == "COUNTER" else None,
        proposed_end=state.end if itip.method == "COUNTER" else None,
    )
