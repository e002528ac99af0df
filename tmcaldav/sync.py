"""One poll: the server's changes → a pure diff against the store → one transaction.

`diff` is a pure function from the store's view of the published sessions and the
events the server changed to a `Diff`: answers that changed, attendees nobody
enrolled, sessions whose event is gone. `Poller.poll` fetches the changes, runs the
diff and applies it in one transaction together with the outbox rows for the hooks
and the new sync token, so a crash before the commit replays the same poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from tmcaldav import ical
from tmcaldav.caldav import (
    CalendarError,
    CalendarService,
    Changes,
    InvalidSyncToken,
    NotFound,
    StoredEvent,
    Unreadable,
)
from tmcaldav.config import Config
from tmcaldav.domain import (
    ANSWERS,
    MAX_CLOCK_SKEW,
    NOTE_MAX,
    AnswerEvidence,
    clip,
    normalise_address,
)
from tmcaldav.errors import TmcaldavError
from tmcaldav.hooks.outbox import ResponseEvent, to_row
from tmcaldav.imip import message as imip
from tmcaldav.logs import few
from tmcaldav.store import Store
from tmcaldav.store.model import (
    Enrollment,
    Note,
    Person,
    Response,
    ScheduleCheck,
    SyncRetry,
    SyncState,
    TrainingSession,
    utcnow,
)
from tmcaldav.words import plural

log = logging.getLogger(__name__)

#: The author of notes that are a student's own words, read from the server's copy.
NOTE_AUTHOR = "calendar"

# ---- the store's view, detached ----------------------------------------------------------


@dataclass(frozen=True)
class KnownEnrollment:
    """An enrollment as the diff needs it."""

    id: int
    email: str
    status: str
    calendar_status: str
    answer_sequence: int | None
    answer_dtstamp: datetime | None
    # Set while the answer shown was recorded by hand: what the server still holds.
    calendar_seen: str | None = None
    # The SCHEDULE-STATUS last recorded (server mode), as the server wrote it.
    schedule_status: str | None = None

    @property
    def on_server(self) -> str:
        """The calendar status the server holds for the student, as last seen."""
        return self.calendar_seen if self.calendar_seen is not None else self.calendar_status


@dataclass(frozen=True)
class KnownSession:
    """A published session as the diff needs it."""

    id: int
    key: str
    uid: str
    href: str | None
    etag: str | None
    sequence: int
    calendar_state: str
    enrollments: Mapping[str, KnownEnrollment]


@dataclass(frozen=True)
class KnownRetry:
    """An object in the retry list, as the poll needs it."""

    id: int
    href: str
    first_seen_at: datetime
    attempts: int


@dataclass(frozen=True)
class ServerEvent:
    """A changed event as read from the server; `state` is None for our own write
    (recognised by its ETag, so not parsed)."""

    href: str
    etag: str
    state: ical.EventState | None


# ---- the diff's results ----------------------------------------------------------------


@dataclass(frozen=True)
class AnswerChange:
    """One enrollment's calendar status changed on the server."""

    enrollment_id: int
    session_key: str
    email: str
    old: str
    new: str
    sequence: int
    dtstamp: datetime | None
    enrollment_status: str
    # "rescheduled" when the server reset the answer with a new SEQUENCE.
    reason: str | None = None
    # Where `dtstamp` comes from (AnswerEvidence); None: the apply step decides.
    evidence: str | None = None
    # The server's copy already shows a later state (a REPLY read after the student
    # answered again, or after a reschedule): kept in the history only.
    superseded: bool = False

    @classmethod
    def of(
        cls,
        enrollment: Enrollment,
        new: str,
        sequence: int,
        dtstamp: datetime | None,
        *,
        session_key: str,
        email: str,
        evidence: str | None = None,
    ) -> AnswerChange:
        """`enrollment`'s answer becoming `new` (what it shows now is the `old` one)."""
        return cls(
            enrollment.id,
            session_key,
            email,
            old=enrollment.calendar_status,
            new=new,
            sequence=sequence,
            dtstamp=dtstamp,
            enrollment_status=enrollment.status,
            evidence=evidence,
        )

    @property
    def fires_hooks(self) -> bool:
        """A reschedule reset is the organizer's doing, not an answer: no hooks."""
        return self.reason != "rescheduled"


@dataclass(frozen=True)
class Stranger:
    """An attendee on the server whom nobody enrolled (another client, a delegate)."""

    session_key: str
    email: str
    calendar_status: str


@dataclass(frozen=True)
class StudentNote:
    """A student's own words found on their ATTENDEE line (X-RESPONSE-COMMENT)."""

    enrollment_id: int
    session_key: str
    email: str
    text: str


@dataclass(frozen=True)
class ScheduleChange:
    """The server's SCHEDULE-STATUS for a student differs from the one recorded."""

    enrollment_id: int
    session_key: str
    email: str
    schedule_status: str
    sequence: int


