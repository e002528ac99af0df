"""Deadlines for whole requests: when one runs over, its sockets are shut down.

A socket timeout bounds each read, not a request: a server that trickles its answer a
byte at a time keeps such a client waiting for ever. Here a request runs inside
`with deadline(seconds):`; the sockets it opens or uses are tracked by that deadline
(HTTP connections of a niquests session, SMTP and IMAP connections), and one watchdog
thread per process shuts them down when the deadline passes. The blocked read then
fails at once and the caller reports that the server did not answer in time.

Shutting a socket down (not closing it) is what wakes a thread blocked in a read on it;
the library then closes it as after any broken connection.
"""

from __future__ import annotations

import contextlib
import heapq
import imaplib
import itertools
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "Deadline",
    "DeadlineImap",
    "DeadlineImapSsl",
    "DeadlineSmtp",
    "DeadlineSmtpSsl",
    "deadline",
    "track",
    "track_session",
]


class Deadline:
    """One operation's deadline and the sockets (or connections) it will shut down."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.fired = False
        self.finished = False
        self._lock = threading.Lock()
        self._tracked: list[Any] = []

    def track(self, item: Any) -> None:
        """Shut `item` (a socket, or an object with a `sock`) down when the deadline passes;
        at once when it already has."""
        with self._lock:
            if self.finished:
                return
            self._tracked.append(item)
            fired = self.fired
        if fired:
            _shut_down(item)

    def expire(self) -> None:
        """The deadline passed: shut down everything tracked (called by the watchdog)."""
        with self._lock:
            if self.finished:
                return
            self.fired = True
            items = list(self._tracked)
        for item in items:
            _shut_down(item)

    def finish(self) -> None:
        """The operation ended: nothing is shut down any more. After a deadline that
        fired, HTTP connections are closed, so their pool opens fresh ones."""
        with self._lock:
            self.finished = True
            items = list(self._tracked) if self.fired else []
            self._tracked.clear()
        for item in items:
            if getattr(item, "close_after_deadline", False):
                with contextlib.suppress(Exception):
                    item.close()


def _shut_down(item: Any) -> None:
    sock = item if isinstance(item, socket.socket) else getattr(item, "sock", None)
    if not isinstance(sock, socket.socket):
        return
    with contextlib.suppress(OSError, ValueError):
        # The plain socket's shutdown, also for an SSLSocket: its own would drop the TLS
        # state under the thread that is reading.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires deadlines in time order; started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, item: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (item.expires_at, next(self._order), item))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tmcaldav-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is item:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    left = self._heap[0][0] - time.monotonic()
                    if left <= 0:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(left)
            due.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Run the block under a deadline of `seconds`; sockets opened or used in it (through
    the tracked clients below) are shut down when it passes. Check `fired` afterwards to
    tell a deadline from another broken connection."""
    item = Deadline(seconds)
    outer = getattr(_current, "deadline", None)
    _current.deadline = item
    _WATCHDOG.arm(item)
    try:
        yield item
    finally:
        item.finish()
        _current.deadline = outer


def track(item: Any) -> None:
    """Put `item` (a socket or a connection with `sock`) under the current deadline, if any."""
    current: Deadline | None = getattr(_current, "deadline", None)
    if current is not None:
        current.track(item)


# ---- HTTP: the connections of a niquests session -----------------------------------------

_TRACKED_POOLS: dict[type, type] = {}


def _tracked_pool(base: type) -> type:
    """A subclass of the pool class `base` whose connections put themselves under the
    current deadline each time they connect or send a request."""
    pool = _TRACKED_POOLS.get(base)
    if pool is not None:
        return pool
    connection_base: Any = base.ConnectionCls  # type: ignore[attr-defined]

    class TrackedConnection(connection_base):  # type: ignore[misc]
        # Closed after a deadline shut it down: a pool must not hand it out again.
        close_after_deadline = True

        def connect(self) -> None:
            track(self)
            super().connect()

        def request(self, *args: Any, **kwargs: Any) -> Any:
            track(self)
            return super().request(*args, **kwargs)

    pool = type(f"Tracked{base.__name__}", (base,), {"ConnectionCls": TrackedConnection})
    _TRACKED_POOLS[base] = pool
    return pool


def track_session(session: Any) -> None:
    """Make a niquests session's HTTP(S) connections obey `deadline()`.

    urllib3's pool manager builds its pools from `pool_classes_by_scheme`; ours are
    subclasses whose `ConnectionCls` reports each connection in use. Call it before the
    first request (pools made earlier keep their class).
    """
    for prefix in ("http://", "https://"):
        manager = getattr(session.get_adapter(prefix), "poolmanager", None)
        classes = getattr(manager, "pool_classes_by_scheme", None)
        if manager is None or not isinstance(classes, dict):
            continue
        manager.pool_classes_by_scheme = {
            scheme: _tracked_pool(cls) if scheme in ("http", "https") else cls
            for scheme, cls in classes.items()
        }


# ---- SMTP and IMAP: clients whose sockets obey `deadline()` --------------------------------


class DeadlineSmtp(smtplib.SMTP):
    """smtplib.SMTP whose socket is put under the current deadline when it connects."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        track(sock)
        return sock  # type: ignore[no-any-return]


class DeadlineSmtpSsl(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL whose socket is put under the current deadline when it connects."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        track(sock)
        return sock  # type: ignore[no-any-return]


class DeadlineImap(imaplib.IMAP4):
    """imaplib.IMAP4 whose socket is put under the current deadline when it connects."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = super()._create_socket(timeout)  # type: ignore[misc]
        track(sock)
        return sock  # type: ignore[no-any-return]


class DeadlineImapSsl(imaplib.IMAP4_SSL):
    """imaplib.IMAP4_SSL whose socket is put under the current deadline when it connects."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = super()._create_socket(timeout)  # type: ignore[misc]
        track(sock)
        return sock  # type: ignore[no-any-return]
