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

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tmcaldav import ical
from tmcaldav.caldav import CalendarService, Changes, InvalidSyncToken, StoredEvent
from tmcaldav.config import Config
from tmcaldav.domain import ANSWERS, normalise_address
from tmcaldav.errors import TmcaldavError
from tmcaldav.hooks.outbox import ResponseEvent, to_row
from tmcaldav.store import Store
from tmcaldav.store.model import (
    Enrollment,
    Person,
    Response,
    SyncState,
    TrainingSession,
    utcnow,
)
from tmcaldav.words import plural

log = logging.getLogger(__name__)



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


@dataclass
class Diff:
    """Everything one poll found."""

    answers: list[AnswerChange] = field(default_factory=list)
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
) -> Diff:
    """The store's sessions + the server's changed and deleted events → a Diff (pure).

    With `full`, `changed` is the whole calendar: a published session not in it is gone.
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
        _diff_attendees(session, event.state, organizer, result)
    gone = set(deleted)
    for session in by_href.values():
        lost = session.href in gone or (full and session.id not in present)
        if lost and session.id not in present and session.calendar_state != "missing":
            result.missing.append(session.id)
            result.missing_keys.append(session.key)
    return result


def _diff_attendees(
    session: KnownSession, event: ical.EventState, organizer: str, result: Diff
) -> None:
    for email, attendee in event.attendees.items():
        enrollment = session.enrollments.get(email)
        if enrollment is None:
            if email != organizer:
                result.strangers.append(Stranger(session.key, email, attendee.calendar_status))
            continue
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
        if not is_newer(
            (event.sequence, attendee.reply_time),
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
                dtstamp=attendee.reply_time,
                enrollment_status=enrollment.status,
                reason="rescheduled" if reset else None,
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
    else the observation time. An answer older in iTIP order than the one shown goes
    into the history only. An answer the enrollment already shows, at the same SEQUENCE
    and DTSTAMP, is the same answer seen twice (two pollers, a poll and a REPLY racing):
    it is skipped, so its hooks fire once. A calendar answer that only confirms the
    answer shown (the student accepts in the calendar what they said on the phone) is
    recorded but fires no hooks: nothing changed.

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
        old = enrollment.calendar_status
        when = (responded_at or {}).get(change.enrollment_id) or change.dtstamp or observed_at
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
            )
        )
        count += 1
        if not is_newer(
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
            )
            .join(Person, Person.id == Enrollment.person_id)
            .where(Enrollment.session_id.in_(list(by_session)))
        )
        # Plain tuples: a full resync reads every enrollment, and named access on
        # each row costs more than the query.
        for session_id, enrollment_id, email, status, calendar, sequence, stamp, seen in rows:
            by_session[session_id][email] = KnownEnrollment(
                enrollment_id, email, status, calendar, sequence, stamp, seen
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
    """Polls one calendar into one store."""

    def __init__(
        self, store: Store, calendar: CalendarService, organizer: str, key: str | None = None
    ):
        self.store = store
        self.calendar = calendar
        self.organizer = normalise_address(organizer)
        self.key = key or calendar.url

    @classmethod
    def for_config(cls, config: Config, store: Store, calendar: CalendarService) -> Poller:
        """The poller the CLI and the daemon use for a configuration."""
        return cls(store, calendar, config.scheduling.organizer_email, state_key(config))

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
        """One poll: fetch the changes, diff, apply in one transaction."""
        started = time.perf_counter()
        with self.store.scratch() as db:
            row = db.execute(
                select(SyncState.sync_token, SyncState.ctag).where(
                    SyncState.calendar_url == self.key
                )
            ).one_or_none()
            published = (
                db.scalar(select(func.count()).where(TrainingSession.calendar_state == "published"))
                or 0
            )
        token, ctag = (row.sync_token, row.ctag) if row is not None else (None, None)
        changes, new_ctag = self._fetch(token, ctag)
        if (
            not changes.changed
            and not changes.deleted
            and not changes.full
            and (changes.sync_token or None) == token
            and new_ctag == ctag
        ):
            # Nothing changed: no store write at all, so an idle poll costs one request.
            return PollResult(published, 0, 0, [], [], [], False, time.perf_counter() - started)
        with self.store.scratch() as db:
            sessions = load_sessions(
                db,
                hrefs=[e.href for e in changes.changed] + list(changes.deleted),
                every=changes.full,
            )
            events, skipped = parse_events(changes.changed, sessions.values())
            known_hrefs = {s.href for s in sessions.values()}
            unknown_uids = {
                e.state.uid for e in events if e.state is not None and e.href not in known_hrefs
            }
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
        result = diff(known, events, changes.deleted, full=changes.full, organizer=self.organizer)
        if published and len(result.missing) >= published and not accept_empty:
            raise EmptyCalendar(
                f"the calendar {self.calendar.url} no longer lists the sessions published "
                f"there ({plural(published, 'session')}); nothing was changed. If the URL, "
                "the calendar id and the account's permissions are right and the events "
                "really were deleted, run: tmcaldav sync --accept-empty"
            )
        now = utcnow()
        with self.store.transaction() as db:
            answers = apply_answers(db, result.answers, source="poll", observed_at=now)
            _apply_sessions(db, result)
            state = self._state(db)
            state.sync_token = changes.sync_token or state.sync_token
            state.ctag = new_ctag
            state.last_poll_at = now
        _report(result)
        return PollResult(
            sessions=published,
            changed_events=len(result.seen),
            answers=answers,
            strangers=result.strangers,
            missing=result.missing_keys,
            skipped=skipped,
            full=changes.full,
            seconds=time.perf_counter() - started,
        )


def parse_events(
    changed: Iterable[StoredEvent], known: Iterable[KnownSession]
) -> tuple[list[ServerEvent], list[str]]:
    """Parse changed objects; our own writes are not parsed, unreadable ones are skipped
    (and logged with their href)."""
    ours = {(s.href, s.etag) for s in known if s.href and s.etag}
    events, skipped = [], []
    for stored in changed:
        if (stored.href, stored.etag) in ours:
            events.append(ServerEvent(stored.href, stored.etag, None))
            continue
        try:
            events.append(ServerEvent(stored.href, stored.etag, ical.read_event(stored.body)))
        except ical.ICalError as e:
            log.warning("skipping %s on the server: %s", stored.href, e)
            skipped.append(stored.href)
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


def _report(result: Diff) -> None:
    for key in result.missing_keys:
        log.warning(
            "session %s: its event was deleted on the server; answers are kept in "
            "the store; `tmcaldav invite %s` recreates it",
            key,
            key,
        )
    for stranger in result.strangers:
        log.warning(
            "session %s: %s is an attendee on the server but not enrolled "
            "(added in another client, or a delegate); not enrolled",
            stranger.session_key,
            stranger.email,
        )
    for key, email in result.dropped:
        log.warning("session %s: %s was removed from the event on the server", key, email)