@dataclass
class Diff:
    """Everything one poll found."""

    answers: list[AnswerChange] = field(default_factory=list)
    notes: list[StudentNote] = field(default_factory=list)
    schedule: list[ScheduleChange] = field(default_factory=list)
    strangers: list[Stranger] = field(default_factory=list)
    # session id -> (href, etag, server SEQUENCE) of the version now on the server
    seen: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    # Enrolled and invited, but not on the server's event any more.
    dropped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when nothing changed."""
        return not (self.answers or self.seen or self.missing)


def is_newer(
    candidate: tuple[int, datetime | None], current: tuple[int | None, datetime | None]
) -> bool:
    """iTIP order: a higher SEQUENCE wins, then a later DTSTAMP, then the later observation.

    `candidate` was observed after `current`, so a tie goes to the candidate.
    """
    seq, stamp = candidate
    cur_seq, cur_stamp = current
    if cur_seq is not None and seq != cur_seq:
        return seq > cur_seq
    if stamp is not None and cur_stamp is not None and stamp != cur_stamp:
        return stamp > cur_stamp
    return True


def diff(
    sessions: Iterable[KnownSession],
    changed: Iterable[ServerEvent],
    deleted: Iterable[str],
    *,
    full: bool,
    organizer: str,
    now: datetime | None = None,
) -> Diff:
    """The store's sessions + the server's changed and deleted events → a Diff (pure).

    With `full`, `changed` is the whole calendar: a published session not in it is gone.
    An answer's time is the best evidence the event holds: the server's own answer time
    (`AttendeeState.answered_at`), else a reply time the student's client wrote; one
    more than a few minutes after `now` counts as `now`.
    """
    sessions = list(sessions)
    by_href = {s.href: s for s in sessions if s.href}
    by_uid = {s.uid: s for s in sessions}
    result = Diff()
    present: set[int] = set()
    for event in changed:
        session = by_href.get(event.href)
        if session is None and event.state is not None:
            session = by_uid.get(event.state.uid)
        if session is None:
            continue  # not one of ours (another event in the calendar)
        present.add(session.id)
        if event.state is None:
            continue  # our own write: nothing new in it
        result.seen[session.id] = (event.href, event.etag, event.state.sequence)
        _diff_attendees(session, event.state, organizer, result, now)
    gone = set(deleted)
    for session in by_href.values():
        lost = session.href in gone or (full and session.id not in present)
        if lost and session.id not in present and session.calendar_state != "missing":
            result.missing.append(session.id)
            result.missing_keys.append(session.key)
    return result


def answer_time(attendee: ical.AttendeeState, now: datetime | None) -> tuple[datetime | None, str]:
    """The most direct evidence of when an attendee answered, and which evidence it is.

    The server's answer time (Cyrus: X-DTSTAMP) first, then a reply time written by the
    student's client (Outlook), else none (the apply step takes the observation time).
    A time further ahead of `now` than the allowed clock skew counts as `now`.
    """
    if attendee.answered_at is not None:
        stamp, evidence = attendee.answered_at, AnswerEvidence.SERVER_DTSTAMP
    elif attendee.reply_time is not None:
        stamp, evidence = attendee.reply_time, AnswerEvidence.REPLY_DTSTAMP
    else:
        return None, AnswerEvidence.OBSERVED
    if now is not None and stamp > now + MAX_CLOCK_SKEW:
        stamp = now
    return stamp, evidence


def _diff_attendees(
    session: KnownSession,
    event: ical.EventState,
    organizer: str,
    result: Diff,
    now: datetime | None,
) -> None:
    for email, attendee in event.attendees.items():
        enrollment = session.enrollments.get(email)
        if enrollment is None:
            if email != organizer:
                result.strangers.append(Stranger(session.key, email, attendee.calendar_status))
            continue
        if attendee.comment:
            result.notes.append(StudentNote(enrollment.id, session.key, email, attendee.comment))
        if (
            attendee.schedule_status is not None
            and attendee.schedule_status != enrollment.schedule_status
        ):
            # Only a status that is there counts: Cyrus removes it when a student answers.
            result.schedule.append(
                ScheduleChange(
                    enrollment.id, session.key, email, attendee.schedule_status, event.sequence
                )
            )
        new = attendee.calendar_status
        # Compared with what the server held before, not with an answer recorded by hand:
        # the server's unchanged copy is not the student's news, and must not overwrite it.
        if new == enrollment.on_server:
            continue
        reset = (
            new == "invited"
            and enrollment.answer_sequence is not None
            and event.sequence > enrollment.answer_sequence
        )
        stamp, evidence = answer_time(attendee, now)
        if not is_newer(
            (event.sequence, stamp),
            (enrollment.answer_sequence, enrollment.answer_dtstamp),
        ):
            continue
        result.answers.append(
            AnswerChange(
                enrollment_id=enrollment.id,
                session_key=session.key,
                email=email,
                old=enrollment.calendar_status,
                new=new,
                sequence=event.sequence,
                dtstamp=stamp,
                enrollment_status=enrollment.status,
                reason="rescheduled" if reset else None,
                evidence=evidence,
            )
        )
    for email, enrollment in session.enrollments.items():
        if (
            email not in event.attendees
            and enrollment.calendar_status != "not_invited"
            and enrollment.status != "cancelled"
        ):
            result.dropped.append((session.key, email))


# ---- applying ----------------------------------------------------------------------------


def apply_answers(
    db: Session,
    answers: Iterable[AnswerChange],
    *,
    source: str,
    observed_at: datetime,
    responded_at: Mapping[int, datetime] | None = None,
    on_server: bool | None = None,
) -> int:
    """Record answers: history rows, the enrollment's latest answer, one outbox row each.

    The one apply step for the poll, the iMIP path and answers recorded by hand.
    `responded_at` gives, per enrollment id, the answer's own time (a REPLY's DTSTAMP);
    else the change's DTSTAMP, else the observation time. Each history row records which
    (`evidence`). An answer older in iTIP order than the one shown goes into the history
    only. An answer the enrollment already shows, at the same SEQUENCE and DTSTAMP, is
    the same answer seen twice (two pollers, a poll and a REPLY racing): it is skipped,
    so its hooks fire once. A calendar answer that only confirms the answer shown (the
    student accepts in the calendar what they said on the phone) is recorded but fires
    no hooks: nothing changed.

    A change that is the answer shown, at its SEQUENCE, but with the time the shown
    answer lacked (the REPLY in the scheduling inbox of a server that keeps no answer
    time) dates that answer instead: its history row and the enrollment get the change's
    time and evidence. A `superseded` change goes into the history only.

    `on_server` (default: every source but `manual`) says whether the answer is in the
    server's copy. One that is not (recorded by hand) keeps, in `calendar_seen`, what
    the server still holds, so the poll does not take that for news; the next answer
    from the calendar clears it.
    """
    if on_server is None:
        on_server = source != "manual"
    answers = list(answers)
    if not answers:
        return 0
    # One query for all the enrollments, locked against a concurrent apply (SQLite's
    # transaction already holds the write lock), and no flush until the commit.
    enrollments = {
        e.id: e
        for e in db.scalars(
            select(Enrollment)
            .where(Enrollment.id.in_([a.enrollment_id for a in answers]))
            .with_for_update(of=Enrollment)
        )
    }
    count = 0
    for change in answers:
        enrollment = enrollments.get(change.enrollment_id)
        if enrollment is None:
            continue
        if (enrollment.calendar_status, enrollment.answer_sequence, enrollment.answer_dtstamp) == (
            change.new,
            change.sequence,
            change.dtstamp,
        ):
            continue
        if on_server and _dates_shown_answer(db, enrollment, change):
            continue
        old = enrollment.calendar_status
        when = (responded_at or {}).get(change.enrollment_id) or change.dtstamp or observed_at
        evidence = AnswerEvidence.OBSERVED if when is observed_at else change.evidence
        db.add(
            Response(
                enrollment_id=enrollment.id,
                calendar_status=change.new,
                responded_at=when,
                observed_at=observed_at,
                sequence=change.sequence,
                dtstamp=change.dtstamp,
                source=source,
                reason=change.reason,
                evidence=evidence,
            )
        )
        count += 1
        if change.superseded or not is_newer(
            (change.sequence, change.dtstamp),
            (enrollment.answer_sequence, enrollment.answer_dtstamp),
        ):
            continue
        if on_server:
            enrollment.calendar_seen = None
        elif enrollment.calendar_seen is None:
            enrollment.calendar_seen = old
        enrollment.calendar_status = change.new
        enrollment.calendar_reason = change.reason
        enrollment.responded_at = when if change.new in ANSWERS else None
        enrollment.answer_sequence = change.sequence
        enrollment.answer_dtstamp = change.dtstamp
        if change.fires_hooks and old != change.new:
            event = ResponseEvent(
                session=change.session_key,
                email=change.email,
                old=old,
                new=change.new,
                responded_at=when,
                sequence=change.sequence,
                source=source,
                enrollment_status=change.enrollment_status,
            )
            db.add(to_row(event, session_id=enrollment.session_id, enrollment_id=enrollment.id))
    return count


def _dates_shown_answer(db: Session, enrollment: Enrollment, change: AnswerChange) -> bool:
    """Give the answer shown its own time, when `change` is that answer with a time.

    An answer read from a server that keeps no answer time (Xandikos) was dated when it
    was seen; the student's REPLY, read later, is the same answer (same status and
    SEQUENCE) with its real time. That time replaces the observed one in the answer's
    history row and on the enrollment: one answer, one row, no hooks. True when done.
    """
    if (
        change.dtstamp is None
        or enrollment.answer_dtstamp is not None
        or enrollment.responded_at is None
        or enrollment.calendar_seen is not None
        or (enrollment.calendar_status, enrollment.answer_sequence)
        != (change.new, change.sequence)
    ):
        return False
    row = db.scalars(
        select(Response)
        .where(
            Response.enrollment_id == enrollment.id,
            Response.calendar_status == change.new,
            Response.sequence == change.sequence,
            Response.dtstamp.is_(None),
        )
        .order_by(Response.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return False
    row.responded_at = enrollment.responded_at = change.dtstamp
    row.dtstamp = enrollment.answer_dtstamp = change.dtstamp
    row.evidence = change.evidence
    return True


# ---- the poll ------------------------------------------------------------------------------


class EmptyCalendar(TmcaldavError):
    """The calendar lists none of the events it had: refused until an administrator agrees."""


@dataclass(frozen=True)
class PollResult:
    """What one poll did, for the one-line summary and the daemon's status."""

    sessions: int
    changed_events: int
    answers: int
    strangers: list[Stranger]
    missing: list[str]
    skipped: list[str]
    full: bool
    seconds: float
    # Sessions' objects that could not be read: kept in the retry list for the next polls.
    retrying: list[str] = field(default_factory=list)
    # What reading the scheduling inbox did (server mode); None when it was not read.
    inbox: InboxResult | None = None

    def summary(self) -> str:
        """One line for people and for systemd's STATUS=."""
        text = (
            f"checked {plural(self.sessions, 'session')}, {self.changed_events} changed on "
            f"the server, {plural(self.answers, 'answer')} recorded in {self.seconds:.2f} s"
        )
        if self.full:
            text += " (read the whole calendar again)"
        if self.missing:
            text += f"; events missing for {', '.join(self.missing)}"
        if self.skipped:
            text += f"; {plural(len(self.skipped), 'unreadable event')} skipped"
            if self.retrying:
                text += f" ({len(self.retrying)} of ours read again next poll)"
        if self.inbox is not None and self.inbox.replies:
            text += f"; {plural(self.inbox.replies, 'reply', 'replies')} read from the inbox"
        if self.inbox is not None and self.inbox.left:
            text += (
                f"; {plural(len(self.inbox.left), 'reply', 'replies')} left in the inbox "
                "(see the log)"
            )
        return text


