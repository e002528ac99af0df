"""Publish sessions as CalDAV events: invite, update, reschedule, remove, cancel.

Every write reads the server copy first and merges it: attendees' PARTSTATs on the
server win over the store's idea of them, and a 412 (someone wrote between our read
and our PUT) re-reads, merges and retries. So an answer written by a student is
never lost by a republish.

Each operation runs in three steps so the store is never locked during network I/O
and never half-written: (1) check and snapshot the store (rolled back), (2) read,
merge and write the event, (3) record the outcome in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypedDict, Unpack

from sqlalchemy.orm import Session

from tmcaldav import ical
from tmcaldav.caldav import (
    CalendarService,
    CalendarSettings,
    NotFound,
    OrganizerChangeRefused,
    PreconditionFailed,
    StoredEvent,
)
from tmcaldav.config import Config, ConfigError
from tmcaldav.domain import ServerDelivery, normalise_address
from tmcaldav.errors import Refused, TmcaldavError
from tmcaldav.store import NotFoundError, Store, get_enrollment, get_session
from tmcaldav.store.facts import session_facts
from tmcaldav.store.model import (
    Enrollment,
    Reminder,
    Response,
    TrainingSession,
    utcnow,
)
from tmcaldav.store.roster import RosterError, SessionFields, edit_session

log = logging.getLogger(__name__)

# How often a write is retried after a 412 caused by a concurrent change.
MAX_ATTEMPTS = 5
# Session fields whose change must reach the students, and those that make a reschedule.
# (A new zone alone moves the wall-clock times, so it usually changes start and end
# too; one that keeps the same instants only rewrites the event.)
CONTENT_CHANGES = {"title", "location", "description", "tz"}
TIME_CHANGES = {"start_at", "end_at"}


class PublishError(TmcaldavError):
    """A publish that could not be done; the store is unchanged."""


# A check run before a change is made: first on the snapshot (`final` False: it must
# only read, as that transaction may not write), then in the transaction that records
# the change (`final` True), where it may lock rows, refuse (Refused) or record more
# with the change (a suggestion marked applied).
Guard = Callable[[Session, bool], None]


#: An operation's change to the store and its plan for the event (None: nothing to
#: write). It runs twice: on the snapshot, then for real in the recording transaction.
Prepare = Callable[[Session, TrainingSession], "Plan | None"]
#: An operation's record of the write (None when there was none), after `Prepare`.
Record = Callable[[Session, TrainingSession, "Written | None"], None]


@dataclass(frozen=True)
class _Operation:
    """One publishing operation on one session (see `Publisher._run`)."""

    key: str
    prepare: Prepare
    record: Record
    guard: Guard | None = None

    def prepared(self, db: Session, *, final: bool) -> tuple[TrainingSession, Plan | None]:
        """The guard, then `prepare` on the session: on the snapshot (`final` False) or in
        the recording transaction (`final` True)."""
        if self.guard is not None:
            self.guard(db, final)
        session = get_session(db, self.key, notes=False)
        return session, self.prepare(db, session)


def connect_calendar(config: Config) -> CalendarService:
    """Connect to the configured CalDAV calendar (creating it if missing)."""
    if config.caldav is None:
        raise ConfigError(config.path, ["[caldav]: missing section; needed to publish and sync"])
    c = config.caldav
    settings = CalendarSettings(
        url=c.url,
        username=c.username,
        # A bearer login has no password: its token comes from token_command, run on
        # the first request and again after a 401.
        password="" if c.auth == "bearer" else c.password.read(),
        calendar=c.calendar,
        tls_ca_file=c.tls_ca_file,
        timeout=c.timeout,
        auth=c.auth,
        fetch_token=c.fetch_token if c.auth == "bearer" else None,
        profile=c.server_profile,
    )
    return CalendarService.connect(settings)


@dataclass(frozen=True)
class Student:
    """An enrollment as the event needs it.

    `calendar_status` is what the server holds for the student: an answer recorded by
    hand (`tmcaldav answer`) is the store's, never written into their PARTSTAT.
    """

    email: str
    name: str | None
    calendar_status: str
    status: str


@dataclass(frozen=True)
class Snapshot:
    """A session as the store holds it, detached from the database."""

    key: str
    title: str
    course: str | None
    description: str | None
    location: str | None
    start: datetime
    end: datetime
    tz: str
    status: str
    uid: str | None
    href: str | None
    etag: str | None
    sequence: int
    calendar_state: str
    students: tuple[Student, ...]

    def attendees(self) -> tuple[Student, ...]:
        """Students who belong on the event: invited and not cancelled."""
        return tuple(
            s
            for s in self.students
            if s.calendar_status != "not_invited" and s.status != "cancelled"
        )


def snapshot(session: TrainingSession) -> Snapshot:
    """Detach a session and its enrollments from the database."""
    return Snapshot(
        **session_facts(
            session, "description", "status", "uid", "href", "etag", "sequence", "calendar_state"
        ),
        students=tuple(
            Student(e.person.email, e.person.name, e.calendar_seen or e.calendar_status, e.status)
            for e in session.enrollments
        ),
    )


@dataclass(frozen=True)
class Plan:
    """What one publish should make of the event."""

    attendees: tuple[Student, ...]
    # What the change is, for whoever tells the students: invite, update, reschedule,
    # remove, cancel or publish.
    kind: str = "publish"
    bump: bool = False  # SEQUENCE+1: a change the students' clients must apply
    reschedule: bool = False  # every attendee back to NEEDS-ACTION
    force_send: frozenset[str] = frozenset()  # asked to be sent again (--resend)
    invited: frozenset[str] = frozenset()  # newly invited addresses
    removed: frozenset[str] = frozenset()  # addresses taken off the event
    # (old, new): a person's address replaced by another (`person edit --email`).
    replaced: tuple[tuple[str, str], ...] = ()

    def delivery_targets(self) -> frozenset[str]:
        """Students this write must reach: the newly invited and those sent it again,
        or everyone when the session changes under them (update, reschedule)."""
        if self.kind in ("update", "reschedule"):
            return frozenset(s.email for s in self.attendees)
        if self.kind == "invite":
            return self.invited | self.force_send
        return frozenset()

    def check_reason(self, email: str) -> str:
        """Why the delivery to `email` is checked (the history's reason)."""
        if email in self.force_send and email not in self.invited:
            return "resend"
        return self.kind


@dataclass(frozen=True)
class Published:
    """What reached the server, for whoever must tell the students (the iMIP mailer).

    Listeners get it inside the transaction that records the write (to queue their
    own rows atomically with it), and again after the commit (to act on them).
    """

    session_key: str
    kind: str
    sequence: int
    attendees: tuple[str, ...]
    invited: frozenset[str]
    resend: frozenset[str]
    removed: frozenset[str]
    # A change every attendee's client must apply (update, reschedule, cancel).
    everyone: bool
    # (old, new) addresses of a person whose address was replaced.
    replaced: tuple[tuple[str, str], ...] = ()


@dataclass
class Written:
    """The outcome of a write: the event as stored, and what the merge found."""

    event: StoredEvent
    uid: str
    sequence: int
    recreated: bool
    # Answers on the server the store did not know (the next poll records them).
    unrecorded: dict[str, str] = field(default_factory=dict)
    # Server mode: what the server says it did with each student the write was meant
    # to reach (read back from the organizer's copy right after the PUT).
    delivery: dict[str, ical.ScheduleResult] = field(default_factory=dict)
    # The store is behind the version written in some other way (a newer SEQUENCE on
    # the server, or the store changed while we wrote): the next poll reads it.
    store_behind: bool = False

    @property
    def in_step(self) -> bool:
        """True when the store reflects everything in the version written, so its ETag
        may be taken as our own (the next poll then finds nothing new in it)."""
        return not self.unrecorded and not self.store_behind


class InviteOptions(TypedDict, total=False):
    """The options of `Publisher.invite` and `Publisher.invite_checked`."""

    all_enrolled: bool
    resend: bool
    guard: Guard | None
    preview: Preview | None


@dataclass(frozen=True)
class Invitation:
    """What `invite` did: who was newly invited, and whose invitation the server says
    it did not deliver (server mode), among the students this invite named."""

    newly: list[str]
    picked: list[str]
    undelivered: dict[str, ical.ScheduleResult]


def merge_attendees(
    plan: Plan, server: ical.EventState | None
) -> tuple[tuple[ical.Attendee, ...], dict[str, str]]:
    """The attendees to write: the server's PARTSTAT wins, new invitees get NEEDS-ACTION.

    Returns them and the answers found on the server that differ from the store.
    """
    on_server = server.attendees if server is not None else {}
    attendees = []
    unrecorded = {}
    for s in plan.attendees:
        there = on_server.get(s.email)
        if plan.reschedule:
            partstat = "NEEDS-ACTION"
        elif there is not None:
            partstat = there.partstat
            if there.calendar_status != s.calendar_status:
                unrecorded[s.email] = there.calendar_status
        else:
            # Not on the server (new invitee, or the event was lost): the store's answer.
            partstat = ical.STATUS_TO_PARTSTAT.get(s.calendar_status, "NEEDS-ACTION")
        attendees.append(ical.Attendee(s.email, s.name, partstat, rsvp=True))
    return tuple(attendees), unrecorded


class Publisher:
    """Publishes sessions of one store to one calendar."""

    def __init__(
        self,
        config: Config,
        store: Store,
        calendar: CalendarService | Callable[[], CalendarService] | None = None,
    ):
        self.config = config
        self.store = store
        self._calendar = calendar
        # (db, published) inside the recording transaction; (published) after its commit.
        self.on_published: list[Callable[[Session, Published], None]] = []
        self.after_published: list[Callable[[Published], None]] = []

    @property
    def calendar(self) -> CalendarService:
        """The CalDAV calendar, connected on first use."""
        if self._calendar is None:
            self._calendar = connect_calendar(self.config)
        elif not isinstance(self._calendar, CalendarService):
            self._calendar = self._calendar()
        return self._calendar

    # ---- the write, with read-merge-retry ---------------------------------------------------

    def _spec(
        self,
        snap: Snapshot,
        attendees: tuple[ical.Attendee, ...],
        sequence: int,
        plan: Plan,
        uid: str,
    ) -> ical.EventSpec:
        from tmcaldav.invitations import InvitationFacts, event_description

        sched = self.config.scheduling
        facts = InvitationFacts(
            **session_facts(snap, "description"),
            organizer=sched.organizer_name or sched.organizer_email,
        )
        return ical.EventSpec(
            uid=uid,
            summary=snap.title,
            start=snap.start,
            end=snap.end,
            tz=snap.tz,
            sequence=sequence,
            dtstamp=utcnow(),
            status="CANCELLED" if snap.status == "cancelled" else "CONFIRMED",
            organizer_email=sched.organizer_email,
            organizer_name=sched.organizer_name,
            attendees=attendees,
            # Server mode: the [invitation] body, since the server writes the invitation.
            description=event_description(self.config, facts),
            location=snap.location,
            schedule_agent_client=sched.mode == "imip",
            force_send=plan.force_send if sched.mode == "server" else frozenset(),
        )

    def write(self, snap: Snapshot, plan: Plan) -> Written:
        """Read the server copy, merge, and PUT conditionally; retry on a concurrent change."""
        uid = snap.uid or ical.session_uid(snap.key, self.config.scheduling.organizer_email)
        for _attempt in range(MAX_ATTEMPTS):
            server_event: StoredEvent | None = None
            if snap.href is not None:
                try:
                    server_event = self.calendar.get(snap.href)
                except NotFound:
                    log.warning(
                        "session %s: its event was deleted on the server; recreating it "
                        "(answers on the deleted event are gone; the store's are written back)",
                        snap.key,
                    )
            server_state = _read_server_copy(snap, server_event)
            attendees, unrecorded = merge_attendees(plan, server_state)
            base = max(snap.sequence, server_state.sequence if server_state else 0)
            sequence = base + 1 if plan.bump and snap.calendar_state != "unpublished" else base
            body = ical.build_calendar(self._spec(snap, attendees, sequence, plan, uid))
            try:
                if server_event is None:
                    stored = self.calendar.create(uid, body)
                else:
                    stored = self.calendar.update(server_event.href, body, server_event.etag)
            except OrganizerChangeRefused:
                if server_event is None or not self._never_scheduled(server_state):
                    raise
                # The server never scheduled this copy (its ORGANIZER is not one of the
                # login's addresses), so no student holds it and no answer is on it:
                # replacing it loses nothing and lets the new organizer schedule.
                log.warning(
                    "session %s: replacing the event on the server, whose ORGANIZER %s the "
                    "server never scheduled for",
                    snap.key,
                    server_state.organizer if server_state else "(unreadable)",
                )
                self.calendar.delete(server_event.href, server_event.etag)
                snap = replace(snap, href=None)
                continue
            except PreconditionFailed as e:
                if server_event is None:
                    href = snap.href or self.calendar.href_for(uid)
                    if not self._exists(href):
                        raise PublishError(
                            f"session {snap.key}: the server refused to create the event "
                            f"({e}); it may be too large for the server "
                            f"({len(plan.attendees)} attendees, {len(body)} bytes), or an "
                            f"event with UID {uid} exists elsewhere in the calendar"
                        ) from e
                    # An event with our UID exists already (published by an earlier run
                    # whose store write was lost): adopt it and merge into it.
                    snap = replace(snap, href=href)
                elif not self._changed_since(server_event):
                    # Radicale answers 412 also for an item it will not store (too large):
                    # the ETag still matches, so retrying cannot help.
                    raise PublishError(
                        f"session {snap.key}: the server refused the event although nobody "
                        f"changed it ({e}); it may be too large for the server "
                        f"({len(plan.attendees)} attendees, {len(body)} bytes)"
                    ) from e
                log.info("session %s: the event changed while we wrote it; merging again", snap.key)
                continue
            written = Written(
                stored,
                uid,
                sequence,
                recreated=snap.href is not None and server_event is None,
                unrecorded=unrecorded,
            )
            self._read_delivery(snap, plan, attendees, written)
            return written
        raise PublishError(
            f"session {snap.key}: the event kept changing on the server while we wrote it "
            f"({MAX_ATTEMPTS} attempts); try again"
        )

    def _read_delivery(
        self,
        snap: Snapshot,
        plan: Plan,
        attendees: tuple[ical.Attendee, ...],
        written: Written,
    ) -> None:
        """Server mode: read the organizer's copy back and take each targeted student's
        SCHEDULE-STATUS (RFC 6638 §3.2.9) — the server's word on the delivery.

        A scheduling server delivers during the PUT, so the status is there when the
        PUT returns; none at all means it scheduled nothing for that student.
        """
        targets = plan.delivery_targets()
        if not targets or self.config.scheduling.mode != "server" or not self.calendar.schedules:
            return
        try:
            stored = self.calendar.as_stored(written.event)
            state = ical.read_event(stored.body)
        except (NotFound, ical.ICalError) as e:
            log.warning("session %s: cannot read the event back to check delivery: %s", snap.key, e)
            return
        written.event = stored
        sent = {a.email: ical.partstat_to_status(a.partstat) for a in attendees}
        for email, on_server in state.attendees.items():
            # A student answered between our PUT and this read: the ETag read back is
            # not only our write, so it must not be taken as ours (the poll records it).
            if email in sent and on_server.calendar_status != sent[email]:
                written.unrecorded[email] = on_server.calendar_status
        for email in sorted(targets):
            attendee = state.attendees.get(email)
            if attendee is None:
                continue
            result = ical.read_schedule_status(attendee.schedule_status)
            if attendee.schedule_status is None and attendee.calendar_status != "invited":
                # An answer proves the invitation arrived (Cyrus drops the status then).
                result = ical.ScheduleResult(
                    ServerDelivery.DELIVERED, None, None, "answered, so it was delivered"
                )
            written.delivery[email] = result
        failed = [e for e, r in written.delivery.items() if not r.delivered]
        if failed:
            log.warning(
                "session %s: the server did not deliver the invitation to %s",
                snap.key,
                ", ".join(failed),
            )

    def _never_scheduled(self, state: ical.EventState | None) -> bool:
        """True when the server copy's ORGANIZER is not one of the login's addresses: a
        scheduling server then delivered nothing for it."""
        addresses = {a.lower() for a in self.calendar.user_addresses}
        return bool(addresses) and (state is None or (state.organizer or "") not in addresses)

    def _exists(self, href: str) -> bool:
        try:
            self.calendar.get(href)
        except NotFound:
            return False
        return True

    def _changed_since(self, seen: StoredEvent) -> bool:
        try:
            return self.calendar.get(seen.href).etag != seen.etag
        except NotFound:
            return True

    # ---- operations -----------------------------------------------------------------------

    def _run(
        self,
        key: str,
        prepare: Prepare,
        record: Record,
        guard: Guard | None = None,
        preview: Preview | None = None,
    ) -> Written | None:
        """Check and plan on a snapshot, write the event, then record in one transaction.

        `guard` runs first in both: on the snapshot, so a refusal changes nothing on the
        server, and in the recording transaction, where it is the one that counts. With
        `preview` (a dry run) the plan is shown to it, on the snapshot, and nothing is
        written anywhere.
        """
        operation = _Operation(key, prepare, record, guard)
        # Nothing in this first step is kept: the changes are made again, for real,
        # after the write, so the store is not locked while we talk to the server.
        with self.store.scratch() as db:
            session, plan = operation.prepared(db, final=False)
            if preview is not None:
                if plan is not None:
                    sequence = session.sequence + (
                        1 if plan.bump and session.calendar_state != "unpublished" else 0
                    )
                    preview(db, session, published_for(key, plan, sequence))
                return None
            snap = snapshot(session)
        written = self.write(snap, plan) if plan is not None else None
        try:
            published = self._record(operation, written, plan)
        except (RosterError, NotFoundError, Refused) as e:
            if written is None:
                raise
            # Someone changed the store between our plan and our write (cancelled the
            # student we invited, say). The event is on the server: keep where it is
            # and forget its ETag, so the next poll reads it and brings the store in line.
            with self.store.transaction() as db:
                _record_event(
                    get_session(db, key, notes=False),
                    replace(written, store_behind=True),
                )
            raise PublishError(
                f"session {key}: the store changed while the event was being written ({e}); "
                "the event is on the server and the next poll brings the store in line"
            ) from e
        if published is not None:
            for after in self.after_published:
                after(published)
        return written

    def _record(
        self, operation: _Operation, written: Written | None, plan: Plan | None
    ) -> Published | None:
        """The third step: make the changes for real and record the write, in one go."""
        published = None
        with self.store.transaction() as db:
            session, _ = operation.prepared(db, final=True)
            operation.record(db, session, written)
            if written is not None and plan is not None:
                _record_event(session, written)
                _record_delivery(session, written, plan)
                published = published_for(operation.key, plan, written.sequence)
                db.flush()
                for listener in self.on_published:
                    listener(db, published)
        return published

    def invite(
        self, key: str, emails: Iterable[str] = (), **options: Unpack[InviteOptions]
    ) -> list[str]:
        """Add students to the event as attendees; returns the addresses newly invited.

        With `preview` nothing is written: it is shown the publish that would be made.
        """
        return self.invite_checked(key, emails, **options).newly

    def invite_checked(
        self,
        key: str,
        emails: Iterable[str] = (),
        *,
        all_enrolled: bool = False,
        resend: bool = False,
        guard: Guard | None = None,
        preview: Preview | None = None,
    ) -> Invitation:
        """`invite`, also saying whose invitation the server did not deliver.

        In server mode the organizer's copy is read back after the PUT; students named by
        this invite whose recorded delivery failed (now, or earlier and not re-sent) are
        listed in `undelivered`.
        """
        wanted = [normalise_address(e) for e in emails]
        newly: list[str] = []
        picked_emails: list[str] = []

        def chosen(session: TrainingSession) -> list[Enrollment]:
            if session.status == "cancelled":
                raise RosterError(f"session {key} is cancelled; nobody can be invited")
            picked = [get_enrollment_checked(session, e) for e in wanted]
            if all_enrolled:
                picked += [e for e in session.enrollments if e.status == "enrolled"]
            if not picked:
                raise RosterError("name the students to invite, or use --all-enrolled")
            return list(dict.fromkeys(picked))

        def prepare(db: Session, session: TrainingSession) -> Plan:
            picked = chosen(session)
            picked_emails[:] = [e.person.email for e in picked]
            newly.clear()
            for e in picked:
                if e.calendar_status == "not_invited":
                    e.calendar_status = "invited"
                    newly.append(e.person.email)
            force = frozenset(e.person.email for e in picked) if resend else frozenset()
            return Plan(
                attendees=snapshot(session).attendees(),
                kind="invite",
                force_send=force,
                invited=frozenset(newly),
            )

        # The enrollments as the recording transaction left them (with this write's
        # deliveries): read after its commit, so an invite loads the session no third time.
        recorded: list[Enrollment] = []

        def record(db: Session, session: TrainingSession, written: Written | None) -> None:
            now = utcnow()
            for e in session.enrollments:
                if e.person.email in newly:
                    e.invited_at = now
                    e.calendar_reason = None
            recorded[:] = session.enrollments

        self._run(key, prepare, record, guard, preview)
        if preview is not None:
            return Invitation(list(newly), list(picked_emails), {})
        server_mode = self.config.scheduling.mode == "server"
        undelivered = {
            e.person.email: ical.read_schedule_status(e.schedule_status)
            for e in recorded
            if server_mode
            and e.person.email in picked_emails
            and e.delivery_status == ServerDelivery.NOT_DELIVERED
            and e.calendar_status == "invited"
        }
        return Invitation(list(newly), list(picked_emails), undelivered)

    def edit(self, key: str, fields: SessionFields) -> set[str]:
        """Change a session; a published one is updated (SEQUENCE+1), a new time reschedules."""
        changed: set[str] = set()

        def prepare(db: Session, session: TrainingSession) -> Plan | None:
            changed.clear()
            changed.update(edit_session(db, key, fields))
            if session.calendar_state == "unpublished" or not changed & (
                CONTENT_CHANGES | TIME_CHANGES
            ):
                return None
            reschedule = bool(changed & TIME_CHANGES)
            return Plan(
                attendees=snapshot(session).attendees(),
                kind="reschedule" if reschedule else "update",
                bump=True,
                reschedule=reschedule,
            )

        def record(db: Session, session: TrainingSession, written: Written | None) -> None:
            if written is None or not changed & TIME_CHANGES:
                return
            now = utcnow()
            for e in session.enrollments:
                if e.calendar_status == "not_invited" or e.status == "cancelled":
                    continue
                # The reset is not the student's answer: it is kept in the history with
                # its reason, and fires no response hooks.
                e.calendar_status = "invited"
                e.calendar_reason = "rescheduled"
                e.calendar_seen = None
                e.responded_at = None
                e.answer_sequence = written.sequence
                e.answer_dtstamp = None
                e.responses.append(
                    Response(
                        calendar_status="invited",
                        responded_at=now,
                        observed_at=now,
                        sequence=written.sequence,
                        source="manual",
                        reason="rescheduled",
                    )
                )

        self._run(key, prepare, record)
        return changed

    def set_status(
        self,
        key: str,
        email: str,
        status: str,
        note: str | None = None,
        *,
        guard: Guard | None = None,
    ) -> str:
        """Set an enrollment's status; cancelling removes the attendee (SEQUENCE+1)."""
        from tmcaldav.store.roster import set_status

        old: list[str] = []

        def prepare(db: Session, session: TrainingSession) -> Plan | None:
            was_attendee = get_enrollment(db, session, email).calendar_status != "not_invited"
            _, before = set_status(db, key, email, status, note)
            old[:] = [before]
            if (
                status != "cancelled"
                or before == "cancelled"
                or not was_attendee
                or session.calendar_state == "unpublished"
            ):
                return None
            return Plan(
                attendees=snapshot(session).attendees(),
                kind="remove",
                bump=True,
                removed=frozenset({normalise_address(email)}),
            )

        def record(db: Session, session: TrainingSession, written: Written | None) -> None:
            if written is not None:
                enrollment = get_enrollment(db, session, email)
                enrollment.calendar_status = "not_invited"
                enrollment.calendar_reason = "removed"
                enrollment.calendar_seen = None

        self._run(key, prepare, record, guard)
        return old[0]

    def cancel(self, key: str) -> bool:
        """Cancel a session: STATUS:CANCELLED and SEQUENCE+1 on its event (which stays).

        In the same transaction, each enrolled student gets advice (another session of
        the course, or a call), and the session's open suggestions are withdrawn.
        """

        def prepare(db: Session, session: TrainingSession) -> Plan | None:
            if session.status == "cancelled":
                raise RosterError(f"session {key} is already cancelled")
            session.status = "cancelled"
            if session.calendar_state == "unpublished":
                return None
            return Plan(attendees=snapshot(session).attendees(), kind="cancel", bump=True)

        def record(db: Session, session: TrainingSession, written: Written | None) -> None:
            # Imported here: the advice lives with the hooks, which import this module.
            from tmcaldav.hooks.cancellation import advise_cancelled_session

            advise_cancelled_session(db, session, utcnow())

        return self._run(key, prepare, record) is not None

    def remind(
        self,
        key: str,
        check: Callable[[Session, TrainingSession], list[Enrollment]],
        *,
        preview: Preview | None = None,
    ) -> list[str]:
        """Send the invitation again to the students `check` picks (and vets); returns
        their addresses.

        Server mode: the event is written with ``SCHEDULE-FORCE-SEND=REQUEST`` on their
        ATTENDEEs, so the server sends it again (RFC 6638 §7.3). iMIP mode: a REQUEST
        mail to each (the write itself changes nothing). Each reminder is recorded.
        """
        chosen: list[str] = []
        channel = "mail" if self.config.scheduling.mode == "imip" else "server"

        def prepare(db: Session, session: TrainingSession) -> Plan | None:
            picked = check(db, session)
            chosen[:] = [e.person.email for e in picked]
            if not picked:
                return None
            return Plan(
                attendees=snapshot(session).attendees(),
                kind="remind",
                force_send=frozenset(chosen),
            )

        def record(db: Session, session: TrainingSession, written: Written | None) -> None:
            if written is None:
                return
            now = utcnow()
            for e in session.enrollments:
                if e.person.email in chosen:
                    db.add(
                        Reminder(
                            enrollment_id=e.id,
                            sent_at=now,
                            channel=channel,
                            calendar_status=e.calendar_status,
                            sequence=written.sequence,
                        )
                    )

        self._run(key, prepare, record, preview=preview)
        return chosen

    def readdress(self, key: str, old: str, new: str) -> bool:
        """The person now at `new` was `old` on this session's event: replace the ATTENDEE
        (SEQUENCE+1; their answer goes with them). False when the event has no such
        attendee (unpublished, cancelled, not invited). The store's address must already
        be `new`.
        """

        def prepare(db: Session, session: TrainingSession) -> Plan | None:
            if session.calendar_state == "unpublished" or session.status == "cancelled":
                return None
            enrollment = get_enrollment(db, session, new)
            if enrollment.calendar_status == "not_invited" or enrollment.status == "cancelled":
                return None
            return Plan(
                attendees=snapshot(session).attendees(),
                kind="readdress",
                bump=True,
                invited=frozenset({new}),
                removed=frozenset({old}),
                replaced=((old, new),),
            )

        return self._run(key, prepare, lambda db, s, w: None) is not None

    def delete(self, key: str) -> bool:
        """Remove a session's event from the server (If-Match; re-read on a concurrent
        change). Returns False when there was none (never published, or already gone).
        The store is not touched: the caller deletes the session.
        """
        with self.store.scratch() as db:
            session = get_session(db, key, notes=False)
            href, uid = session.href, session.uid
        if href is None:
            return False
        for _attempt in range(MAX_ATTEMPTS):
            try:
                event = self.calendar.get(href)
            except NotFound:
                return False
            try:
                found = ical.read_event(event.body).uid
            except ical.ICalError:
                found = None
            if uid is not None and found is not None and found != uid:
                raise PublishError(
                    f"session {key}: the event at {href} is not this session's "
                    f"(UID {found}); it was left on the server"
                )
            try:
                self.calendar.delete(event.href, event.etag)
            except NotFound:
                return False
            except PreconditionFailed:
                log.info("session %s: the event changed while we deleted it; again", key)
                continue
            return True
        raise PublishError(
            f"session {key}: the event kept changing on the server while we deleted it "
            f"({MAX_ATTEMPTS} attempts); try again"
        )

    def publish(self, key: str) -> Written:
        """(Re)publish one session as it is in the store, merging the server's answers.

        SEQUENCE is not raised: a republish carries no change the students must apply.
        """

        def prepare(db: Session, session: TrainingSession) -> Plan:
            return Plan(attendees=snapshot(session).attendees())

        written = self._run(key, prepare, lambda db, s, w: None)
        assert written is not None
        return written

    def apply_reply(self, key: str, email: str, partstat: str) -> Written:
        """Write one attendee's answer (an iMIP REPLY) into the organizer's copy.

        Only that ATTENDEE's PARTSTAT changes; SEQUENCE and every other byte stay. The
        write is conditional (If-Match) and re-reads on a concurrent change. The store
        is not touched: the caller records the answer. `Written.in_step` is true only
        when the store already reflects every other answer in the version written, so
        the caller may take the new ETag as its own.
        """
        with self.store.scratch() as db:
            snap = snapshot(get_session(db, key))
        if snap.href is None or snap.uid is None:
            raise PublishError(f"session {key} is not published; nothing to answer")
        for _attempt in range(MAX_ATTEMPTS):
            try:
                event = self.calendar.get(snap.href)
            except NotFound as e:
                raise PublishError(
                    f"session {key}: its event is missing on the server; "
                    f"`tmcaldav invite {key}` recreates it"
                ) from e
            try:
                state = ical.read_event(event.body)
                body = ical.set_partstats(event.body, {email: partstat})
            except ValueError as e:  # ICalError too: the copy is unreadable or lacks them
                raise PublishError(f"session {key}: cannot record {email}'s answer: {e}") from e
            try:
                stored = self.calendar.update(event.href, body, event.etag)
            except PreconditionFailed as e:
                if not self._changed_since(event):
                    raise PublishError(
                        f"session {key}: the server refused the answer although nobody "
                        f"changed the event ({e})"
                    ) from e
                continue
            unrecorded: dict[str, str] = {}
            if event.etag != snap.etag:
                known = {s.email: s.calendar_status for s in snap.students}
                unrecorded = {
                    a: s.calendar_status
                    for a, s in state.attendees.items()
                    if a != email and a in known and known[a] != s.calendar_status
                }
            return Written(
                stored,
                snap.uid,
                state.sequence,
                recreated=False,
                unrecorded=unrecorded,
                store_behind=event.etag != snap.etag and state.sequence != snap.sequence,
            )
        raise PublishError(
            f"session {key}: the event kept changing on the server while we wrote "
            f"{email}'s answer ({MAX_ATTEMPTS} attempts); it will be tried again"
        )

    def keys_to_publish(self, everything: bool) -> list[str]:
        """Sessions to publish: unpublished or changed ones, or `everything`."""
        from tmcaldav.store import list_sessions

        with self.store.transaction() as db:
            return [
                s.key
                for s in list_sessions(db)
                if everything or (s.calendar_state != "published" and s.status == "scheduled")
            ]


#: A dry run's look at what a publish would do: (db, session as planned, what would be
#: published). It runs inside a transaction that is rolled back.
Preview = Callable[[Session, TrainingSession, "Published"], None]


def published_for(key: str, plan: Plan, sequence: int) -> Published:
    """What a write made from `plan` tells the students' side (and the hooks)."""
    return Published(
        session_key=key,
        kind=plan.kind,
        sequence=sequence,
        attendees=tuple(s.email for s in plan.attendees),
        invited=plan.invited,
        resend=plan.force_send,
        removed=plan.removed,
        everyone=plan.bump,
        replaced=plan.replaced,
    )


def get_enrollment_checked(session: TrainingSession, email: str) -> Enrollment:
    """The enrollment of `email`; RosterError naming the session when there is none."""
    for e in session.enrollments:
        if e.person.email == email:
            if e.status == "cancelled":
                raise RosterError(
                    f"{email} is cancelled in session {session.key}; "
                    f"set-status {session.key} {email} enrolled first"
                )
            return e
    raise RosterError(
        f"{email} is not in session {session.key}; enroll them first: "
        f"tmcaldav enroll {session.key} {email} [--waitlist]"
    )


def _read_server_copy(snap: Snapshot, event: StoredEvent | None) -> ical.EventState | None:
    if event is None:
        return None
    try:
        return ical.read_event(event.body)
    except ical.ICalError as e:
        # Our own event, mangled by someone: rewrite it from the store rather than stop.
        log.warning(
            "session %s: the server copy at %s is not usable (%s); rewriting it",
            snap.key,
            event.href,
            e,
        )
        return None


def _record_delivery(session: TrainingSession, written: Written, plan: Plan) -> None:
    """Keep what the server said about each delivery on the enrollments, with history."""
    if not written.delivery:
        return
    from tmcaldav.sync import record_schedule_status

    now = utcnow()
    for enrollment in session.enrollments:
        result = written.delivery.get(enrollment.person.email)
        if result is not None:
            record_schedule_status(
                enrollment,
                result,
                sequence=written.sequence,
                reason=plan.check_reason(enrollment.person.email),
                now=now,
            )


def _record_event(session: TrainingSession, written: Written) -> None:
    session.uid = written.uid
    session.href = written.event.href
    # An ETag is "ours" only when the store reflects every answer in that version;
    # otherwise forget it so the next poll fetches the event and records the answers.
    session.etag = written.event.etag if written.in_step else None
    session.sequence = written.sequence
    session.calendar_state = "published"
    session.published_at = utcnow()
