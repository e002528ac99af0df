"""The change feed: which sessions each committed unit of work touched, for live pages.

Every transaction that changes a session, its enrollments, answers, notes, mails or
suggestions writes one `changes` row per session it touched, in that same
transaction (a SQLAlchemy `before_commit` listener: no service has to remember it).
A reader that has seen change N has therefore seen every change committed before
it: the web interface polls `SELECT … FROM changes WHERE id > N` (cheap: the
primary key) and pushes the sessions that changed to the pages that show them.

On PostgreSQL, ids come from a sequence and concurrent transactions could commit
out of id order; a transaction-level advisory lock taken just before the row is
written keeps commits in id order, so a reader never skips an id that commits
late. The same transaction also sends `NOTIFY tmcaldav_changes` with the newest
change id: PostgreSQL delivers it only when (and only if) the transaction commits,
so every web node LISTENing on the channel wakes at once and reads "after N" — the
row it is woken for is already visible. On SQLite (one machine, one web process) the
readers keep polling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, delete, event, insert, inspect, select, text
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from tmcaldav.store.model import (
    Change,
    Delivery,
    Enrollment,
    Note,
    Person,
    Response,
    Suggestion,
    TrainingSession,
)

# session.info key of what a transaction touched so far.
_PENDING = "tmcaldav_changes"
# Tables whose bulk (Core) updates, inserts and deletes may touch any session.
_WATCHED_TABLES = frozenset(
    m.__tablename__
    for m in (TrainingSession, Enrollment, Response, Note, Suggestion, Delivery, Person)
)
# Any key; the lock that keeps change ids committing in order on PostgreSQL.
_ORDER_LOCK = 0x746D6364  # "tmcd"
# The channel every change is announced on (PostgreSQL); the payload is the newest id.
CHANNEL = "tmcaldav_changes"
# Changes kept: the feed's readers are live pages, which catch up from the newest.
KEEP = 20_000


@dataclass
class _Touched:
    sessions: set[int] = field(default_factory=set)
    enrollments: set[int] = field(default_factory=set)
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.sessions or self.enrollments or self.everything)


def _touched(db: Session) -> _Touched:
    found = db.info.get(_PENDING)
    if found is None:
        found = db.info[_PENDING] = _Touched()
    return found


def _note(touched: _Touched, obj: object) -> None:
    if isinstance(obj, TrainingSession):
        if obj.id is not None:
            touched.sessions.add(obj.id)
    elif isinstance(obj, Enrollment | Suggestion):
        if obj.session_id is not None:
            touched.sessions.add(obj.session_id)
    elif isinstance(obj, Response | Note | Delivery):
        if obj.enrollment_id is not None:
            touched.enrollments.add(obj.enrollment_id)
    elif isinstance(obj, Person):
        # A renamed student shows on every session page they are in.
        touched.everything = True


def _noted(touched: _Touched, obj: object) -> bool:
    """True when noting `obj` could add nothing: what it would note is noted already, or
    it is no table of the feed. Checked first, because `is_modified` compares every
    attribute's history and a unit of work dirties many rows of few sessions (an invite:
    thirty enrollments of one session; a full sync: every enrollment)."""
    if touched.everything:
        return True
    if isinstance(obj, TrainingSession):
        return obj.id in touched.sessions
    if isinstance(obj, Enrollment | Suggestion):
        return obj.session_id in touched.sessions
    if isinstance(obj, Response | Note | Delivery):
        return obj.enrollment_id in touched.enrollments
    return not isinstance(obj, Person)


def _after_flush(db: Session, _context: Any) -> None:
    touched = _touched(db)
    for obj in db.new:
        _note(touched, obj)
    for obj in db.deleted:
        _note(touched, obj)
    for obj in db.dirty:
        if not _noted(touched, obj) and _modified(obj):
            _note(touched, obj)


def _modified(obj: object) -> bool:
    """`Session.is_modified(obj, include_collections=False)`, looking only at the
    attributes set since the row was loaded: `is_modified` walks every attribute and
    relationship of the mapper, and a full sync dirties every session."""
    state = inspect(obj)
    for key in state.committed_state:
        if hasattr(state.manager[key].impl, "get_collection"):
            continue  # a collection: what is in it is rows of their own
        if state.attrs[key].history.has_changes():
            return True
    return False


def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _WATCHED_TABLES:
        # A bulk statement (a suggestion decided, mails marked sent): which sessions
        # it touched is not known here, so every page looks again.
        _touched(state.session).everything = True


def _before_commit(db: Session) -> None:
    db.flush()  # what is still pending belongs to this transaction too
    touched = db.info.pop(_PENDING, None)
    if not touched:
        return
    sessions = set(touched.sessions)
    if touched.enrollments:
        sessions |= set(
            db.scalars(
                select(Enrollment.session_id).where(Enrollment.id.in_(touched.enrollments))
            )
        )
    postgresql = db.get_bind().dialect.name == "postgresql"
    if postgresql:
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ORDER_LOCK})
    rows = (
        [{"session_id": None}]
        if touched.everything
        else [{"session_id": s} for s in sorted(sessions)]
    )
    # One Core INSERT … RETURNING for all rows, not ORM objects and a flush (nor the
    # ORM's bulk path): a full sync writes a row for every session, an invite one, and
    # nothing reads these rows back here.
    table = Change.__table__
    assert isinstance(table, Table)
    newest = max(db.connection().execute(insert(table).returning(table.c.id), rows).scalars())
    if postgresql:
        # Delivered at commit, after the rows are visible; never for a rollback.
        db.execute(
            text("SELECT pg_notify(:channel, :newest)"),
            {"channel": CHANNEL, "newest": str(newest)},
        )
    if newest % 1000 == 0:
        # Now and then, forget what no live page can still be waiting for.
        db.execute(delete(Change).where(Change.id <= newest - KEEP))
        db.info.pop(_PENDING, None)


def _forget(db: Session) -> None:
    db.info.pop(_PENDING, None)


def watch_changes(sessions: sessionmaker[Session]) -> None:
    """Make every transaction of `sessions` write the change feed as it commits."""
    event.listen(sessions, "after_flush", _after_flush)
    event.listen(sessions, "do_orm_execute", _on_execute)
    event.listen(sessions, "before_commit", _before_commit)
    event.listen(sessions, "after_rollback", _forget)


def latest_change(db: Session) -> int:
    """The id of the newest change (0 when there is none)."""
    return db.scalar(select(Change.id).order_by(Change.id.desc()).limit(1)) or 0


def changes_after(db: Session, after: int, limit: int = 5000) -> list[tuple[int, int | None]]:
    """(change id, session id or None) of the changes after `after`, oldest first."""
    rows = db.execute(
        select(Change.id, Change.session_id)
        .where(Change.id > after)
        .order_by(Change.id)
        .limit(limit)
    )
    return [(row.id, row.session_id) for row in rows]


def changed_since(db: Session, session_id: int, after: int) -> int | None:
    """The newest change after `after` that concerns the session, or None.

    When the feed was pruned past `after`, changes may have been forgotten: that
    counts as a change (the newest id), so a page that was away long looks again.
    """
    oldest = db.scalar(select(Change.id).order_by(Change.id).limit(1))
    if oldest is not None and oldest > after + 1:
        return latest_change(db)
    return db.scalar(
        select(Change.id)
        .where(
            Change.id > after,
            (Change.session_id == session_id) | Change.session_id.is_(None),
        )
        .order_by(Change.id.desc())
        .limit(1)
    )