def load_sessions(
    db: Session, *, hrefs: Iterable[str] = (), uids: Iterable[str] = (), every: bool = False
) -> dict[int, KnownSession]:
    """Published sessions (all, or those at `hrefs` or with `uids`), without enrollments.

    Plain column reads, not ORM objects: a poll must not load the whole store.
    """
    columns = (
        TrainingSession.id,
        TrainingSession.key,
        TrainingSession.uid,
        TrainingSession.href,
        TrainingSession.etag,
        TrainingSession.sequence,
        TrainingSession.calendar_state,
    )
    stmt = select(*columns).where(TrainingSession.uid.is_not(None))
    if not every:
        hrefs, uids = list(hrefs), list(uids)
        if not hrefs and not uids:
            return {}
        stmt = stmt.where(TrainingSession.href.in_(hrefs) | TrainingSession.uid.in_(uids))
    return {
        row.id: KnownSession(
            row.id,
            row.key,
            row.uid or "",
            row.href,
            row.etag,
            row.sequence,
            row.calendar_state,
            {},
        )
        for row in db.execute(stmt)
    }


def with_enrollments(db: Session, sessions: Iterable[KnownSession]) -> list[KnownSession]:
    """The same sessions with their enrollments, read in one query."""
    sessions = list(sessions)
    by_session: dict[int, dict[str, KnownEnrollment]] = {s.id: {} for s in sessions}
    if by_session:
        rows = db.execute(
            select(
                Enrollment.session_id,
                Enrollment.id,
                Person.email,
                Enrollment.status,
                Enrollment.calendar_status,
                Enrollment.answer_sequence,
                Enrollment.answer_dtstamp,
                Enrollment.calendar_seen,
                Enrollment.schedule_status,
            )
            .join(Person, Person.id == Enrollment.person_id)
            .where(Enrollment.session_id.in_(list(by_session)))
        )
        # Plain tuples: a full resync reads every enrollment, and named access on
        # each row costs more than the query.
        for row in rows:
            session_id, enrollment_id, email, status, calendar, sequence, stamp, seen, sched = row
            by_session[session_id][email] = KnownEnrollment(
                enrollment_id, email, status, calendar, sequence, stamp, seen, sched
            )
    return [replace(s, enrollments=by_session[s.id]) for s in sessions]


