"""One daemon per store: a file lock beside a SQLite store, an advisory lock on PostgreSQL.

Both are released by the operating system or the database when the process dies, so
a crashed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tmcaldav.errors import TryLater
from tmcaldav.store import Store, StoreUnavailable

# pg_try_advisory_lock takes a bigint; this one is "tmcaldav" in ASCII.
ADVISORY_KEY = 0x746D63616C646176
# SQL for the rows of pg_locks that show the lock held (add "AND pid = ..." for whom):
# a bigint key shows as its high and low 32 bits, with objsubid 1.
LOCK_HELD = (
    f"pg_locks WHERE locktype = 'advisory' AND classid = {ADVISORY_KEY >> 32} "
    f"AND objid = {ADVISORY_KEY & 0xFFFFFFFF} AND objsubid = 1 AND granted"
)
# SQLSTATE of a lock wait that ran out of lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"


class AlreadyRunning(TryLater):
    """Another tmcaldav daemon holds the store."""


class StoreLock:
    """Held for the daemon's lifetime; `acquire` raises AlreadyRunning when taken."""

    def __init__(self, store: Store, lock_file: str | None = None):
        self.store = store
        self.lock_file = lock_file
        self._fd: int | None = None
        self._connection: Connection | None = None
        # How soon PostgreSQL must notice the holder is gone (machine down, network cut):
        # TCP keepalives and tcp_user_timeout on the lock's connection. The daemon sets
        # it to [daemon] takeover_after.
        self.dead_peer_after = 60.0
        self._engine: Engine | None = None

    def path(self) -> Path:
        """The lock file for a SQLite store."""
        if self.lock_file:
            return Path(self.lock_file)
        database = make_url(self.store.url).database or "tmcaldav"
        return Path(database + ".lock")

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder."""
        if self.store.backend == "postgresql":
            connection = self._connect()
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
            ).scalar()
            connection.commit()
            if not got:
                connection.close()
                raise AlreadyRunning(
                    f"another tmcaldav daemon is running on the store {self.store.safe_url} "
                    "(PostgreSQL advisory lock held); stop it first"
                )
            self._connection = connection
            return
        path = self.path()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreUnavailable(
                f"cannot open the lock file {path} ({e.strerror}); set [daemon] lock_file "
                "to a writable path"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another tmcaldav daemon (pid {holder}) is running on this store "
                f"(lock file {path}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._connection is not None:
            # Unlock before the connection goes back to the pool: a pooled connection
            # would otherwise keep holding the lock.
            with contextlib.suppress(Exception):
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY}
                )
                self._connection.commit()
            self._connection.close()
            self._connection = None

    # ---- PostgreSQL: the lock's own connection, and waiting for the lock ---------------

    @property
    def connection(self) -> Connection | None:
        """PostgreSQL: the connection that holds (or waits for) the lock."""
        return self._connection

    def _connect(self) -> Connection:
        """A connection of its own (not from the store's pool), with keepalives."""
        if self._engine is None:
            self._engine = create_engine(
                self.store.url,
                poolclass=NullPool,
                connect_args=keepalive_args(self.store.url, self.dead_peer_after),
            )
        return self._engine.connect()

    def wait(self, seconds: float) -> bool:
        """PostgreSQL: wait up to `seconds` for the lock; True once it is ours.

        The wait is PostgreSQL's own (pg_advisory_lock under lock_timeout), so the lock
        is ours the moment its holder's connection ends, not at our next look. The
        connection stays open between waits; StoreUnavailable when the server cannot be
        reached (the next wait connects again).
        """
        if self._connection is None:
            try:
                self._connection = self._connect()
            except OperationalError as e:
                raise StoreUnavailable(
                    f"cannot reach the store {self.store.safe_url}: {e.orig}"
                ) from e
        connection = self._connection
        try:
            # LOCAL: the timeout ends with this transaction, whatever its outcome.
            connection.execute(text(f"SET LOCAL lock_timeout = {max(1, int(seconds * 1000))}"))
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            connection.commit()
        except OperationalError as e:
            if getattr(e.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                connection.rollback()
                return False
            self.drop()
            raise StoreUnavailable(f"lost the store {self.store.safe_url}: {e.orig}") from e
        return True

    def drop(self) -> None:
        """Forget a broken lock connection (whatever it held is gone with it)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.invalidate()
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def keepalive_args(url: str, seconds: float) -> dict[str, object]:
    """libpq connection parameters that notice a dead peer within about `seconds`.

    Both ends: the client's (keepalives*, tcp_user_timeout), so the holder notices a
    dead server, and the server's (the same settings, passed in `options`), so the
    server notices that the holder's machine is gone and releases the lock. Unix
    sockets ignore them: there the kernel tells at once.
    """
    idle = max(1, int(seconds / 2))
    interval = max(1, int(seconds / 6))
    count = 3
    user_timeout = max(1000, int(seconds * 1000))
    server = (
        f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} "
        f"-c tcp_keepalives_count={count} -c tcp_user_timeout={user_timeout}"
    )
    given = make_url(url).query.get("options")
    earlier = [given] if isinstance(given, str) else list(given or ())
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": user_timeout,
        "options": " ".join([*earlier, server]),
    }
