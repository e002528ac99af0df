"""The enrollment store's tables, as SQLAlchemy 2 typed ORM models.

Times are stored as UTC and always come back timezone-aware, on SQLite as on
PostgreSQL. Status values are plain strings checked by CHECK constraints, so a
migration is not needed to read them with any SQL tool.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tmcaldav.domain import (
    AnswerEvidence,
    CalendarState,
    CalendarStatus,
    DaemonRole,
    DeliveryState,
    EnrollmentStatus,
    NoticeState,
    ReminderChannel,
    ResponseSource,
    ServerDelivery,
    SessionStatus,
    SuggestionState,
    values,
)

ENROLLMENT_STATUSES = values(EnrollmentStatus)
CALENDAR_STATUSES = values(CalendarStatus)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC, so SQLite and PostgreSQL agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _in(column: str, allowed: type[StrEnum] | tuple[str, ...]) -> str:
    """The CHECK condition that `column` holds one of the `allowed` values (a vocabulary
    of tmcaldav.domain, or the strings themselves)."""
    names = values(allowed) if isinstance(allowed, type) else allowed
    return f"{column} IN ({', '.join(repr(v) for v in names)})"


class Base(DeclarativeBase):
    """Base of all models: every table is keyed by an integer ``id``; constraint names are
    fixed so migrations can name them."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - read by SQLAlchemy

    # sort_order: the first column, as the migrations create it.
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=-1)


class OfEnrollment:
    """A row that belongs to one enrollment (an answer, a note, a mail, ...) and goes
    when the enrollment is deleted."""

    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), index=True
    )


class Outgoing:
    """A mail tmcaldav sends, tried again until it goes: its state (pending, sent,
    failed, ...: each table checks its own), the attempts, the last error, when to try
    next (each table's "due" index is on state and next_attempt_at) and when it went."""

    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class TrainingSession(Base):
    """One scheduled training, published as one CalDAV event."""

    __tablename__ = "training_sessions"
    __table_args__ = (
        CheckConstraint(_in("status", SessionStatus), name="status"),
        CheckConstraint(_in("calendar_state", CalendarState), name="calendar_state"),
        CheckConstraint("capacity IS NULL OR capacity >= 0", name="capacity"),
        CheckConstraint("end_at > start_at", name="times"),
    )

    key: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    course: Mapped[str | None] = mapped_column(String(200))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    tz: Mapped[str] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(String(500))
    capacity: Mapped[int | None]
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="scheduled")
    # The published event: UID, where it is, its ETag and SEQUENCE as we last wrote or saw them.
    uid: Mapped[str | None] = mapped_column(String(300), unique=True)
    href: Mapped[str | None] = mapped_column(String(1000))
    etag: Mapped[str | None] = mapped_column(String(300))
    sequence: Mapped[int] = mapped_column(default=0)
    calendar_state: Mapped[str] = mapped_column(String(20), default="unpublished")
    published_at: Mapped[datetime | None]
    # When the daemon invites the enrolled students (`session add --invite-at`); None:
    # `[invitation] send_days_before` days before the start, if that is set.
    invite_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    enrollments: Mapped[list[Enrollment]] = relationship(
        back_populates="session", cascade="all, delete-orphan", order_by="Enrollment.id"
    )


class Person(Base):
    """A student, identified by e-mail address (stored lower-cased, so unique ignoring case)."""

    __tablename__ = "people"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="person")


