"""More than one machine: a daemon's hold on the store — standing by, taking over, the
heartbeat, and the fence that keeps a daemon that lost the store from writing.

How it works (PostgreSQL; a SQLite store lives on one machine and has no standby):

- The store lock is a PostgreSQL advisory lock held by one connection of the active
  daemon. PostgreSQL releases it when that connection ends: the process crashed or was
  killed (the kernel closes the socket at once), or its machine is gone (the server's
  TCP keepalives and tcp_user_timeout, set on that connection, notice within about
  `takeover_after`).
- A standby waits for the lock inside PostgreSQL (pg_advisory_lock under a lock
  timeout), so it has the lock the moment it is released, and between waits it looks
  at the `daemons` table.
- A paused process (SIGSTOP, a frozen VM, a long pause of any kind) keeps its
  connection open and its kernel answers keepalives: PostgreSQL cannot tell. So the
  active daemon writes a heartbeat into its row every `takeover_after / 4`, from a
  thread of its own (a slow tick or a slow server never delays it), and a standby that
  sees it silent for longer than `takeover_after` ends the silent daemon's lock
  connection with pg_terminate_backend. That needs the standby's database role to be
  the active daemon's role (both daemons use the same [store] url: nothing to grant),
  or to have pg_signal_backend; without it, the standby says so and takes over only
  when PostgreSQL itself drops the connection.
- Fence: every transaction (and every read) of the active daemon first checks, on its
  own connection, that its lock connection still lives: that connection holds a second
  advisory lock of its own, which the transaction tries to take in shared mode (one
  cheap call; getting it means the lock connection has ended). When the new active
  daemon takes over, before it writes anything, it ends every other connection of the
  daemon it replaces (they carry its name in application_name) and waits until they
  are gone, so a transaction that passed its check before the takeover is rolled back,
  never committed after it. A daemon that wakes up after losing the lock therefore
  commits nothing: its heartbeat, its first read or its first write finds the lock
  gone, and it exits EXIT_FENCED (3).
- Nothing is lost or done twice: the new active daemon reads where the old one stopped
  (the sync token, the outbox, the time-hook records are all in the store, and every
  unit of work is one transaction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, delete, event, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from tmcaldav.domain import DaemonRole
from tmcaldav.store import Store, StoreError, StoreUnavailable
from tmcaldav.store.daemons import Fenced, beat, db_now, register, unregister
from tmcaldav.store.lock import LOCK_HELD, StoreLock
from tmcaldav.store.model import DaemonRecord

log = logging.getLogger(__name__)

# How long a new active daemon waits for the connections it ended to be gone.
GONE_WAIT = 5.0
# SQLSTATE: the role may not signal that backend.
INSUFFICIENT_PRIVILEGE = "42501"
# The longest a standby goes without looking at the active daemon's heartbeat.
LOOK_EVERY_MAX = 5.0

_ACTIVE = text(
    "SELECT d.host, d.pid, d.backend_pid, d.active_since, "
    "EXTRACT(EPOCH FROM timezone('UTC', clock_timestamp()) - d.heartbeat_at) AS silent, "
    f"EXISTS (SELECT 1 FROM {LOCK_HELD} AND pid = d.backend_pid) AS holds "
    "FROM daemons d WHERE d.role = 'active' ORDER BY d.active_since DESC LIMIT 1"
)
# Without pg_terminate_backend's own wait, which looks only every 100 ms: the lock
# wait notices the holder's end by itself, and `_end_connections_of` looks every 10 ms.
# pg_terminate_backend stays in the select list: in a WHERE clause PostgreSQL could
# call it before the conditions that choose whom it ends.
_TERMINATE_HOLDER = text(f"SELECT pg_terminate_backend(pid) FROM {LOCK_HELD} AND pid = :pid")
_TERMINATE_NAMED = text(
    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name = ANY(:names) AND pid <> pg_backend_pid()"
)
_STILL_THERE = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
# The fence: the active daemon's lock connection also holds an advisory lock of its own,
# (FENCE_CLASS, its row id), for as long as it lives. A transaction that could take that
# lock in shared mode knows the lock connection has ended. One advisory lock call:
# reading pg_locks instead would cost a scan of the whole lock table per transaction.
FENCE_CLASS = 0x746D6366  # "tmcf"
_FENCE_HOLD = text("SELECT pg_advisory_lock(:class, :me)")
_FENCE = "SELECT pg_try_advisory_xact_lock_shared({cls}, {me})"
# Run on the lock connection: that it runs at all proves the connection, and so the
# store lock, is still ours.
_ACTIVE_BEAT = text(
    "UPDATE daemons SET heartbeat_at = timezone('UTC', clock_timestamp()) "
    "WHERE id = :me AND role = 'active'"
)


def connection_name(record_id: int) -> str:
    """The application_name of a daemon's store connections, by its row in `daemons`."""
    return f"tmcaldav-daemon-{record_id}"


