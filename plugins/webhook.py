"""The `webhook` plugin: POST every answer and every suggestion as signed JSON.

Each response change (`on_response`), each new suggestion (`on_suggestion`) and each
withdrawn one (`on_suggestion_withdrawn`, its data with `withdrawn_reason`) is sent to
every configured URL as one JSON object:

    {"event_id": "...", "type": "response" | "suggestion" | "suggestion_withdrawn",
     "data": {...}}

with the headers `X-Tmcaldav-Event-Id` (the event id: deduplicate on it),
`X-Tmcaldav-Event` (the type) and `X-Tmcaldav-Signature: sha256=<hex>`, the
HMAC-SHA256 of the exact body bytes under the shared secret.

Delivery never blocks the poll: hooks only queue the request, a background thread
sends it. A request that fails (network error, 5xx, 408, 429) is retried with
exponential backoff up to `max_attempts`; other 4xx answers are not retried.

At least once: a receiver may get an event more than once (a retry after a lost
answer, or a hook run again after a crash) and must deduplicate by event id. With
`spool_dir` set, each request is written there before the hook returns and removed
once delivered, so requests survive a crash or kill; without it, requests still queued
when the process is killed are lost (a normal stop waits up to `drain_timeout` seconds
for them).

Nothing starts when the plugin is built (`tmcaldav plugins` only lists it): the worker
starts with the first request to send. One process at a time sends the spool, the one
holding the lock file `.lock` in it: the daemon, or a command such as `tmcaldav sync`
when no daemon sends. It sends what earlier processes left there and looks for new
files every few seconds; a process without the lock leaves its requests in the spool
for it.

Settings (`[plugins.webhook]`):

    urls = ["https://hooks.example.org/tmcaldav"]   # required
    secret_file = "/etc/tmcaldav/webhook.secret"     # or secret_env = "VAR" (one is required)
    spool_dir = "/var/lib/tmcaldav/webhook"          # optional, see above
    timeout = 10          # seconds per request
    max_attempts = 5
    backoff = 1.0         # seconds before the first retry, doubled each time
    backoff_max = 300.0
    queue_size = 10000    # requests held at most; more are dropped and logged
    drain_timeout = 10.0  # seconds a stop waits for queued requests
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tmcaldav.config import PasswordSource
from tmcaldav.files import make_private_dir, open_private, write_private
from tmcaldav.hookspecs import hookimpl
from tmcaldav.retry import backoff, parse_retry_after
from tmcaldav.views import HookContext, ResponseChange, SuggestionView

log = logging.getLogger("tmcaldav.hooks.plugins.webhook")

SIGNATURE_HEADER = "X-Tmcaldav-Signature"
EVENT_ID_HEADER = "X-Tmcaldav-Event-Id"
EVENT_HEADER = "X-Tmcaldav-Event"
_SETTINGS = {
    "urls",
    "secret_file",
    "secret_env",
    "spool_dir",
    "timeout",
    "max_attempts",
    "backoff",
    "backoff_max",
    "queue_size",
    "drain_timeout",
    "days_before",
}
# Answers worth retrying: the receiver may do better later.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Seconds between looks at the spool (for the lock, and files other processes left).
SPOOL_RESCAN = 5.0
# In the spool folder: held (flock) by the one process that sends the spool.
LOCK_NAME = ".lock"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for a body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when `header` is the body's signature (for receivers and tests)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def safe_url(url: str) -> str:
    """The URL without credentials or query, for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def body_for(event_id: str, kind: str, data: Mapping[str, Any]) -> bytes:
    """The JSON body of one event (UTF-8, keys sorted so it is stable)."""
    envelope = {"event_id": event_id, "type": kind, "data": dict(data)}
    return json.dumps(envelope, ensure_ascii=False, sort_keys=True, default=str).encode()