class Enrollment(Base):
    """A person in a session: their status and their calendar status (the Calendar column)."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("session_id", "person_id", name="session_person"),
        CheckConstraint(_in("status", EnrollmentStatus), name="status"),
        CheckConstraint(_in("calendar_status", CalendarStatus), name="calendar_status"),
        CheckConstraint(
            "calendar_seen IS NULL OR " + _in("calendar_seen", CalendarStatus),
            name="calendar_seen",
        ),
        CheckConstraint(_in("delivery_status", ServerDelivery), name="delivery_status"),
    )

    session_id: Mapped[int] = mapped_column(ForeignKey("training_sessions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(20), default="enrolled")
    # Waitlist order is the time the student joined the waitlist.
    waitlisted_at: Mapped[datetime | None]
    calendar_status: Mapped[str] = mapped_column(String(20), default="not_invited")
    # Why the calendar status is what it is when it is not a student's answer ("rescheduled").
    calendar_reason: Mapped[str | None] = mapped_column(String(50))
    invited_at: Mapped[datetime | None]
    responded_at: Mapped[datetime | None]
    # iTIP order of the answer shown: the SEQUENCE and DTSTAMP it answered.
    answer_sequence: Mapped[int | None]
    answer_dtstamp: Mapped[datetime | None]
    # While the answer shown was recorded by hand (`tmcaldav answer`): the calendar
    # status the server still holds for the student, which is not their news. None when
    # the answer shown came from the calendar (then it is what the server holds).
    calendar_seen: Mapped[str | None] = mapped_column(String(20))
    # Server mode: what the CalDAV server last said it did with the invitation (its
    # SCHEDULE-STATUS, as stored, and that in words); None when never checked.
    delivery_status: Mapped[str | None] = mapped_column(String(20))
    schedule_status: Mapped[str | None] = mapped_column(String(200))
    delivery_checked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    session: Mapped[TrainingSession] = relationship(back_populates="enrollments")
    person: Mapped[Person] = relationship(back_populates="enrollments", lazy="joined")
    notes: Mapped[list[Note]] = relationship(
        back_populates="enrollment", cascade="all, delete-orphan", order_by="Note.id"
    )
    responses: Mapped[list[Response]] = relationship(
        back_populates="enrollment", cascade="all, delete-orphan", order_by="Response.id"
    )
    schedule_checks: Mapped[list[ScheduleCheck]] = relationship(
        back_populates="enrollment", cascade="all, delete-orphan", order_by="ScheduleCheck.id"
    )


class Response(OfEnrollment, Base):
    """One answer as it was seen: the history behind the Calendar column."""

    __tablename__ = "responses"
    __table_args__ = (
        CheckConstraint(_in("calendar_status", CalendarStatus), name="calendar_status"),
        CheckConstraint(_in("source", ResponseSource), name="source"),
        CheckConstraint(_in("evidence", AnswerEvidence), name="evidence"),
    )

    calendar_status: Mapped[str] = mapped_column(String(20))
    responded_at: Mapped[datetime]
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)
    sequence: Mapped[int | None]
    dtstamp: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(50))
    # Where responded_at comes from (AnswerEvidence); None for answers recorded before
    # tmcaldav kept it, and for the organizer's own changes (a reschedule's reset).
    evidence: Mapped[str | None] = mapped_column(String(20))

    enrollment: Mapped[Enrollment] = relationship(back_populates="responses")


class ScheduleCheck(OfEnrollment, Base):
    """What the CalDAV server said it did with one student's invitation (server mode).

    Written after each write that should reach the student (invite, resend, reschedule,
    update), and by a poll that finds the server's status changed: the history behind
    the enrollment's ``delivery_status``.
    """

    __tablename__ = "schedule_checks"
    __table_args__ = (
        CheckConstraint(_in("delivery_status", ServerDelivery), name="delivery_status"),
    )

    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The event's SEQUENCE as written.
    sequence: Mapped[int | None]
    delivery_status: Mapped[str] = mapped_column(String(20))
    # SCHEDULE-STATUS exactly as the server stored it; None: there was none.
    schedule_status: Mapped[str | None] = mapped_column(String(200))
    # Why it was checked: invite, resend, reschedule, update, or poll.
    reason: Mapped[str | None] = mapped_column(String(20))

    enrollment: Mapped[Enrollment] = relationship(back_populates="schedule_checks")


class Note(OfEnrollment, Base):
    """A follow-up note on an enrollment ("phoned, will come")."""

    __tablename__ = "notes"

    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    author: Mapped[str | None] = mapped_column(String(100))

    enrollment: Mapped[Enrollment] = relationship(back_populates="notes")


class Suggestion(Base):
    """Advice from a plugin; the dedupe key keeps the same advice from being given twice."""

    __tablename__ = "suggestions"
    __table_args__ = (CheckConstraint(_in("state", SuggestionState), name="state"),)

    session_id: Mapped[int] = mapped_column(
        ForeignKey("training_sessions.id", ondelete="CASCADE"), index=True
    )
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    plugin: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), default="open")
    dedupe_key: Mapped[str] = mapped_column(String(500), unique=True)
    # Kind-specific details, e.g. the other session's key for offer_other_session.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    # What the advice was made from (tmcaldav.hooks.premises); None for old suggestions.
    premise: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Why a withdrawn suggestion went away, in plain words.
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)


class Outbox(Base):
    """A change waiting for its hooks; written with the change, marked done with the results."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "done_at"),)

    # Unique per change: hooks and webhook receivers use it as an idempotency key.
    event_id: Mapped[str] = mapped_column(String(100), unique=True)
    hook: Mapped[str] = mapped_column(String(50))
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_sessions.id", ondelete="CASCADE")
    )
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class SyncState(Base):
    """Per calendar: the sync token, ctag, and the daemon's backoff, persisted across restarts."""

    __tablename__ = "sync_state"

    calendar_url: Mapped[str] = mapped_column(String(1000), unique=True)
    sync_token: Mapped[str | None] = mapped_column(String(1000))
    ctag: Mapped[str | None] = mapped_column(String(300))
    last_poll_at: Mapped[datetime | None]
    failures: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Delivery(OfEnrollment, Outgoing, Base):
    """One iMIP message to one attendee (imip mode): what was sent, or why it failed.

    A delivery that is `sent` is never sent again, except on purpose (`invite --resend`).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(_in("state", DeliveryState), name="state"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )

    # REQUEST, CANCEL (or a REFRESH answered with a REQUEST).
    method: Mapped[str] = mapped_column(String(20))
    sequence: Mapped[int]
    # Why it is sent: invite, update, reschedule, cancel, remove, resend or refresh.
    reason: Mapped[str | None] = mapped_column(String(20))
    message_id: Mapped[str | None] = mapped_column(String(300))
    # Where the message goes when it is not the person's address now: the CANCEL to an
    # address that `person edit --email` replaced.
    address: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reminder(OfEnrollment, Base):
    """A reminder sent to one student (`tmcaldav remind`): when, and how it travelled."""

    __tablename__ = "reminders"
    __table_args__ = (CheckConstraint(_in("channel", ReminderChannel), name="channel"),)

    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(10))
    # The calendar status the student had when reminded, and the event's SEQUENCE.
    calendar_status: Mapped[str] = mapped_column(String(20))
    sequence: Mapped[int]


class Notice(Outgoing, Base):
    """A plain-text mail to the administrator that a plugin asked for (a digest, an alert).

    The unique key makes it once: the same notice is stored, and sent, one time.
    """

    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(_in("state", NoticeState), name="state"),
        Index("ix_notices_due", "state", "next_attempt_at"),
    )

    key: Mapped[str] = mapped_column(String(500), unique=True)
    plugin: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    # Addresses; empty: the organizer's mailbox ([scheduling] organizer_email).
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MailRefusal(Base):
    """An incoming iMIP message that was refused (spoofed, unknown, broken): for `doctor`."""

    __tablename__ = "mail_refusals"

    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    sender: Mapped[str | None] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)


# ---- the web interface ------------------------------------------------------------------------

WEB_ROLES = ("admin", "viewer")


class WebUser(Base):
    """Someone who may log in to the web interface: admins act, viewers read."""

    __tablename__ = "web_users"
    __table_args__ = (CheckConstraint(_in("role", WEB_ROLES), name="role"),)

    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="viewer")
    # scrypt$N$r$p$salt$hash (base64): never the password itself.
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="ApiToken.id"
    )


class ApiToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is kept (it is shown once)."""

    __tablename__ = "api_tokens"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("web_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]

    user: Mapped[WebUser] = relationship(back_populates="tokens")


class WebThrottle(Base):
    """A counter that slows the web interface's callers down, shared by every web node.

    One row per (scope, key): failed logins per user name and per client address, and
    answers per answer link. `key` is the SHA-256 of what is counted (a link's token
    is a credential and is never kept). Rows are rewritten with one atomic upsert, so
    two nodes counting at once both count.
    """

    __tablename__ = "web_throttles"
    __table_args__ = (
        UniqueConstraint("scope", "key", name="scope_key"),
        Index("ix_web_throttles_last_at", "last_at"),
    )

    scope: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(64))
    hits: Mapped[int]
    # When the current count started (a window's start) and when it last grew.
    started_at: Mapped[datetime]
    last_at: Mapped[datetime]