def state_key(config: Config) -> str:
    """The key of a configuration's sync state: which server, account and calendar.

    It is known before connecting, so the daemon's backoff can be read while the
    server is down; a new server, user or calendar starts with a full sync.
    """
    caldav = config.caldav
    if caldav is None:
        return "unconfigured"
    return f"{caldav.url}|{caldav.username}|{caldav.calendar or ''}"


def load_state(db: Session, key: str) -> SyncState:
    """The sync state row for `key`, created when missing."""
    state = db.scalars(select(SyncState).where(SyncState.calendar_url == key)).one_or_none()
    if state is None:
        state = SyncState(calendar_url=key)
        db.add(state)
        db.flush()
    return state


class Poller:
    """Polls one calendar into one store.

    With `read_inbox`, each poll also reads the REPLYs a scheduling server left in the
    organizer's scheduling inbox (see `read_inbox`).
    """

    def __init__(
        self,
        store: Store,
        calendar: CalendarService,
        organizer: str,
        key: str | None = None,
        *,
        read_inbox: bool = False,
    ):
        self.store = store
        self.calendar = calendar
        self.organizer = normalise_address(organizer)
        self.key = key or calendar.url
        self.reads_inbox = read_inbox and calendar.schedules
        # Inbox objects not applied, by href: (ETag, why; None: not a REPLY). Read again
        # only when their ETag changes, and logged once.
        self._left: dict[str, tuple[str, str | None]] = {}
        self._inbox_failure: str | None = None

    @classmethod
    def for_config(cls, config: Config, store: Store, calendar: CalendarService) -> Poller:
        """The poller the CLI and the daemon use for a configuration."""
        return cls(
            store,
            calendar,
            config.scheduling.organizer_email,
            state_key(config),
            read_inbox=config.scheduling.mode == "server"
            and config.caldav is not None
            and config.caldav.read_schedule_inbox,
        )

    def _state(self, db: Session) -> SyncState:
        return load_state(db, self.key)

    def _fetch(self, token: str | None, ctag: str | None) -> tuple[Changes, str | None]:
        if not self.calendar.supports_sync:
            with self.store.scratch() as db:
                listing = {
                    row.href: row.etag or ""
                    for row in db.execute(
                        select(TrainingSession.href, TrainingSession.etag).where(
                            TrainingSession.href.is_not(None)
                        )
                    )
                }
            new_ctag, changes = self.calendar.changes_by_listing(listing, ctag)
            return changes, new_ctag
        try:
            return self.calendar.changes_since(token), ctag
        except InvalidSyncToken:
            log.info(
                "the sync token for %s is no longer valid; doing a full resync", self.calendar.url
            )
            return self.calendar.changes_since(None), ctag

    def poll(self, *, accept_empty: bool = False) -> PollResult:
        """One poll: the calendar's changes, then (with `read_inbox`) the REPLYs in the
        organizer's scheduling inbox, so that an answer and its REPLY meet in one poll."""
        started = time.perf_counter()
        result = self._poll_calendar(accept_empty=accept_empty)
        if not self.reads_inbox:
            return result
        inbox = self.read_inbox()
        return replace(
            result,
            answers=result.answers + inbox.answers,
            inbox=inbox,
            seconds=time.perf_counter() - started,
        )

    def read_inbox(self) -> InboxResult:
        """Apply the REPLYs in the organizer's scheduling inbox, then delete them there.

        A scheduling server applies each student's answer to the organizer's copy, but
        keeps the REPLY's DTSTAMP (Xandikos' only answer time) and the student's comment
        only in the REPLY it leaves in the organizer's inbox (docs/servers.md). RFC 6638
        leaves processed inbox objects to the client: an applied REPLY is deleted, so
        the inbox stays small and an idle poll costs one PROPFIND. What cannot be applied
        (an unknown UID, a stranger, malformed iCalendar) is left there, logged once, and
        not read again until it changes; objects that are no REPLY are left alone.
        An inbox that cannot be read (or its REPLYs stored) is logged, and the calendar's
        poll stands.
        """
        try:
            result = self._read_inbox()
        except TmcaldavError as e:  # the server, the store, a password command
            if str(e) != self._inbox_failure:
                log.warning(
                    "could not read the scheduling inbox (%s); answers still come from the "
                    "events, and the inbox is tried again every poll",
                    e,
                )
            self._inbox_failure = str(e)
            return InboxResult(left=self._left_reasons())
        self._inbox_failure = None
        return result

    def _read_inbox(self) -> InboxResult:
        listing = self.calendar.inbox_listing()
        self._left = {h: v for h, v in self._left.items() if listing.get(h) == v[0]}
        wanted = [h for h in listing if h not in self._left]
        fetched = self.calendar.read_inbox(wanted)
        now = utcnow()
        replies: list[tuple[StoredEvent, imip.Reply]] = []
        with self.store.scratch() as db:
            # Only what was asked for: a server's answer names nothing else to delete.
            for stored in (e for e in fetched.events if e.href in listing):
                verdict = inbox_reply(db, stored.body, self.organizer, now)
                if isinstance(verdict, imip.Reply):
                    replies.append((stored, verdict))
                else:
                    self._leave(stored.href, stored.etag, verdict)
        for problem in fetched.unreadable:
            self._leave(problem.href, listing.get(problem.href, ""), problem.reason)
        answers = notes = 0
        if replies:
            with self.store.transaction() as db:
                answers, notes = apply_inbox_replies(db, [r for _, r in replies], now)
            for stored, _ in replies:
                self._remove(stored)
        return InboxResult(len(replies), answers, notes, self._left_reasons())

    def _leave(self, href: str, etag: str, reason: str | None) -> None:
        self._left[href] = (etag, reason)
        if reason is None:
            log.debug("%s in the scheduling inbox is no REPLY; left there", href)
        else:
            log.warning("left %s in the scheduling inbox: %s", href, reason)

    def _left_reasons(self) -> tuple[str, ...]:
        return tuple(f"{h} ({why})" for h, (_, why) in sorted(self._left.items()) if why)

    def _remove(self, stored: StoredEvent) -> None:
        """Delete an applied REPLY. One the server will not delete is left like the
        REPLYs that cannot be applied: reported once, not read again until it changes
        (reading it again would record nothing new, but would ask the server each poll)."""
        try:
            self.calendar.delete_from_inbox(stored.href, stored.etag)
        except NotFound:
            pass
        except CalendarError as e:
            self._leave(stored.href, stored.etag, f"applied, but not deleted: {e}")

    def _poll_calendar(self, *, accept_empty: bool) -> PollResult:
        """Fetch the changes (and what earlier polls could not read), diff, apply in one
        transaction with the new sync token and the retry list."""
        started = time.perf_counter()
        with self.store.scratch() as db:
            row = db.execute(
                select(SyncState.id, SyncState.sync_token, SyncState.ctag).where(
                    SyncState.calendar_url == self.key
                )
            ).one_or_none()
            published = (
                db.scalar(select(func.count()).where(TrainingSession.calendar_state == "published"))
                or 0
            )
            retries: dict[str, KnownRetry] = {}
            if row is not None:
                retries = {
                    r.href: KnownRetry(r.id, r.href, r.first_seen_at, r.attempts)
                    for r in db.execute(
                        select(
                            SyncRetry.id,
                            SyncRetry.href,
                            SyncRetry.first_seen_at,
                            SyncRetry.attempts,
                        ).where(SyncRetry.sync_state_id == row.id)
                    )
                }
        token, ctag = (row.sync_token, row.ctag) if row is not None else (None, None)
        changes, new_ctag = self._fetch(token, ctag)
        changes = self._with_retries(changes, retries)
        if (
            not retries
            and not changes.changed
            and not changes.deleted
            and not changes.unreadable
            and not changes.full
            and (changes.sync_token or None) == token
            and new_ctag == ctag
        ):
            # Nothing changed: no store write at all, so an idle poll costs one request.
            return PollResult(published, 0, 0, [], [], [], False, time.perf_counter() - started)
        unreadable = list(changes.unreadable)
        with self.store.scratch() as db:
            sessions = load_sessions(
                db,
                hrefs=[e.href for e in changes.changed]
                + list(changes.deleted)
                + [u.href for u in unreadable],
                every=changes.full,
            )
            events, failed = parse_events(
                changes.changed,
                sessions.values(),
                answer_time_param=self.calendar.profile.answer_time_param,
            )
            unreadable += failed
            known_hrefs = {s.href for s in sessions.values()}
            unknown_uids = {
                e.state.uid for e in events if e.state is not None and e.href not in known_hrefs
            }
            named = {u.href: uid for u in unreadable if (uid := _uid_in(changes, u.href))}
            unknown_uids |= {uid for href, uid in named.items() if href not in known_hrefs}
            if unknown_uids and not changes.full:
                sessions |= load_sessions(db, uids=unknown_uids)
            parsed_hrefs = {e.href for e in events if e.state is not None}
            parsed_uids = {e.state.uid for e in events if e.state is not None}
            known = [
                s
                for s in sessions.values()
                if s.href not in parsed_hrefs and s.uid not in parsed_uids
            ]
            known += with_enrollments(
                db, [s for s in sessions.values() if s.href in parsed_hrefs or s.uid in parsed_uids]
            )
        # Only our sessions' objects are read again: another client's broken object
        # would otherwise be fetched every poll for ever.
        session_hrefs = {s.href for s in sessions.values() if s.href}
        session_uids = {s.uid for s in sessions.values()}
        retry = [
            u
            for u in unreadable
            if u.href in session_hrefs or named.get(u.href) in session_uids
        ]
        retry_hrefs = {u.href for u in retry}
        now = utcnow()
        result = diff(
            known, events, changes.deleted, full=changes.full, organizer=self.organizer, now=now
        )
        # A session whose object could not be read is not gone.
        kept = {s.id for s in sessions.values() if s.href in retry_hrefs}
        result.missing_keys = [
            k for i, k in zip(result.missing, result.missing_keys, strict=True) if i not in kept
        ]
        result.missing = [i for i in result.missing if i not in kept]
        if published and len(result.missing) >= published and not accept_empty:
            raise EmptyCalendar(
                f"the calendar {self.calendar.url} no longer lists the sessions published "
                f"there ({plural(published, 'session')}); nothing was changed. If the URL, "
                "the calendar id and the account's permissions are right and the events "
                "really were deleted, run: tmcaldav sync --accept-empty"
            )
        # An answer that could only be read on a later poll is dated when it was first
        # seen changing (unless the server says when it was given).
        first_seen = {href: r.first_seen_at for href, r in retries.items()}
        key_href = {
            s.key: result.seen[s.id][0] for s in sessions.values() if s.id in result.seen
        }
        late = {
            a.enrollment_id: a.dtstamp or first_seen[key_href[a.session_key]]
            for a in result.answers
            if key_href.get(a.session_key) in first_seen
        }
        with self.store.transaction() as db:
            answers = apply_answers(
                db, result.answers, source="poll", observed_at=now, responded_at=late
            )
            _apply_sessions(db, result)
            add_student_notes(db, result.notes, now)
            _apply_schedule(db, result.schedule, now)
            state = self._state(db)
            state.sync_token = changes.sync_token or state.sync_token
            state.ctag = new_ctag
            state.last_poll_at = now
            _keep_retries(db, state, retries, retry, now)
        _report(result)
        _report_unreadable(retries, retry, unreadable, events, changes)
        return PollResult(
            sessions=published,
            changed_events=len(result.seen),
            answers=answers,
            strangers=result.strangers,
            missing=result.missing_keys,
            skipped=[u.href for u in unreadable],
            full=changes.full,
            seconds=time.perf_counter() - started,
            retrying=sorted(retry_hrefs),
        )

    def _with_retries(self, changes: Changes, retries: Mapping[str, KnownRetry]) -> Changes:
        """`changes` plus what the retry list holds, fetched again (one multiget)."""
        listed = (
            {e.href for e in changes.changed}
            | set(changes.deleted)
            | {u.href for u in changes.unreadable}
        )
        wanted = [href for href in retries if href not in listed]
        if not wanted:
            return changes
        fetched = self.calendar.fetch(wanted)
        return replace(
            changes,
            changed=changes.changed + fetched.events,
            deleted=tuple(sorted(set(changes.deleted) | fetched.gone)),
            unreadable=changes.unreadable + fetched.unreadable,
        )


