"""The live channel's source: one poller per web process follows the store's change feed.

Every committed change writes a `changes` row (store/changes.py). One background task
asks the store every `interval` seconds for the rows after the newest it has seen (an
index range read that usually finds nothing) and wakes the open pages whose session
changed. Each page's stream keeps its own cursor, so a page that reconnects says where
it was (SSE's Last-Event-ID) and is brought up to date from the store itself.

Polling keeps the web process independent of who writes (the daemon, the CLI, another
web process) and works the same on SQLite and PostgreSQL; with several web nodes on
PostgreSQL, a LISTEN on a channel the writers NOTIFY could replace the sleep between
polls without changing anything else here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from anyio import to_thread

from tmcaldav.store import Store
from tmcaldav.store.changes import changed_since, changes_after, latest_change

log = logging.getLogger(__name__)

# How many recent changes are kept in memory to answer waiting pages.
_RECENT = 10_000


class ChangeFeed:
    """Follows the store's change feed and wakes whoever waits for a session."""

    def __init__(self, store: Store, interval: float = 0.2):
        self.store = store
        self.interval = interval
        self.latest = 0
        self._recent: deque[tuple[int, int | None]] = deque(maxlen=_RECENT)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start following from the newest change there is."""
        self.latest = await to_thread.run_sync(self._latest)
        self._task = asyncio.create_task(self._follow(), name="tmcaldav-change-feed")

    async def stop(self) -> None:
        """Stop following; waiting pages are woken and end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _latest(self) -> int:
        with self.store.scratch() as db:
            return latest_change(db)

    def _after(self, after: int) -> list[tuple[int, int | None]]:
        with self.store.scratch() as db:
            return changes_after(db, after)

    async def _follow(self) -> None:
        while True:
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
            if len(rows) < 5000:
                await asyncio.sleep(self.interval)

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