class Change(Base):
    """The change feed: one row per session touched by a committed unit of work.

    Written in the transaction that makes the change (see store/changes.py), so a
    reader that has seen change N has seen everything committed before it. A NULL
    session means "may concern any session" (a person renamed, a bulk update).
    """

    __tablename__ = "changes"

    # No foreign key: a deleted session's last change must still be seen.
    session_id: Mapped[int | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncRetry(Base):
    """An object the poll could not read or parse: fetched again on the next polls.

    Written in the transaction that moves the sync token past it, so the token never
    passes an answer that was not read. `first_seen_at` is when the poll first saw it
    change: the time its answer is dated with when it finally reads.
    """

    __tablename__ = "sync_retries"
    __table_args__ = (UniqueConstraint("sync_state_id", "href", name="state_href"),)

    sync_state_id: Mapped[int] = mapped_column(ForeignKey("sync_state.id", ondelete="CASCADE"))
    href: Mapped[str] = mapped_column(String(1000))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=1)
    last_error: Mapped[str | None] = mapped_column(Text)


class PluginAttempt(Base):
    """One plugin's calls of one hook for one outbox event: failures in a row, success,
    or parked (given up after `[plugins] max_attempts` failures).

    Kept only for events that were not done in one go, so a re-run calls only the
    plugins that have not succeeded, and `doctor` can name the parked ones.
    """

    __tablename__ = "plugin_attempts"
    __table_args__ = (
        UniqueConstraint("outbox_id", "plugin", "hook", name="outbox_plugin_hook"),
        Index("ix_plugin_attempts_parked", "parked_at"),
    )

    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"))
    plugin: Mapped[str] = mapped_column(String(100))
    hook: Mapped[str] = mapped_column(String(50))
    failures: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    succeeded_at: Mapped[datetime | None]
    parked_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DaemonRecord(Base):
    """A running daemon, active or standing by: who and where it is, and when it was last
    heard from (times are the database's clock on PostgreSQL, so hosts need not agree).

    Written when it starts, takes over and at each heartbeat; removed when it stops.
    """

    __tablename__ = "daemons"
    __table_args__ = (CheckConstraint(_in("role", DaemonRole), name="role"),)

    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    role: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    active_since: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    # PostgreSQL: the server process of the daemon's lock connection, which a standby
    # ends when the daemon falls silent (its lock goes with it).
    backend_pid: Mapped[int | None]