# ---- the scheduling inbox (server mode) -------------------------------------------------


@dataclass(frozen=True)
class InboxResult:
    """What one read of the organizer's scheduling inbox did."""

    #: REPLYs applied (and deleted from the inbox).
    replies: int = 0
    #: History rows they added (answers, and older answers kept in the history only).
    answers: int = 0
    #: Students' comments kept as notes.
    notes: int = 0
    #: REPLYs left in the inbox, each "href (why)".
    left: tuple[str, ...] = ()


def reply_answer(reply: imip.Reply, enrollment: Enrollment) -> AnswerChange:
    """The answer a validated REPLY gives (mailed, or read from the scheduling inbox)."""
    return AnswerChange.of(
        enrollment,
        reply.calendar_status,
        reply.sequence,
        reply.dtstamp,
        session_key=reply.session_key,
        email=reply.email,
        # The REPLY's own DTSTAMP is the most direct evidence there is.
        evidence=AnswerEvidence.REPLY_DTSTAMP if reply.dtstamp else AnswerEvidence.OBSERVED,
    )


def inbox_reply(db: Session, body: str, organizer: str, now: datetime) -> imip.Reply | str | None:
    """The validated REPLY in one inbox object; why it cannot be applied; or None when
    it is no REPLY (an invitation to the organizer's login is not ours to handle).

    The checks of a mailed REPLY (`imip.validate`): a published session's UID, our
    ORGANIZER, exactly one ATTENDEE, who is an invited student. Two differ: the server
    delivered it for the student it authenticated, so there is no From to match, and
    its SEQUENCE is the student's copy's, which Cyrus rewrites (docs/servers.md): the
    session's own SEQUENCE stands in for it — when the REPLY answers the session's
    current times. One that names other times answers a version before a reschedule
    (an offline client, a late delivery) and gets an older SEQUENCE than the session's,
    so it reaches the history only.
    """
    from tmcaldav.imip.replies import known_event

    try:
        state = ical.read_event(body)
    except ical.ICalError as e:
        return f"not readable iCalendar ({e})"
    if state.method != "REPLY":
        return None
    event = known_event(db, state.uid)
    if event is not None:
        times = db.execute(
            select(TrainingSession.start_at, TrainingSession.end_at).where(
                TrainingSession.uid == state.uid
            )
        ).one()
        earlier = any(
            given is not None and given != current
            for given, current in zip((state.start, state.end), times, strict=True)
        )
        state = replace(state, sequence=event.sequence - 1 if earlier else event.sequence)
    itip = imip.ItipObject(
        "REPLY",
        state,
        imip.CalendarPart(body.encode("utf-8"), "REPLY", tuple(state.attendees)[:1] or (None,)),
        len(state.attendees),
    )
    decision = imip.validate(itip, event, organizer=organizer, now=now)
    return decision.reason if isinstance(decision, imip.Refusal) else decision


