"""One daemon per store: a file lock beside a SQLite store, an advisory lock on PostgreSQL.

Both are released by the operating system or the database when the process dies, so
a crashed daemon never leaves a stale lock behind. The holder writes who it is (its
pid and role: the daemon, `run --once`, or `tmcaldav sync`) into the lock file, or into
its PostgreSQL connection's application_name, so the one that loses the race is told
who holds the store, and what to do about it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tmcaldav.errors import TryLater
from tmcaldav.files import open_private
from tmcaldav.store import Store, StoreUnavailable

# pg_try_advisory_lock takes a bigint; this one is "tmcaldav" in ASCII.
ADVISORY_KEY = 0x746D63616C646176
# Roles that take the lock, as the one that loses the race is told.
ROLES = {
    "daemon": "the tmcaldav daemon",
    "once": "a `tmcaldav run --once`",
    "sync": "a `tmcaldav sync`",
}
# A holder that has just taken the lock may not have written its name yet: how long
# the one that lost the race waits to read it.
NAME_WAIT = 1.0
# SQL for the rows of pg_locks that show the lock held (add "AND pid = ..." for whom):
# a bigint key shows as its high and low 32 bits, with objsubid 1.
LOCK_HELD = (
    f"pg_locks WHERE locktype = 'advisory' AND classid = {ADVISORY_KEY >> 32} "
    f"AND objid = {ADVISORY_KEY & 0xFFFFFFFF} AND objsubid = 1 AND granted"
)
# SQLSTATE of a lock wait that ran out of lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"


class AlreadyRunning(TryLater):
    """Another tmcaldav process (`holder`: daemon, once, sync) holds the store."""

    def __init__(self, message: str, holder: str | None = None):
        super().__init__(message)
        self.holder = holder


def _advice(mine: str, holder: str | None) -> str:
    """What the process that lost the race should do."""
    if holder == "daemon":
        if mine == "sync":
            return (
                "it polls by itself (`systemctl kill -s USR1 tmcaldav`, or kill -USR1 on "
                "that pid, polls now)"
            )
        return "stop it first"
    return "try again when it has finished"


class StoreLock:
    """Held for the daemon's lifetime; `acquire` raises AlreadyRunning when taken.

    `role` says who takes it ("daemon", "once" or "sync"), for the message another
    process gets.
    """

    def __init__(self, store: Store, lock_file: str | None = None, role: str = "daemon"):
        self.store = store
        self.lock_file = lock_file
        self.role = role
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
            self._acquire_advisory()
            return
        path = self.path()
        try:
            fd = open_private(path)
        except OSError as e:
            raise StoreUnavailable(
                f"cannot open the lock file {path} ({e.strerror}); set [daemon] lock_file "
                "to a writable path"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, holder = _read_holder(fd)
            os.close(fd)
            raise self._taken(pid, holder, f"lock file {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.role}\n".encode(), 0)
        self._fd = fd

    def _taken(self, pid: str | None, holder: str | None, where: str) -> AlreadyRunning:
        who = ROLES.get(holder or "", "another tmcaldav process")
        if holder == "daemon" and self.role == "daemon":
            who = "another tmcaldav daemon"
        return AlreadyRunning(
            f"{who} (pid {pid or 'unknown'}) is using this store ({where}); "
            f"{_advice(self.role, holder)}",
            holder,
        )

    def _acquire_advisory(self) -> None:
        # A connection of its own, with keepalives: a dead peer must drop the lock.
        connection = self._connect()
        # Named, so the process that loses the race can tell who holds the lock.
        connection.execute(
            text("SELECT set_config('application_name', :name, false)"),
            {"name": f"tmcaldav {self.role} {os.getpid()}"},
        )
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
        ).scalar()
        connection.commit()
        if got:
            self._connection = connection
            return
        try:
            name = connection.execute(
                text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = :high AND l.objid = :low"
                ),
                {"high": ADVISORY_KEY >> 32, "low": ADVISORY_KEY & 0xFFFFFFFF},
            ).scalar()
        except Exception:  # the holder's name is a courtesy, not worth failing for
            name = None
        finally:
            with contextlib.suppress(Exception):
                connection.execute(text("RESET application_name"))
                connection.commit()
            connection.close()
        parts = (name or "").split()
        holder = parts[1] if len(parts) == 3 and parts[0] == "tmcaldav" else None
        pid = parts[2] if holder else None
        raise self._taken(pid, holder, f"PostgreSQL advisory lock on {self.store.safe_url}")

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            # Emptied first: the next process to lose a race must not read our name.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
        if self._connection is not None:
            # Unlock before the connection goes back to the pool: a pooled connection
            # would otherwise keep holding the lock.
            with contextlib.suppress(Exception):
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY}
                )
                self._connection.execute(text("RESET application_name"))
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



def _read_holder(fd: int) -> tuple[str | None, str | None]:
    """(pid, role) written in a lock file by its holder; waits briefly for a holder that
    has just taken the lock and not written yet (a lost race must name the winner)."""
    deadline = time.monotonic() + NAME_WAIT
    while True:
        text_ = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if text_ or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    parts = text_.split()
    if not parts:
        return None, None
    # An older tmcaldav wrote only its pid, and only daemons took the lock then.
    return parts[0], parts[1] if len(parts) > 1 else "daemon"


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
