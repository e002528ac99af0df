"""Slowing callers down, in the store: failed logins and answers per answer link.

The counts live in the `web_throttles` table, not in the web process, so any number of
web nodes behind a load balancer count together: a login refused on one node is
refused on every other, and a restart forgets nothing. Each count is one row per
(scope, key), bumped by one atomic upsert (INSERT … ON CONFLICT DO UPDATE … RETURNING,
on SQLite as on PostgreSQL), so two nodes counting at the same moment both count. The
key is the SHA-256 of what is counted: an answer link's token is a credential and is
never stored.

Times are the web node's own clock (seconds since the epoch): the nodes' clocks must
agree to within a second or so, as NTP keeps them; a throttle that is off by a clock's
skew only waits a little more or less.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tmcaldav.store import Store
from tmcaldav.store.engine import StoreError
from tmcaldav.store.model import UTCDateTime, WebThrottle

# The scopes of the counts.
LOGIN_NAME = "login_name"
LOGIN_ADDRESS = "login_address"
ANSWER_LINK = "answer_link"
# Rows untouched for this long are deleted (longer than any count below lasts).
KEEP_SECONDS = 3600.0
# How often one process deletes the old rows.
PRUNE_EVERY = 60.0
# Doublings of a login's wait beyond which it is the cap anyway (2 ** 30 s: decades).
_MAX_DOUBLINGS = 30

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _row(scope: str, key: str) -> ColumnElement[bool]:
    return and_(WebThrottle.scope == scope, WebThrottle.key == key)


def bump(db: Session, scope: str, key: str, now: float, restart: ColumnElement[bool]) -> int:
    """Count one more for (scope, key) and return the count; an existing count for which
    `restart` holds (it is old) starts again at 1."""
    # Both dialects' inserts have the same ON CONFLICT DO UPDATE (SQLite 3.24+).
    upsert: Callable[..., Any] = (
        postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    at = _when(now)
    statement = upsert(WebThrottle).values(
        scope=scope, key=key, hits=1, started_at=at, last_at=at
    )
    statement = statement.on_conflict_do_update(
        index_elements=[WebThrottle.scope, WebThrottle.key],
        set_={
            "hits": case((restart, 1), else_=WebThrottle.hits + 1),
            "started_at": case((restart, literal(at, UTCDateTime())), else_=WebThrottle.started_at),
            "last_at": at,
        },
    ).returning(WebThrottle.hits)
    hits: int = db.execute(statement).scalar_one()
    return hits


class _Counts:
    """What both throttles share: the store, the clock, and now and then a clean-up."""

    def __init__(self, store: Store, clock: Clock):
        self.store = store
        self._clock = clock
        self._pruned_at = float("-inf")

    def now(self) -> float:
        """The clock's time, in seconds since the epoch."""
        return float(self._clock())

    def prune(self, now: float) -> None:
        """Delete the rows nobody touched for a long time (at most once a minute).

        In a transaction of its own, after the count's: inside it, two nodes that each
        held the row they had just counted could wait on each other's deletes. A prune
        that fails is tried again a minute later; the request it follows stands.
        """
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        stale = WebThrottle.last_at < _when(now - KEEP_SECONDS)
        try:
            with self.store.transaction() as db:
                db.execute(delete(WebThrottle).where(stale))
        except StoreError as e:
            log.info("old web throttle counts not pruned yet: %s", e)


class LoginThrottle(_Counts):
    """Slows logins down after failures, per user name and per client address.

    Three failures are free (typos); after that each attempt must wait twice as long
    as the one before (1 s, 2 s, 4 s … up to `cap`) after the last failure, and one
    that comes early is refused without looking at the password. A success clears
    the name's and the address's count; so do 15 quiet minutes.
    """

    FREE = 3
    FORGET = 15 * 60.0

    def __init__(self, store: Store, cap: float = 60.0, clock: Clock = time.time):
        super().__init__(store, clock)
        self.cap = cap

    @staticmethod
    def _keys(name: str, address: str) -> list[tuple[str, str]]:
        return [(LOGIN_NAME, _key(name.lower())), (LOGIN_ADDRESS, _key(address))]

    def wait_needed(self, name: str, address: str) -> float:
        """Seconds until a login for `name` from `address` may be tried (0: now)."""
        now = self.now()
        keys = self._keys(name, address)
        with self.store.scratch() as db:
            rows = db.execute(
                select(WebThrottle.hits, WebThrottle.last_at).where(
                    or_(*(_row(scope, key) for scope, key in keys)),
                    WebThrottle.last_at >= _when(now - self.FORGET),
                )
            ).all()
        wait = 0.0
        for hits, last_at in rows:
            if hits >= self.FREE:
                # The exponent is bounded: counts add up across nodes and restarts, and
                # 2.0 ** 1024 overflows; any exponent past the cap's waits the cap.
                delay = min(self.cap, 2.0 ** min(hits - self.FREE, _MAX_DOUBLINGS))
                wait = max(wait, last_at.timestamp() + delay - now)
        return max(wait, 0.0)

    def failed(self, name: str, address: str) -> None:
        """Count a failed login."""
        now = self.now()
        with self.store.transaction() as db:
            for scope, key in self._keys(name, address):
                bump(db, scope, key, now, WebThrottle.last_at < _when(now - self.FORGET))
        self.prune(now)

    def succeeded(self, name: str, address: str) -> None:
        """Clear the counts after a good login."""
        with self.store.transaction() as db:
            for scope, key in self._keys(name, address):
                db.execute(delete(WebThrottle).where(_row(scope, key)))


class LinkThrottle(_Counts):
    """At most `limit` answers per answer link within `window` seconds of its first."""

    def __init__(
        self, store: Store, limit: int = 5, window: float = 600.0, clock: Clock = time.time
    ):
        super().__init__(store, clock)
        self.limit = limit
        self.window = window

    def allow(self, token: str) -> bool:
        """Count one answer for `token`; False when it is over the limit."""
        now = self.now()
        with self.store.transaction() as db:
            started_long_ago = WebThrottle.started_at < _when(now - self.window)
            hits = bump(db, ANSWER_LINK, _key(token), now, started_long_ago)
        self.prune(now)
        return hits <= self.limit