def apply_inbox_replies(
    db: Session, replies: Iterable[imip.Reply], now: datetime
) -> tuple[int, int]:
    """Record REPLYs read from the scheduling inbox; returns (history rows, notes).

    The poll that ran just before has read the organizer's copy, where the server
    applied each REPLY when it delivered it. So a REPLY
    - already in the history (same answer and DTSTAMP) adds nothing;
    - giving the answer shown dates it, when the server kept no time of its own;
    - giving another answer, sent before the state shown was observed, is older news
      (the student answered again, or a reschedule reset it): history only;
    - sent later is the student's answer, arrived between the two reads.
    Each goes through `apply_answers` (source "poll", evidence reply-dtstamp); comments
    become notes (cut to NOTE_MAX).
    """
    replies = sorted(replies, key=lambda r: (r.dtstamp is None, r.dtstamp or now))
    ids = {r.enrollment_id for r in replies}
    enrollments: dict[int, Enrollment] = {}
    sequences: dict[int, int] = {}
    for found, sequence in db.execute(
        select(Enrollment, TrainingSession.sequence)
        .join(TrainingSession, Enrollment.session_id == TrainingSession.id)
        .where(Enrollment.id.in_(ids))
    ):
        enrollments[found.id], sequences[found.id] = found, sequence
    recorded: set[tuple[int, str, datetime | None]] = set()
    observed: dict[int, datetime] = {}
    for enrollment_id, status, stamp, seen in db.execute(
        select(
            Response.enrollment_id, Response.calendar_status, Response.dtstamp, Response.observed_at
        ).where(Response.enrollment_id.in_(ids))
    ):
        recorded.add((enrollment_id, status, stamp))
        observed[enrollment_id] = max(seen, observed.get(enrollment_id, seen))
    changes: list[AnswerChange] = []
    notes: list[StudentNote] = []
    for reply in replies:
        enrollment = enrollments.get(reply.enrollment_id)
        if enrollment is None:
            continue
        if reply.comment:
            notes.append(
                StudentNote(
                    enrollment.id, reply.session_key, reply.email, clip(reply.comment, NOTE_MAX)
                )
            )
        if (enrollment.id, reply.calendar_status, reply.dtstamp) in recorded:
            continue
        shown = enrollment.calendar_seen or enrollment.calendar_status
        if shown == reply.calendar_status and enrollment.answer_dtstamp is not None:
            continue  # the server's own answer time was recorded with it (Cyrus)
        last_seen = observed.get(enrollment.id)
        change = reply_answer(reply, enrollment)
        if reply.sequence < sequences[enrollment.id]:
            # An answer to the session before a reschedule (`inbox_reply`): history only.
            change = replace(change, superseded=True)
        elif shown == reply.calendar_status and enrollment.answer_sequence is not None:
            # The answer shown, at the SEQUENCE it was recorded with: its time, dated.
            change = replace(change, sequence=enrollment.answer_sequence)
        elif (
            shown != reply.calendar_status
            and reply.dtstamp is not None
            and last_seen is not None
            and reply.dtstamp <= last_seen
        ):
            # Another answer, sent before the state shown was observed: older news.
            change = replace(change, superseded=True)
        changes.append(change)
    answers = apply_answers(db, changes, source="poll", observed_at=now)
    return answers, add_student_notes(db, notes, now)


