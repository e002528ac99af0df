"""People, sessions and enrollments: the administrator's edits to the store.

Each function works inside the caller's transaction and raises RosterError (or
NotFoundError) before it changes anything, so a refused edit leaves the store as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy.orm import Session

from tmcaldav.config import check_timezone
from tmcaldav.domain import (
    ANSWERS,
    CAPACITY_MAX,
    NOTE_MAX,
    SEAT_STATUSES,
    YEAR_MAX,
    YEAR_MIN,
    CalendarStatus,
    EnrollmentStatus,
    ResponseSource,
    normalise_address,
)
from tmcaldav.errors import TmcaldavError
from tmcaldav.store import add_note, find_person, get_enrollment, get_person, get_session
from tmcaldav.store.model import (
    ENROLLMENT_STATUSES,
    Enrollment,
    Person,
    Response,
    TrainingSession,
    utcnow,
)
from tmcaldav.words import plural


class RosterError(TmcaldavError, ValueError):
    """An edit that cannot be made; the message says why and what to do instead."""


# Control characters other than tab and line breaks: not allowed in what people type.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_time(value: str, tz: str, *, fold: int | None = None, what: str = "time") -> datetime:
    """An ISO 8601 time between 1970 and 2200; one without an offset is read in the zone
    `tz`. A wall-clock time the zone skips (a DST gap) is refused naming the two valid
    choices; one it passes twice (the clocks go back) needs `fold` (0: the first, 1: the
    second) or an offset."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as e:
        raise RosterError(
            f"the {what} is not an ISO 8601 time: {value!r} (e.g. 2026-12-01T09:00)"
        ) from e
    if not YEAR_MIN <= parsed.year <= YEAR_MAX:
        raise RosterError(
            f"the {what} {value!r} is out of range: use a date between {YEAR_MIN} and {YEAR_MAX}"
        )
    if parsed.tzinfo is None:
        return wall_time(parsed, zone(tz), tz, fold=fold, what=what)
    return parsed


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}" if moment.second else f"{moment:%H:%M}"


