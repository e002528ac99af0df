"""One daemon per store: a file lock beside a SQLite store, an advisory lock on PostgreSQL.

Both are released by the operating system or the database when the process dies, so
a crashed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from tmcaldav.errors import TryLater
from tmcaldav.files import open_private
from tmcaldav.store import Store, StoreUnavailable

# pg_try_advisory_lock takes a bigint; this one is "tmcaldav" in ASCII.
ADVISORY_KEY = 0x746D63616C646176


class AlreadyRunning(TryLater):
    """Another tmcaldav daemon holds the store."""


class StoreLock:
    """Held for the daemon's lifetime; `acquire` raises AlreadyRunning when taken."""

    def __init__(self, store: Store, lock_file: str | None = None):
        self.store = store
        self.lock_file = lock_file
        self._fd: int | None = None
        self._connection: Connection | None = None

    def path(self) -> Path:
        """The lock file for a SQLite store."""
        if self.lock_file:
            return Path(self.lock_file)
        database = make_url(self.store.url).database or "tmcaldav"
        return Path(database + ".lock")

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder."""
        if self.store.backend == "postgresql":
            connection = self.store.engine.connect()
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
            fd = open_private(path)
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