@dataclass(frozen=True)
class WebhookSettings:
    """The plugin's validated settings."""

    urls: tuple[str, ...]
    secret: bytes = field(repr=False)
    spool_dir: Path | None = None
    timeout: float = 10.0
    max_attempts: int = 5
    backoff: float = 1.0
    backoff_max: float = 300.0
    queue_size: int = 10000
    drain_timeout: float = 10.0

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> WebhookSettings:
        """Validate `[plugins.webhook]`; ValueError lists every problem."""
        problems = [f"unknown setting {k!r}" for k in sorted(set(settings) - _SETTINGS)]
        urls = settings.get("urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            problems.append("urls: a non-empty list of http(s) URLs is required")
            urls = []
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                problems.append(f"urls: not an http(s) URL: {safe_url(url)!r}")
        sources = [k for k in ("secret_file", "secret_env") if k in settings]
        if len(sources) != 1:
            problems.append("set exactly one of secret_file, secret_env (the signing secret)")
        numbers: dict[str, Any] = {}
        for key, kind, minimum in (
            ("timeout", float, 0.001),
            ("max_attempts", int, 1),
            ("backoff", float, 0.0),
            ("backoff_max", float, 0.0),
            ("queue_size", int, 1),
            ("drain_timeout", float, 0.0),
        ):
            if key not in settings:
                continue
            value = settings[key]
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if kind is int:
                ok = ok and isinstance(value, int)
            if not ok or value < minimum:
                problems.append(f"{key}: expected a number >= {minimum}, got {value!r}")
            else:
                numbers[key] = kind(value)
        spool = settings.get("spool_dir")
        if spool is not None and not isinstance(spool, str):
            problems.append("spool_dir: expected a folder path")
        if problems:
            raise ValueError("; ".join(problems))
        source = PasswordSource(
            password_file=settings.get("secret_file"), password_env=settings.get("secret_env")
        )
        # SecretError names the source, never the secret.
        secret = source.read().encode()
        if not secret:
            raise ValueError("the signing secret is empty")
        spool_dir = None
        if spool is not None:
            spool_dir = Path(spool)
            make_private_dir(spool_dir)
        return cls(tuple(urls), secret, spool_dir, **numbers)


@dataclass(order=True)
class _Delivery:
    due: float
    order: int
    url: str = field(compare=False)
    event_id: str = field(compare=False)
    kind: str = field(compare=False)
    body: bytes = field(compare=False)
    spool: Path | None = field(compare=False, default=None)
    attempts: int = field(compare=False, default=0)


class Sender:
    """The background worker: a bounded queue, retries with backoff, an optional spool.

    The worker starts with the first `submit`, never before: building the plugin sends
    nothing. With a spool, only the process holding its lock file sends from it.
    """

    def __init__(self, settings: WebhookSettings, *, rescan_interval: float = SPOOL_RESCAN):
        self.settings = settings
        self.rescan_interval = rescan_interval
        self._inbox: queue.Queue[_Delivery | None] = queue.Queue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle = threading.Condition(self._lock)
        # The spool's lock file, while this process is the one that sends the spool.
        self._spool_lock: int | None = None
        # Spool files this process has queued: not queued again when it looks anew.
        self._queued: set[Path] = set()
        # Counters, for tests and logs.
        self.delivered = 0
        self.dropped = 0

    @property
    def sends_spool(self) -> bool:
        """True while this process holds the spool's lock (and so sends from it)."""
        return self._spool_lock is not None

    # ---- the hooks' side: never blocks -------------------------------------------------

    def submit(self, event_id: str, kind: str, body: bytes) -> None:
        """Queue one event for every URL (and spool it first when configured).

        With a spool that another process sends, the request is left there for it.
        """
        self._start()
        for url in self.settings.urls:
            spool = self._spool_path(url, event_id)
            with self._lock:
                mine = spool is None or self.sends_spool
                if spool is not None and mine:
                    # Before the file exists: a look at the spool must not queue it too.
                    self._queued.add(spool)
            if spool is not None:
                self._write_spool(spool, url, event_id, kind, body)
            if mine:
                self._enqueue(
                    _Delivery(time.monotonic(), next(self._order), url, event_id, kind, body, spool)
                )
            else:
                log.debug(
                    "webhook: event %s left in the spool for the process that sends it", event_id
                )

    def _enqueue(self, delivery: _Delivery) -> None:
        with self._lock:
            if self._outstanding >= self.settings.queue_size:
                self.dropped += 1
                log.warning(
                    "webhook queue full (%s requests); event %s for %s dropped%s",
                    self.settings.queue_size,
                    delivery.event_id,
                    safe_url(delivery.url),
                    " (kept in the spool for the next start)" if delivery.spool else "",
                )
                return
            self._outstanding += 1
        self._inbox.put(delivery)

    def _spool_path(self, url: str, event_id: str) -> Path | None:
        folder = self.settings.spool_dir
        if folder is None:
            return None
        return folder / (hashlib.sha256(f"{url}\n{event_id}".encode()).hexdigest()[:40] + ".json")

    @staticmethod
    def _write_spool(path: Path, url: str, event_id: str, kind: str, body: bytes) -> None:
        record = {"url": url, "event_id": event_id, "kind": kind, "body": body.decode()}
        # The request bodies name students: 0600, whatever the umask.
        write_private(path, json.dumps(record).encode())

    def _take_spool(self) -> None:
        """Send the spool if no other process does, and queue what it holds that this
        process has not queued yet (left by an earlier process, or by another one)."""
        folder = self.settings.spool_dir
        if folder is None:
            return
        if not self.sends_spool:
            fd = open_private(folder / LOCK_NAME)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # another process sends the spool
                return
            with self._lock:
                self._spool_lock = fd
            log.debug("webhook: this process sends the spool %s", folder)
        self._load_spool()

    def _load_spool(self) -> None:
        folder = self.settings.spool_dir
        assert folder is not None
        for path in sorted(folder.glob("*.json")):
            with self._lock:
                if path in self._queued:
                    continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                delivery = _Delivery(
                    time.monotonic(),
                    next(self._order),
                    record["url"],
                    record["event_id"],
                    record["kind"],
                    record["body"].encode(),
                    path,
                )
            except FileNotFoundError:
                continue  # delivered meanwhile
            except (OSError, ValueError, KeyError) as e:
                log.warning("webhook spool file %s is unreadable (%s); left in place", path, e)
                with self._lock:
                    self._queued.add(path)  # said once
                continue
            if delivery.url not in self.settings.urls:
                continue
            with self._lock:
                if path in self._queued:
                    continue
                self._queued.add(path)
            self._enqueue(delivery)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tmcaldav-webhook", daemon=True)
            self._thread.start()
        # A command that ends without on_shutdown still gets its requests out.
        atexit.register(self.close)
        self._take_spool()

    # ---- stopping ---------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` (default drain_timeout) for queued requests, then stop."""
        if self._thread is None:
            return
        deadline = time.monotonic() + (self.settings.drain_timeout if timeout is None else timeout)
        with self._idle:
            while self._outstanding and time.monotonic() < deadline:
                self._idle.wait(max(deadline - time.monotonic(), 0.0))
            left = self._outstanding
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout=5)
        with self._lock:
            self._thread = None
            # What was still queued is dropped with the worker (or waits in the spool).
            self._outstanding = 0
            self._queued.clear()
            spool_lock, self._spool_lock = self._spool_lock, None
        if spool_lock is not None:
            os.close(spool_lock)  # releases the lock: another process may send the spool
        atexit.unregister(self.close)
        if left:
            log.warning(
                "webhook: %s request(s) not delivered at stop%s",
                left,
                " (kept in the spool)" if self.settings.spool_dir else " (lost)",
            )

    # ---- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        waiting: list[_Delivery] = []
        spool = self.settings.spool_dir is not None
        next_look = time.monotonic() + self.rescan_interval
        while not self._stop.is_set():
            now = time.monotonic()
            waits = [waiting[0].due - now] if waiting else []
            if spool:
                waits.append(next_look - now)
            try:
                item = self._inbox.get(timeout=max(min(waits), 0.0) if waits else None)
                if item is None:
                    break
                heapq.heappush(waiting, item)
            except queue.Empty:
                pass
            if spool and time.monotonic() >= next_look:
                self._take_spool()
                next_look = time.monotonic() + self.rescan_interval
            while waiting and waiting[0].due <= time.monotonic() and not self._stop.is_set():
                delivery = heapq.heappop(waiting)
                retry_in = self._attempt(delivery)
                if retry_in is None:
                    self._finished(delivery)
                else:
                    delivery.due = time.monotonic() + retry_in
                    heapq.heappush(waiting, delivery)

    def _finished(self, delivery: _Delivery) -> None:
        if delivery.spool is not None:
            with contextlib.suppress(FileNotFoundError):
                delivery.spool.unlink()
        with self._idle:
            if delivery.spool is not None:
                self._queued.discard(delivery.spool)
            self._outstanding -= 1
            self._idle.notify_all()

    def _attempt(self, d: _Delivery) -> float | None:
        """Send once; None when finished (delivered or given up), else seconds to wait."""
        d.attempts += 1
        request = urllib.request.Request(
            d.url,
            data=d.body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "tmcaldav-webhook/1",
                EVENT_ID_HEADER: d.event_id,
                EVENT_HEADER: d.kind,
                SIGNATURE_HEADER: sign(self.settings.secret, d.body),
            },
        )
        retry_after: float | None = None
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                response.read()
            self.delivered += 1
            log.debug("webhook: event %s delivered to %s", d.event_id, safe_url(d.url))
            return None
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code}"
            if e.code not in _RETRY_STATUSES:
                log.error(
                    "webhook: %s answered %s for event %s; not retried",
                    safe_url(d.url),
                    problem,
                    d.event_id,
                )
                return None
            retry_after = parse_retry_after(e.headers.get("Retry-After"))
        except (OSError, ValueError) as e:
            problem = type(e).__name__ + (f": {e.reason}" if hasattr(e, "reason") else "")
        if d.attempts >= self.settings.max_attempts:
            log.error(
                "webhook: event %s to %s failed %s time(s) (%s); given up",
                d.event_id,
                safe_url(d.url),
                d.attempts,
                problem,
            )
            return None
        # A Retry-After is honoured up to backoff_max: the queue must keep moving.
        wait = min(
            backoff(
                d.attempts,
                self.settings.backoff,
                self.settings.backoff_max,
                retry_after=retry_after,
            ),
            self.settings.backoff_max,
        )
        log.info(
            "webhook: event %s to %s failed (%s); retry %s in %.1f s",
            d.event_id,
            safe_url(d.url),
            problem,
            d.attempts + 1,
            wait,
        )
        return wait