def wall_time(
    naive: datetime, where: tzinfo, name: str, *, fold: int | None = None, what: str = "time"
) -> datetime:
    """`naive` as a time in zone `where` (named `name`), refused when it does not exist
    there or, without `fold`, when it exists twice."""
    earlier, later = naive.replace(tzinfo=where, fold=0), naive.replace(tzinfo=where, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    real = [
        c
        for c in (earlier, later)
        if c.astimezone(UTC).astimezone(where).replace(tzinfo=None) == naive.replace(fold=0)
    ]
    if not real:
        before, after = sorted(
            c.astimezone(UTC).astimezone(where).replace(tzinfo=None) for c in (earlier, later)
        )
        raise RosterError(
            f"{_clock(naive)} does not exist on {naive:%Y-%m-%d} in {name}; use "
            f"{_clock(before)} or {_clock(after)} for the {what} (the clocks skip it)"
        )
    if fold is None:
        first, second = (c.isoformat() for c in (earlier, later))
        raise RosterError(
            f"the {what} {_clock(naive)} on {naive:%Y-%m-%d} happens twice in {name} (the "
            f"clocks go back): say which with --fold 0 (the first, {first}) or --fold 1 "
            f"(the second, {second}), or give the time with its offset"
        )
    return later if fold else earlier


def zone(tz: str) -> Any:
    """The ZoneInfo for `tz`, as a RosterError when the zone is unknown."""
    try:
        return check_timezone(tz)
    except ValueError as e:
        raise RosterError(str(e)) from e


def add_person(db: Session, email: str, name: str | None, phone: str | None = None) -> Person:
    """Add a student; RosterError when the address is taken (in any spelling)."""
    address = normalise_address(email)
    check_length("the name", name, 300)
    check_length("the phone number", phone, 50)
    check_text("the name", name)
    check_text("the phone number", phone)
    if find_person(db, address) is not None:
        raise RosterError(f"{address} is already a person; nothing changed")
    person = Person(email=address, name=name, phone=phone)
    db.add(person)
    db.flush()
    return person


@dataclass(frozen=True)
class SessionFields:
    """What an administrator can set on a session; None means "leave as it is"."""

    title: str | None = None
    start: str | None = None
    end: str | None = None
    tz: str | None = None
    location: str | None = None
    capacity: int | None = None
    course: str | None = None
    description: str | None = None
    # When the daemon invites the enrolled students ("" clears it).
    invite_at: str | None = None
    # Which of two identical wall-clock times (the clocks go back) start or end means.
    fold: int | None = None


def check_length(what: str, value: str | None, limit: int) -> None:
    """RosterError when a text is longer than the store keeps."""
    if value is not None and len(value) > limit:
        raise RosterError(f"{what} is too long ({len(value)} characters; at most {limit})")


def check_text(what: str, value: str | None, *, single: bool = False) -> None:
    """RosterError for control characters in a text other than tabs and line breaks (none
    at all in a `single` word like a key): they break calendar data and terminals."""
    if value is None:
        return
    found = re.search(r"[\x00-\x1f\x7f]", value) if single else _CONTROL.search(value)
    if found:
        raise RosterError(
            f"{what} contains a control character (U+{ord(found.group()):04X}); remove it"
        )


def check_capacity(capacity: int | None) -> None:
    """RosterError unless `capacity` is None or between 0 and CAPACITY_MAX."""
    if capacity is not None and not 0 <= capacity <= CAPACITY_MAX:
        raise RosterError(f"capacity must be between 0 and {CAPACITY_MAX:,} seats (got {capacity})")


def add_session(db: Session, key: str, fields: SessionFields, default_tz: str) -> TrainingSession:
    """Create a session; RosterError on a taken key, bad times, bad zone or capacity."""
    key = key.strip()
    if not key:
        raise RosterError("a session key must not be empty")
    check_length("the session key", key, 200)
    check_text("the session key", key, single=True)
    if db.query(TrainingSession.id).filter_by(key=key).first() is not None:
        raise RosterError(f"session {key!r} already exists; change it with: tmcaldav session edit")
    if not fields.title or fields.start is None or fields.end is None:
        raise RosterError("a session needs --title, --start and --end")
    session = TrainingSession(key=key, title=fields.title, tz=fields.tz or default_tz)
    _apply_fields(session, fields)
    db.add(session)
    db.flush()
    return session


# The session's columns an edit can change.
EDITABLE = (
    "title",
    "location",
    "description",
    "start_at",
    "end_at",
    "tz",
    "capacity",
    "course",
    "invite_at",
)


def edit_session(db: Session, key: str, fields: SessionFields) -> set[str]:
    """Change a session; returns the names of the columns that really changed."""
    session = get_session(db, key)
    before = {c: getattr(session, c) for c in EDITABLE}
    _apply_fields(session, fields)
    changed = {c for c, old in before.items() if getattr(session, c) != old}
    db.flush()
    return changed


def _apply_fields(session: TrainingSession, fields: SessionFields) -> None:
    # Every check comes before the first change: a refused edit changes nothing.
    tz = fields.tz if fields.tz is not None else session.tz
    new_zone = zone(tz)
    for what, value, limit in (
        ("the title", fields.title, 500),
        ("the location", fields.location, 500),
        ("the course", fields.course, 200),
    ):
        check_length(what, value, limit)
        check_text(what, value)
    check_text("the description", fields.description)
    check_capacity(fields.capacity)
    if fields.fold not in (None, 0, 1):
        raise RosterError(f"--fold must be 0 or 1 (got {fields.fold})")
    if fields.title is not None and not fields.title.strip():
        raise RosterError("the title must not be empty")
    start, end = session.start_at, session.end_at
    if fields.tz is not None and start is not None and end is not None and session.tz:
        # A new zone alone keeps the wall-clock times: "09:00, but in London" moves
        # the session (a reschedule) unless both zones agree on that day.
        old_zone = zone(session.tz)
        start, end = (
            wall_time(
                at.astimezone(old_zone).replace(tzinfo=None),
                new_zone,
                tz,
                fold=fields.fold,
                what=what,
            )
            for at, what in ((start, "start"), (end, "end"))
        )
    if fields.start is not None:
        start = parse_time(fields.start, tz, fold=fields.fold, what="start")
    if fields.end is not None:
        end = parse_time(fields.end, tz, fold=fields.fold, what="end")
    # Compared as instants: two times in one zone compare by the wall clock otherwise.
    if end.astimezone(UTC) <= start.astimezone(UTC):
        raise RosterError(
            f"the end ({end.isoformat()}) must be after the start ({start.isoformat()})"
        )
    if fields.title is not None:
        session.title = fields.title
    session.start_at, session.end_at, session.tz = start, end, tz
    if fields.invite_at is not None:
        session.invite_at = parse_time(fields.invite_at, tz) if fields.invite_at.strip() else None
    for name in ("location", "capacity", "course", "description"):
        value = getattr(fields, name)
        if value is not None:
            # An empty string clears an optional text field.
            setattr(session, name, None if value == "" else value)


def seats_taken(session: TrainingSession) -> int:
    """How many enrollments hold a seat."""
    return sum(1 for e in session.enrollments if e.status in SEAT_STATUSES)


def enroll(db: Session, key: str, emails: list[str], *, waitlist: bool = False) -> list[Enrollment]:
    """Enroll (or waitlist) people; all or nothing."""
    session = get_session(db, key)
    people = [get_person(db, normalise_address(e)) for e in emails]
    seen: set[int] = set()
    for person in people:
        if person.id in seen:
            raise RosterError(f"{person.email} is named twice; nothing changed")
        seen.add(person.id)
        for e in session.enrollments:
            if e.person_id == person.id:
                raise RosterError(
                    f"{person.email} is already in session {key} ({e.status}); "
                    f"change it with: tmcaldav set-status {key} {person.email} STATUS"
                )
    if session.status == "cancelled":
        raise RosterError(f"session {key} is cancelled; nothing changed")
    if not waitlist and session.capacity is not None:
        free = session.capacity - seats_taken(session)
        if len(people) > free:
            raise RosterError(
                f"session {key} has {plural(max(free, 0), 'free seat')} of {session.capacity}; "
                f"enroll fewer, raise --capacity, or add them with --waitlist"
            )
    now = utcnow()
    created = []
    for person in people:
        enrollment = Enrollment(
            person=person,
            status="waitlisted" if waitlist else "enrolled",
            waitlisted_at=now if waitlist else None,
        )
        session.enrollments.append(enrollment)
        created.append(enrollment)
    db.flush()
    return created


def set_status(
    db: Session, key: str, email: str, status: str, note: str | None = None
) -> tuple[Enrollment, str]:
    """Set an enrollment's status; returns it and its old status."""
    if status not in ENROLLMENT_STATUSES:
        raise RosterError(
            f"unknown status {status!r}; use one of: {', '.join(ENROLLMENT_STATUSES)}"
        )
    session = get_session(db, key)
    enrollment = get_enrollment(db, session, email)
    old = enrollment.status
    if note:
        check_note(note)
    if status == "waitlisted" and old != "waitlisted":
        enrollment.waitlisted_at = utcnow()
    enrollment.status = status
    if note:
        add_note(db, enrollment, note)
    db.flush()
    return enrollment, old


def check_note(text: str) -> None:
    """RosterError for a note an administrator may not keep: empty or too long."""
    if not text.strip():
        raise RosterError("a note must not be empty")
    check_length("the note", text, NOTE_MAX)


def note(db: Session, key: str, email: str, text: str, *, author: str | None = None) -> None:
    """Add a follow-up note to an enrollment (`author`: who wrote it, e.g. a web user;
    control characters are kept, and shown escaped)."""
    check_note(text)
    session = get_session(db, key)
    add_note(db, get_enrollment(db, session, email), text, author=author)


# What an imported history row may say: the outcome, and the answer given before.
OUTCOMES = (EnrollmentStatus.ATTENDED, EnrollmentStatus.NO_SHOW, EnrollmentStatus.CANCELLED)
IMPORTED_ANSWERS = (
    CalendarStatus.ACCEPTED,
    CalendarStatus.TENTATIVE,
    CalendarStatus.DECLINED,
    CalendarStatus.INVITED,
)


def import_outcome(
    db: Session,
    key: str,
    email: str,
    status: str,
    calendar: str | None,
    responded_at: datetime | None,
) -> Enrollment:
    """Record how an ended session went for a student, from another system's history:
    the outcome (`status`) and the answer they had given (`calendar`, source `import`)."""
    if status not in OUTCOMES:
        raise RosterError(
            f"status {status!r} with a calendar answer: a history row takes "
            f"{', '.join(OUTCOMES)} (or leave calendar and responded_at empty to enroll)"
        )
    if calendar is not None and calendar not in IMPORTED_ANSWERS:
        raise RosterError(
            f"calendar must be one of {', '.join(IMPORTED_ANSWERS)}, not {calendar!r}"
        )
    session = get_session(db, key)
    now = utcnow()
    if session.end_at > now:
        raise RosterError(
            f"session {key} has not ended ({session.end_at.isoformat()}); an outcome can "
            "only be imported for a session that is over"
        )
    if responded_at is not None and responded_at > session.end_at:
        raise RosterError(f"responded_at {responded_at.isoformat()} is after the session ended")
    person = get_person(db, normalise_address(email))
    if any(e.person_id == person.id for e in session.enrollments):
        raise RosterError(f"{person.email} is already in session {key}; nothing changed")
    answer = calendar or CalendarStatus.INVITED
    enrollment = Enrollment(
        person=person,
        status=status,
        calendar_status=answer,
        invited_at=session.start_at if calendar else None,
        responded_at=responded_at if answer in ANSWERS else None,
    )
    session.enrollments.append(enrollment)
    if calendar is not None:
        enrollment.responses.append(
            Response(
                calendar_status=answer,
                responded_at=responded_at or session.start_at,
                observed_at=now,
                source=ResponseSource.IMPORT,
            )
        )
    db.flush()
    return enrollment


# ---- people: corrections and removal -------------------------------------------------------


def edit_person(
    db: Session,
    email: str,
    *,
    name: str | None = None,
    phone: str | None = None,
    new_email: str | None = None,
) -> tuple[Person, str]:
    """Change a person's name, phone or address; returns them and their old address.

    The person keeps their enrollments and every answer: only the address changes.
    RosterError when the new address is taken (in any spelling) or a text is too long;
    an empty --phone clears it.
    """
    person = get_person(db, normalise_address(email))
    old = person.email
    check_length("the name", name, 300)
    check_length("the phone number", phone, 50)
    if name is not None:
        if not name.strip():
            raise RosterError("the name must not be empty")
        person.name = name
    if phone is not None:
        person.phone = phone or None
    if new_email is not None:
        address = normalise_address(new_email)
        if address != old:
            taken = find_person(db, address)
            if taken is not None:
                who = f" ({taken.name})" if taken.name else ""
                raise RosterError(
                    f"{address} is already a person{who}; nothing changed "
                    f"(remove one of them first: tmcaldav person remove EMAIL)"
                )
            person.email = address
    db.flush()
    return person, old


def upcoming(enrollment: Enrollment, now: datetime) -> bool:
    """True when the enrollment's session is scheduled and not over yet."""
    session = enrollment.session
    return session.status == "scheduled" and session.end_at > now


def live_enrollments(person: Person, now: datetime) -> list[Enrollment]:
    """The person's enrollments that still count: upcoming sessions, not cancelled."""
    return [e for e in person.enrollments if e.status != "cancelled" and upcoming(e, now)]


def remove_person(db: Session, email: str, now: datetime) -> tuple[int, int]:
    """Delete a person with their enrollments and answers; returns how many of each.

    RosterError while they are enrolled (or waitlisted) in an upcoming session: cancel
    those first (`person remove --cancel-enrollments` does).
    """
    person = get_person(db, normalise_address(email))
    live = live_enrollments(person, now)
    if live:
        keys = ", ".join(sorted(e.session.key for e in live))
        raise RosterError(
            f"{person.email} is still in upcoming sessions: {keys}; nothing changed. "
            f"Cancel those first, or run: tmcaldav person remove {person.email} "
            "--cancel-enrollments"
        )
    enrollments = list(person.enrollments)
    answers = sum(len(e.responses) for e in enrollments)
    for enrollment in enrollments:
        db.delete(enrollment)
    db.flush()
    db.delete(person)
    db.flush()
    return len(enrollments), answers


# ---- sessions: deletion ------------------------------------------------------------------


def check_deletable(session: TrainingSession) -> None:
    """RosterError unless the session may be deleted: never published or cancelled, and
    without attendance records (they feed the no-show report)."""
    key = session.key
    if session.status != "cancelled" and session.calendar_state != "unpublished":
        raise RosterError(
            f"session {key} is published; cancel it first: tmcaldav session cancel {key}"
        )
    recorded = [e for e in session.enrollments if e.status in ("attended", "no_show")]
    if recorded:
        raise RosterError(
            f"session {key} has attendance records for {plural(len(recorded), 'student')} "
            "(they feed the no-show report); it is kept"
        )


def delete_session(db: Session, key: str) -> int:
    """Delete a session with its enrollments, answers, notes, suggestions and pending
    hooks (the database cascades them); returns how many enrollments went with it."""
    session = get_session(db, key)
    check_deletable(session)
    count = len(session.enrollments)
    db.delete(session)
    db.flush()
    return count