def _uid_in(changes: Changes, href: str) -> str | None:
    """The UID written in an object's text even when it does not parse (None if none)."""
    for stored in changes.changed:
        if stored.href == href:
            return ical.find_uid(stored.body)
    return None


def _keep_retries(
    db: Session,
    state: SyncState,
    before: Mapping[str, KnownRetry],
    unreadable: Iterable[Unreadable],
    now: datetime,
) -> None:
    """Write the retry list: what was read (or is gone) leaves it; what was not stays."""
    still = {u.href: u for u in unreadable}
    gone = [retry.id for href, retry in before.items() if href not in still]
    if gone:
        db.execute(delete(SyncRetry).where(SyncRetry.id.in_(gone)))
    for href, problem in still.items():
        old = before.get(href)
        reason = problem.reason[:1000]
        if old is None:
            db.add(
                SyncRetry(
                    sync_state_id=state.id,
                    href=href,
                    first_seen_at=now,
                    attempts=1,
                    last_error=reason,
                )
            )
        else:
            db.execute(
                update(SyncRetry)
                .where(SyncRetry.id == old.id)
                .values(attempts=old.attempts + 1, last_error=reason)
            )


def _report_unreadable(
    before: Mapping[str, KnownRetry],
    retry: list[Unreadable],
    unreadable: list[Unreadable],
    events: Iterable[ServerEvent],
    changes: Changes,
) -> None:
    """One line when a session's object first cannot be read, one when it reads again;
    one line per poll for other clients' objects that cannot be read."""
    for problem in retry:
        if problem.href not in before:
            log.warning(
                "could not read %s on the server (%s); the sync goes on and it is fetched "
                "again on the next polls until it reads",
                problem.href,
                problem.reason,
            )
    read = {e.href for e in events}
    for href, old in before.items():
        if href in read:
            log.warning("%s reads again after %d failed attempt(s)", href, old.attempts)
        elif href in changes.deleted:
            log.info("%s is gone from the server; it is not read again", href)
    kept = {u.href for u in retry}
    others = [f"{u.href} ({u.reason})" for u in unreadable if u.href not in kept]
    if others:
        log.warning(
            "skipping %d object(s) on the server that are not tmcaldav's sessions and "
            "cannot be read: %s",
            len(others),
            few(others),
        )