class Lease:
    """This daemon's hold on the store: its row in `daemons` and its heartbeat; on
    PostgreSQL also standing by, taking over, and the fence.

    `on_lost(reason)` is called once, from any thread, when the daemon no longer holds
    the store lock; from then on every transaction of the store raises Fenced.
    """

    def __init__(
        self,
        store: Store,
        lock: StoreLock,
        takeover_after: float,
        on_lost: Callable[[str], None],
    ):
        self.store = store
        self.lock = lock
        self.takeover_after = takeover_after
        self.postgres = store.backend == "postgresql"
        # Four heartbeats per takeover_after: one late heartbeat is never silence. On
        # SQLite nobody takes over; the heartbeat only tells `doctor` the daemon lives.
        self.beat_every = takeover_after / 4 if self.postgres else max(takeover_after / 4, 1.0)
        self.look_every = min(self.beat_every, LOOK_EVERY_MAX)
        lock.dead_peer_after = takeover_after
        self.record_id: int | None = None
        self.lock_pid: int | None = None
        self._fence_sql = ""
        self.lost: str | None = None
        # What a standby last saw, for the systemd status line.
        self.status = "standby: waiting for the store lock"
        # Whom this daemon replaced, for the log line when it becomes active.
        self.replaced: str | None = None
        # The silent daemon whose connection this standby ended: host, pid, silence (s).
        self._silenced: tuple[str, int, float] | None = None
        self._on_lost = on_lost
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._named = False
        self._told_privilege = False
        # The backend whose end this standby tried and was refused, while it stays silent.
        self._tried: int | None = None
        self._unreachable = False

    # ---- standing by -------------------------------------------------------------------

    def stand_by(
        self,
        should_stop: Callable[[], bool],
        pause: Callable[[float], None],
        tell: Callable[[str], None],
    ) -> bool:
        """Wait for the store lock; True once it is ours (then `activate`), False when
        `should_stop` says so first. `tell` gets a status line at every look."""
        while not should_stop():
            try:
                if self.lock.wait(self.look_every):
                    return True
                self._look()
            except (StoreUnavailable, DBAPIError) as e:
                self.lock.drop()
                if not self._unreachable:
                    log.warning("standing by, but the store cannot be reached: %s", _first_line(e))
                    self._unreachable = True
                tell("standby: the store cannot be reached; trying again")
                pause(self.look_every)
                continue
            if self._unreachable:
                log.info("the store is reachable again; standing by")
                self._unreachable = False
            tell(self.status)
        return False

    def _look(self) -> None:
        """Refresh our row; end the active daemon's lock connection if it fell silent."""
        connection = self._lock_connection()
        if self.record_id is None or beat(connection, self.record_id) == 0:
            # Our row is missing the first time, or was removed while the store was away.
            self.record_id = register(
                connection, DaemonRole.STANDBY, None, forget_after=10 * self.takeover_after
            )
            connection.commit()
            self._name_store_connections()
            log.info(
                "standing by: this daemon takes over when the active one stops or is "
                "silent for %g s",
                self.takeover_after,
            )
        active = connection.execute(_ACTIVE).first()
        connection.commit()
        if active is None:
            self.status = "standby: waiting for the store lock (no active daemon listed)"
            return
        host, pid, backend_pid, since, silent, holds = active
        self.status = (
            f"standby: the active daemon is on {host} (pid {pid}, active since "
            f"{_clock(since)}), heard from {silent:.0f} s ago"
        )
        if holds and silent > self.takeover_after:
            self._end_silent(connection, host, pid, backend_pid, float(silent))
        else:
            self._tried = None

    def _end_silent(
        self, connection: Connection, host: str, pid: int, backend_pid: int, silent: float
    ) -> None:
        if self._tried == backend_pid:
            # Not allowed the first time: say it once, look again when it is heard from.
            self.status += "; silent, and this standby may not end its connection"
            return
        self._tried = backend_pid
        log.warning(
            "the active daemon on %s (pid %d) has been silent for %.1f s (takeover_after = "
            "%g s): ending its store connection to take over",
            host,
            pid,
            silent,
            self.takeover_after,
        )
        try:
            connection.execute(_TERMINATE_HOLDER, {"pid": backend_pid})
            connection.commit()
        except DBAPIError as e:
            connection.rollback()
            if getattr(e.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise
            if not self._told_privilege:
                log.error(
                    "cannot end the silent daemon's connection (%s): run both daemons with "
                    "the same database role, or GRANT pg_signal_backend to this one; until "
                    "then this standby takes over only when PostgreSQL notices the "
                    "connection is gone",
                    _first_line(e),
                )
                self._told_privilege = True
            return
        self._tried = None
        self._silenced = (host, pid, silent)

    # ---- becoming active -----------------------------------------------------------------

    def activate(self) -> None:
        """We hold the lock: end what is left of the daemon we replace, take the active
        row, install the fence and start the heartbeat."""
        if self.postgres:
            self._activate_postgres()
        else:
            with self.store.engine.begin() as connection:
                # A daemon that died on this machine left its row: we replace it.
                connection.execute(
                    delete(DaemonRecord).where(DaemonRecord.role == DaemonRole.ACTIVE.value)
                )
                self.record_id = register(
                    connection, DaemonRole.ACTIVE, None, forget_after=10 * self.takeover_after
                )
        self._thread = threading.Thread(
            target=self._beat_loop, name="tmcaldav-heartbeat", daemon=True
        )
        self._thread.start()

    def _activate_postgres(self) -> None:
        connection = self._lock_connection()
        self.lock_pid = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        if self.record_id is None:
            self.record_id = register(
                connection, DaemonRole.ACTIVE, self.lock_pid, forget_after=10 * self.takeover_after
            )
        old = connection.execute(
            select(DaemonRecord.id, DaemonRecord.host, DaemonRecord.pid).where(
                DaemonRecord.role == DaemonRole.ACTIVE.value, DaemonRecord.id != self.record_id
            )
        ).all()
        connection.commit()
        if old:
            self._end_connections_of([row.id for row in old])
            self.replaced = ", ".join(self._describe(row.host, row.pid) for row in old)
        now = db_now(connection)
        connection.execute(
            delete(DaemonRecord).where(
                DaemonRecord.role == DaemonRole.ACTIVE.value, DaemonRecord.id != self.record_id
            )
        )
        taken = connection.execute(
            update(DaemonRecord)
            .where(DaemonRecord.id == self.record_id)
            .values(
                role=DaemonRole.ACTIVE.value,
                active_since=now,
                heartbeat_at=now,
                backend_pid=self.lock_pid,
            )
        ).rowcount
        if not taken:
            # Our standby row went missing (removed while the store was away): write it
            # again under the same id, which our connections carry in their name.
            register(
                connection,
                DaemonRole.ACTIVE,
                self.lock_pid,
                forget_after=10 * self.takeover_after,
                row_id=self.record_id,
            )
        connection.execute(_FENCE_HOLD, {"class": FENCE_CLASS, "me": self.record_id})
        connection.commit()
        self._fence_sql = _FENCE.format(cls=FENCE_CLASS, me=int(self.record_id))
        self._name_store_connections()
        self.store.fence = self.fence

    def _end_connections_of(self, record_ids: list[int]) -> None:
        """End every store connection of the daemons we replace, and wait until they are
        gone: a transaction of theirs still open (paused) is rolled back, not committed
        after we start writing."""
        connection = self._lock_connection()
        try:
            ended = [
                pid
                for pid, signalled in connection.execute(
                    _TERMINATE_NAMED, {"names": [connection_name(i) for i in record_ids]}
                )
                if signalled
            ]
            connection.commit()
        except DBAPIError as e:
            connection.rollback()
            if getattr(e.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise
            log.error(
                "cannot end the store connections of the daemon this one replaces (%s): a "
                "transaction it left open could still commit; run both daemons with the "
                "same database role, or GRANT pg_signal_backend to this one",
                _first_line(e),
            )
            return
        if not ended:
            return
        deadline = time.monotonic() + GONE_WAIT
        # pg_stat_activity is read once per transaction: one transaction per look.
        while connection.execute(_STILL_THERE, {"pids": ended}).scalar_one():
            connection.commit()
            if time.monotonic() > deadline:
                log.error(
                    "store connections of the daemon this one replaces are still there "
                    "%g s after they were ended (pids %s); going on",
                    GONE_WAIT,
                    ", ".join(map(str, ended)),
                )
                break
            time.sleep(0.01)
        connection.commit()
        log.info("ended %d store connection(s) of the daemon this one replaces", len(ended))

    def _describe(self, host: str, pid: int) -> str:
        if self._silenced is not None and self._silenced[:2] == (host, pid):
            return f"{host} (pid {pid}), silent for {self._silenced[2]:.1f} s"
        return f"{host} (pid {pid})"

    # ---- the fence -------------------------------------------------------------------------

    def fence(self, session: Session) -> None:
        """Raise Fenced unless our lock connection still holds the store lock.

        Run by Store.transaction() and Store.scratch() of the active daemon, first, on
        their own connection."""
        if self.lost is None:
            # Straight on the driver's connection: through the ORM the same call costs
            # twice as much, and it runs in every transaction (bench/failover.py).
            connection = session.connection()
            driver = connection.connection.dbapi_connection
            assert driver is not None
            try:
                cursor = driver.cursor()
                try:
                    cursor.execute(self._fence_sql)
                    row = cursor.fetchone()
                finally:
                    cursor.close()
            except self.store.engine.dialect.loaded_dbapi.Error as e:
                # Past SQLAlchemy, so tell it: the connection is dropped, not reused,
                # and the transaction ends without a word to a dead server.
                connection.invalidate(e)
                raise StoreError(
                    f"store {self.store.safe_url}: {_first_line(e)}; nothing was changed"
                ) from e
            if row is not None and not row[0]:
                return
            self._lose("its lock connection to the store has ended")
        raise Fenced(
            f"this daemon no longer holds the store lock ({self.lost}); another daemon "
            "may be active, so it writes nothing more"
        )

    def _lose(self, reason: str) -> None:
        with self._guard:
            if self.lost is not None:
                return
            self.lost = reason
        self._on_lost(reason)

    # ---- the heartbeat -------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.beat_every) and self.lost is None:
            if self.postgres:
                self._beat_postgres()
            else:
                self._beat_sqlite()

    def _beat_postgres(self) -> None:
        connection = self.lock.connection
        if connection is None:
            return
        try:
            touched = connection.execute(_ACTIVE_BEAT, {"me": self.record_id}).rowcount
            connection.commit()
        except OperationalError as e:
            self._lose(f"its lock connection to the store dropped: {_first_line(e)}")
            return
        except DBAPIError as e:
            log.warning("the heartbeat could not be written: %s", _first_line(e))
            connection.rollback()
            return
        if touched == 0:
            self._lose("the store no longer lists it as the active daemon holding the lock")

    def _beat_sqlite(self) -> None:
        assert self.record_id is not None
        try:
            with self.store.engine.begin() as connection:
                beat(connection, self.record_id)
        except DBAPIError as e:
            # Only `doctor` reads it on SQLite: a busy store may skip one.
            log.debug("the heartbeat could not be written: %s", _first_line(e))

    # ---- stopping ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the heartbeat and remove our row (not when fenced: then we write nothing).

        The fence stays installed: nothing of this process writes after it stopped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, self.beat_every))
            if self._thread.is_alive():
                return  # stuck in the store: leave the row, the next daemon forgets it
        if self.lost is not None or self.record_id is None:
            return
        try:
            if self.postgres:
                connection = self.lock.connection
                if connection is not None:
                    unregister(connection, self.record_id)
                    connection.commit()
            else:
                with self.store.engine.begin() as connection:
                    unregister(connection, self.record_id)
        except (DBAPIError, StoreError) as e:
            log.debug("could not remove this daemon's row: %s", _first_line(e))

    # ---- helpers ---------------------------------------------------------------------

    def _lock_connection(self) -> Connection:
        connection = self.lock.connection
        if connection is None:
            raise StoreUnavailable(f"the store lock's connection to {self.store.safe_url} is gone")
        return connection

    def _name_store_connections(self) -> None:
        """Name this daemon's store connections after its row, so the daemon that
        replaces it can end them (`_end_connections_of`)."""
        if self._named or self.record_id is None:
            return
        name = connection_name(self.record_id)

        def named(
            _dialect: object, _record: object, _args: object, params: dict[str, object]
        ) -> None:
            params["application_name"] = name

        event.listen(self.store.engine, "do_connect", named)
        # Connections opened before carry no name: close them (none is in use yet).
        self.store.engine.dispose()
        self._named = True


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    return (str(orig) if orig is not None else str(error)).strip().splitlines()[0]


def _clock(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else "?"