def suggestion_data(suggestion: SuggestionView) -> dict[str, Any]:
    """A suggestion as the webhook's `data` (the fields of `tmcaldav suggestions --json`)."""
    return {
        "id": suggestion.id,
        "session": suggestion.session,
        "email": suggestion.email,
        "kind": suggestion.kind,
        "reason": suggestion.reason,
        "plugin": suggestion.plugin,
        "state": suggestion.state,
        "created_at": suggestion.created_at.isoformat(),
        "details": dict(suggestion.details),
    }


def response_data(change: ResponseChange) -> dict[str, Any]:
    """A response change as the webhook's `data`."""
    return {
        "session": change.session,
        "email": change.email,
        "old": change.old,
        "new": change.new,
        "responded_at": change.responded_at.isoformat(),
        "sequence": change.sequence,
        "source": change.source,
        "enrollment_status": change.enrollment_status,
    }


class WebhookPlugin:
    """Posts response changes and suggestions to the configured URLs."""

    __version__ = "1"

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = WebhookSettings.parse(settings)
        # Nothing starts here: the worker starts with the first request to send.
        self.sender = Sender(self.settings)

    def _queue(self, kind: str, data: Mapping[str, Any], context: HookContext) -> None:
        """Queue one event of type `kind`; its event id is the receiver's idempotency key."""
        self.sender.submit(context.event_id, kind, body_for(context.event_id, kind, data))

    @hookimpl
    def on_response(self, change: ResponseChange, context: HookContext) -> None:
        """Queue the answer."""
        self._queue("response", response_data(change), context)

    @hookimpl
    def on_suggestion(self, suggestion: SuggestionView, context: HookContext) -> None:
        """Queue the suggestion."""
        self._queue("suggestion", suggestion_data(suggestion), context)

    @hookimpl
    def on_suggestion_withdrawn(self, suggestion: SuggestionView, context: HookContext) -> None:
        """Queue the withdrawal (type `suggestion_withdrawn`, with `withdrawn_reason`)."""
        data = {**suggestion_data(suggestion), "withdrawn_reason": suggestion.withdrawn_reason}
        self._queue("suggestion_withdrawn", data, context)

    @hookimpl
    def on_shutdown(self) -> None:
        """Give queued requests `drain_timeout` seconds, then stop the worker."""
        self.sender.close()


def tmcaldav_plugin(settings: Mapping[str, Any]) -> WebhookPlugin:
    """Build the plugin (for loading this module as a file)."""
    return WebhookPlugin(settings)