def parse_events(
    changed: Iterable[StoredEvent],
    known: Iterable[KnownSession],
    *,
    answer_time_param: str | None = None,
) -> tuple[list[ServerEvent], list[Unreadable]]:
    """Parse changed objects; our own writes are not parsed. Unreadable ones are returned
    with the reason (the poll keeps its sessions' ones in the retry list).
    `answer_time_param` is the server profile's ATTENDEE parameter holding the answer
    time."""
    ours = {(s.href, s.etag) for s in known if s.href and s.etag}
    events: list[ServerEvent] = []
    skipped: list[Unreadable] = []
    for stored in changed:
        if (stored.href, stored.etag) in ours:
            events.append(ServerEvent(stored.href, stored.etag, None))
            continue
        try:
            state = ical.read_event(stored.body, answer_time_param=answer_time_param)
            events.append(ServerEvent(stored.href, stored.etag, state))
        except ical.ICalError as e:
            log.debug("cannot parse %s on the server: %s", stored.href, e)
            skipped.append(Unreadable(stored.href, f"not a readable event: {e}"))
    return events, skipped


def _apply_sessions(db: Session, result: Diff) -> None:
    ids = list(result.seen) + list(result.missing)
    if not ids:
        return
    # One query for every session touched (a full resync touches them all).
    sessions = {
        s.id: s for s in db.scalars(select(TrainingSession).where(TrainingSession.id.in_(ids)))
    }
    for session_id, (href, etag, sequence) in result.seen.items():
        session = sessions.get(session_id)
        if session is None:
            continue
        session.href, session.etag = href, etag
        session.sequence = max(session.sequence, sequence)
        session.calendar_state = "published"
    for session_id in result.missing:
        session = sessions.get(session_id)
        if session is not None:
            # The answers stay in the store; only the event is marked gone.
            session.calendar_state = "missing"
            session.etag = None


def add_student_notes(db: Session, notes: Iterable[StudentNote], now: datetime) -> int:
    """Keep each student's own words as a note on their enrollment, once."""
    notes = list(notes)
    if not notes:
        return 0
    existing = {
        (enrollment_id, text)
        for enrollment_id, text in db.execute(
            select(Note.enrollment_id, Note.text).where(
                Note.enrollment_id.in_([n.enrollment_id for n in notes]),
                Note.author == NOTE_AUTHOR,
            )
        )
    }
    added = 0
    for note in notes:
        if (note.enrollment_id, note.text) in existing:
            continue
        existing.add((note.enrollment_id, note.text))
        db.add(
            Note(
                enrollment_id=note.enrollment_id, text=note.text, author=NOTE_AUTHOR, created_at=now
            )
        )
        added += 1
        log.info("session %s: %s left a note in their calendar", note.session_key, note.email)
    return added


def record_schedule_status(
    enrollment: Enrollment,
    result: ical.ScheduleResult,
    *,
    sequence: int | None,
    reason: str,
    now: datetime,
) -> None:
    """Record what the server said it did with one student's invitation, and keep it in
    the history (schedule_checks)."""
    enrollment.delivery_status = result.delivery
    enrollment.schedule_status = result.schedule_status
    enrollment.delivery_checked_at = now
    enrollment.schedule_checks.append(
        ScheduleCheck(
            checked_at=now,
            sequence=sequence,
            delivery_status=result.delivery,
            schedule_status=result.schedule_status,
            reason=reason,
        )
    )


def _apply_schedule(db: Session, changes: Iterable[ScheduleChange], now: datetime) -> None:
    changes = list(changes)
    if not changes:
        return
    enrollments = {
        e.id: e
        for e in db.scalars(
            select(Enrollment).where(Enrollment.id.in_([c.enrollment_id for c in changes]))
        )
    }
    for change in changes:
        enrollment = enrollments.get(change.enrollment_id)
        if enrollment is None:
            continue
        result = ical.read_schedule_status(change.schedule_status)
        before = enrollment.delivery_status
        record_schedule_status(enrollment, result, sequence=change.sequence, reason="poll", now=now)
        if before != result.delivery:
            log.info(
                "session %s: the server now says %s for %s (%s: %s)",
                change.session_key,
                result.delivery,
                change.email,
                change.schedule_status,
                result.meaning,
            )


def _report(result: Diff) -> None:
    """Log what the poll found; many of a kind in one event make one line, not one each."""
    for key in result.missing_keys:
        log.warning(
            "session %s: its event was deleted on the server; answers are kept in "
            "the store; `tmcaldav invite %s` recreates it",
            key,
            key,
        )
    strangers: dict[str, list[str]] = {}
    for stranger in result.strangers:
        strangers.setdefault(stranger.session_key, []).append(stranger.email)
    for key, emails in strangers.items():
        log.warning(
            "session %s: %d attendee(s) on the server are not enrolled (added in another "
            "client, or delegates); not enrolled: %s",
            key,
            len(emails),
            few(emails),
        )
    dropped: dict[str, list[str]] = {}
    for key, email in result.dropped:
        dropped.setdefault(key, []).append(email)
    for key, emails in dropped.items():
        log.warning(
            "session %s: %d student(s) were removed from the event on the server: %s",
            key,
            len(emails),
            few(emails),
        )
