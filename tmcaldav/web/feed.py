"""The live channel's source: each web process follows the store's change feed.

Every committed change writes a `changes` row (store/changes.py). One background task
reads the rows after the newest it has seen (an index range read) and wakes the open
pages whose session changed. Each page's stream keeps its own cursor, so a page that
reconnects says where it was (SSE's Last-Event-ID) and is brought up to date from the
store itself. The feed never depends on who wrote (the daemon, the CLI, any web node).

When it reads:

- SQLite (one machine, one web process): every `interval` (0.2 s).
- PostgreSQL (any number of web nodes): the moment a change commits. A `ChangeListener`
  keeps a connection of its own LISTENing on `tmcaldav_changes`, which every writing
  transaction NOTIFYs as it commits, and wakes the feed. Between notifications the
  feed still reads every `FALLBACK_POLL` seconds, so a notification that never came
  costs a few seconds, not a change; while the listening connection is lost the feed
  polls every `interval` again and the listener reconnects with backoff, logging one
  line when it is lost and one when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from sqlalchemy.engine import make_url

from tmcaldav.retry import backoff
from tmcaldav.store import Store
from tmcaldav.store.changes import CHANNEL, changed_since, changes_after, latest_change
from tmcaldav.store.lock import keepalive_args

log = logging.getLogger(__name__)

# How many recent changes are kept in memory to answer waiting pages.
_RECENT = 10_000
# Rows read at most per look; a full batch is followed by the next at once.
_BATCH = 5000
# Seconds between reads while the listener is connected: the safety net.
FALLBACK_POLL = 5.0
# The listener's connection notices a dead server (or a dead path to it) within about
# this many seconds (TCP keepalives and tcp_user_timeout), then reconnects.
DEAD_PEER_AFTER = 10.0
# Backoff between reconnection attempts: from 0.5 s, doubling, up to 30 s.
RECONNECT_BASE, RECONNECT_CAP = 0.5, 30.0
# How the listener's connection is named in pg_stat_activity.
LISTENER_NAME = "tmcaldav-web-listen"


class ChangeFeed:
    """Follows the store's change feed and wakes whoever waits for a session."""

    def __init__(self, store: Store, interval: float = 0.2):
        self.store = store
        self.interval = interval
        self.latest = 0
        self._recent: deque[tuple[int, int | None]] = deque(maxlen=_RECENT)
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listener: ChangeListener | None = (
            ChangeListener(store.url, self.wake) if store.backend == "postgresql" else None
        )

    async def start(self) -> None:
        """Start following from the newest change there is."""
        self.latest = await to_thread.run_sync(self._latest)
        self._task = asyncio.create_task(self._follow(), name="tmcaldav-change-feed")
        if self.listener is not None:
            self.listener.start()

    async def stop(self) -> None:
        """Stop following; waiting pages are woken and end."""
        if self.listener is not None:
            await self.listener.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Read the store now (a change was announced)."""
        self._wake.set()

    def _pause(self) -> float:
        """Seconds until the next read when nothing wakes the feed sooner."""
        if self.listener is not None and self.listener.listening:
            return FALLBACK_POLL
        return self.interval

    def _latest(self) -> int:
        with self.store.scratch() as db:
            return latest_change(db)

    def _after(self, after: int) -> list[tuple[int, int | None]]:
        with self.store.scratch() as db:
            return changes_after(db, after, _BATCH)

    async def _follow(self) -> None:
        while True:
            # Cleared before the read: an announcement that comes during the read
            # wakes the next one.
            self._wake.clear()
            try:
                rows = await to_thread.run_sync(self._after, self.latest)
            except Exception as e:  # the store is away for a moment: keep trying
                log.warning("the change feed cannot read the store: %s", e)
                rows = []
            if rows:
                self._recent.extend(rows)
                self.latest = rows[-1][0]
                async with self._changed:
                    self._changed.notify_all()
            if len(rows) < _BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._pause())

    def _match(self, session_id: int, after: int) -> int | None:
        newest = None
        for change, concerns in reversed(self._recent):
            if change <= after:
                break
            if concerns is None or concerns == session_id:
                newest = change
                break
        return newest

    async def catch_up(self, session_id: int, after: int) -> int | None:
        """The newest change after `after` for the session, read from the store."""
        def read() -> int | None:
            with self.store.scratch() as db:
                return changed_since(db, session_id, after)

        return await to_thread.run_sync(read)

    async def wait(self, session_id: int, after: int, timeout: float) -> int | None:
        """The newest change after `after` that concerns the session, waiting up to
        `timeout` seconds for one (None when none came)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                found = self._match(session_id, after)
                if found is not None:
                    return found
                left = deadline - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)


class ChangeListener:
    """PostgreSQL: LISTENs on the change channel on a connection of its own and calls
    `wake` for every notification (and once after each (re)connection, for what
    committed while it was not listening)."""

    def __init__(self, url: str, wake: Callable[[], None]):
        self.url = url
        self._wake = wake
        self.listening = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._run(), name="tmcaldav-change-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening = False

    def _conninfo(self) -> str:
        """libpq's connection string: the store's URL, with keepalives (a dead server or
        path is noticed within about DEAD_PEER_AFTER) and a name in pg_stat_activity."""
        from psycopg.conninfo import make_conninfo

        url = make_url(self.url)
        # From the URL's parts, not its text: a password with spaces or quotes stays one
        # value, and no rendering of the URL (with its password) can reach a message.
        parts: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
        # libpq parameters, all str or int.
        keepalives: dict[str, Any] = keepalive_args(self.url, DEAD_PEER_AFTER)
        # The URL's own parameters (sslmode, ...); its `options` are in `keepalives` already.
        query: dict[str, Any] = {
            key: value for key, value in url.query.items() if key not in keepalives
        }
        return make_conninfo(
            "",
            **parts,
            **query,
            application_name=LISTENER_NAME,
            connect_timeout=int(DEAD_PEER_AFTER),
            **keepalives,
        )

    async def _run(self) -> None:
        try:
            import psycopg
        except ImportError:
            log.warning(
                "live updates poll the store every few tenths of a second: LISTEN needs "
                "psycopg 3 (pip install 'tmcaldav[postgres]')"
            )
            return
        try:
            conninfo = self._conninfo()
        except Exception as e:  # a URL libpq cannot read: the feed keeps polling
            # The type only: the message of a failed parse may quote the password.
            log.warning("live updates poll the store: cannot LISTEN (%s)", type(e).__name__)
            return
        failures = 0
        lost_since: float | None = None
        # When the current connection was made; None while none is.
        connected_at: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            reason = "the server closed it"
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    connected_at = loop.time()
                    if lost_since is not None:
                        log.warning(
                            "live updates: listening to the store again after %.1f s",
                            loop.time() - lost_since,
                        )
                        lost_since = None
                    # What committed while nobody listened is read now.
                    self._wake()
                    async for _notification in conn.notifies():
                        self._wake()
            except Exception as e:  # psycopg.Error mostly; whatever it is, listen again
                reason = _first_line(e)
            self.listening = False
            # A connection that lived a while starts the backoff afresh; one dropped soon
            # after it was made (an idle limit, a pooler) keeps it growing, so a server
            # that drops listeners is not asked again twice a second.
            lived = connected_at is not None and loop.time() - connected_at >= RECONNECT_CAP
            failures = 1 if lived else failures + 1
            connected_at = None
            if lost_since is None:
                lost_since = loop.time()
                log.warning(
                    "live updates: the connection that listens to the store failed (%s); "
                    "polling the store instead until it is back",
                    reason,
                )
            await asyncio.sleep(backoff(failures, RECONNECT_BASE, RECONNECT_CAP))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
