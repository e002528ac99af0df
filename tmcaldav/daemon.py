"""The daemon: one tick every poll interval — poll answers, run the hooks, read mail.

Signal handlers only record what was asked and wake the loop. The tick runs in a worker
thread while the main thread waits for it or for a signal, so a stop or a poll request
is acted on at once even while a request or a plugin hook is in flight: on a stop the
tick is abandoned and the process exits — every unit of work is one store transaction,
so what it had not committed is rolled back, never half-written. A failing server is
retried with exponential backoff and jitter (honouring Retry-After), persisted in the
store so a restart does not hammer it; each change of state is logged once, not each
retry.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from tmcaldav.app import App
from tmcaldav.caldav import CalendarError, ServerError
from tmcaldav.config import Config, ConfigError, SecretError, load_config, standby_refusal
from tmcaldav.errors import EXIT_FENCED
from tmcaldav.retry import backoff
from tmcaldav.standby import Lease
from tmcaldav.store import StoreError, StoreUnavailable
from tmcaldav.store.lock import AlreadyRunning, StoreLock
from tmcaldav.store.model import SyncState, utcnow
from tmcaldav.sync import EmptyCalendar, load_state, state_key
from tmcaldav.systemd import Notifier
from tmcaldav.words import duration, plural

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 75
# How long a stop waits for a tick in progress to reach its end before abandoning it.
STOP_GRACE = 0.5


@dataclass(frozen=True)
class TickResult:
    """What one tick did."""

    ok: bool
    summary: str
    answers: int = 0
    suggestions: int = 0

    @property
    def eventful(self) -> bool:
        """True when it recorded answers or made suggestions: worth a line in the log."""
        return bool(self.answers or self.suggestions)


# How often a quiet daemon says it is alive (INFO), with what it did meanwhile.
HEARTBEAT = timedelta(minutes=15)


class Daemon:
    """The long-running service around one config file."""

    # `run --standby` or [daemon] standby: wait for the store lock (see tmcaldav.standby).
    standby = False
    # The hold on the store of a running loop (not of `--once`).
    lease: Lease | None = None
    # Why the lease was lost, when it was: the daemon stops and exits EXIT_FENCED.
    fenced: str | None = None

    def __init__(self, config_path: str, notifier: Notifier | None = None):
        self.config_path = config_path
        self.app = App(config_path)
        self.config: Config = self.app.config
        self.store = self.app.store
        self.notifier = notifier or Notifier()
        self.wake = threading.Event()
        self.stop_requested = False
        self.reload_requested = False
        self.poll_requested = False
        self._failing: str | None = None  # the kind of failure being backed off from
        self._failing_since: datetime | None = None
        self._counts = {"ticks": 0, "answers": 0, "suggestions": 0}
        self._counted_since = utcnow()
        # True when the process stops with a tick still running (see run_daemon).
        self.abandoned = False

    # ---- signals ---------------------------------------------------------------------

    def install_signals(self) -> None:
        """Handlers that only record the request and wake the loop."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGUSR1, self._on_poll)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested:
            # A second request: the administrator means it. The database rolls back
            # whatever transaction was open, so nothing is half-written.
            os._exit(128 + signum)
        self.stop_requested = True
        self.wake.set()

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested = True
        self.wake.set()

    def _on_poll(self, _signum: int, _frame: FrameType | None) -> None:
        self.poll_requested = True
        self.wake.set()

    # ---- one tick --------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickResult:
        """Poll, run the hooks and time checks, read mail; never raises for server trouble."""
        now = now or utcnow()
        parts: list[str] = []
        counts = {"answers": 0, "suggestions": 0}
        try:
            ok = self._server_step(now, parts, counts)
        except StoreError as e:
            # The transaction rolled back whole (a lock held too long, a conflict): the
            # next tick polls again from the same sync token, so nothing is lost.
            log.error("the poll could not be stored, it is retried next tick: %s", e)
            parts.append("store busy")
            ok = False
        steps: list[tuple[str, Callable[[datetime], object]]] = [
            ("hooks", self.app.run_hooks),
            ("invitations", self.app.send_scheduled),
            ("notices", self.app.send_notices),
        ]
        if self.app.mail is not None:
            steps.append(("mail", self.app.read_mail))
        for name, step in steps:
            if self.stop_requested:
                break
            if name == "invitations" and not ok:
                continue  # the server is failing: invitations wait for it to come back
            try:
                outcome = step(now)
                counts["suggestions"] += getattr(outcome, "suggestions", 0)
                # A step with nothing to say (no invitation due) stays out of the line.
                text = str(outcome)
                if text:
                    parts.append(f"{name}: {text}")
            except (CalendarError, SecretError, StoreError) as e:
                ok = False
                log.error("%s step failed: %s", name, e)
                parts.append(f"{name} failed")
        return TickResult(ok, "; ".join(parts), counts["answers"], counts["suggestions"])

    def _server_step(self, now: datetime, parts: list[str], counts: dict[str, int]) -> bool:
        with self.store.scratch() as db:
            # Read only: a write here (creating the row) would need the write lock in a
            # read transaction, which SQLite refuses at once under contention.
            waiting_until = db.scalar(
                select(SyncState.next_attempt_at).where(
                    SyncState.calendar_url == state_key(self.config)
                )
            )
        if waiting_until is not None and now < waiting_until and not self.poll_requested:
            parts.append(f"server failing, next attempt {waiting_until:%H:%M:%S} UTC")
            return False
        self.poll_requested = False
        try:
            result = self.app.poll()
        except EmptyCalendar as e:
            self._record_failure(now, "empty", str(e), None, wait=False)
            parts.append("calendar lists no events: waiting for `tmcaldav sync --accept-empty`")
            return False
        except (CalendarError, SecretError) as e:
            retry_after = e.retry_after if isinstance(e, ServerError) else None
            self._record_failure(now, type(e).__name__, str(e), retry_after)
            # Reconnect next time: the server may have come back as someone else.
            self.app.reconnect()
            parts.append(f"server failing ({type(e).__name__})")
            return False
        self._record_success(now)
        counts["answers"] += result.answers
        parts.append(result.summary())
        return True

    def _record_failure(
        self,
        now: datetime,
        kind: str,
        message: str,
        retry_after: float | None,
        *,
        wait: bool = True,
    ) -> None:
        with self.store.transaction() as db:
            state = load_state(db, state_key(self.config))
            state.failures += 1
            state.last_error = message
            delay = 0.0
            if wait:
                delay = backoff(
                    state.failures,
                    self.config.daemon.poll_interval,
                    self.config.daemon.backoff_max,
                    jitter=random.random(),
                    retry_after=retry_after,
                )
                state.next_attempt_at = now + timedelta(seconds=delay)
            failures = state.failures
        if self._failing != kind:
            # One line per change of state, not one per retry.
            log.error("%s; retrying with backoff (next in %.0f s)", message, delay)
            self._failing = kind
            self._failing_since = self._failing_since or now
        else:
            log.debug("still failing (%d in a row): %s", failures, message)

    def _record_success(self, now: datetime) -> None:
        with self.store.transaction() as db:
            state = load_state(db, state_key(self.config))
            failures = state.failures
            if failures:
                state.failures = 0
                state.next_attempt_at = None
                state.last_error = None
        if failures or self._failing:
            down = f" after {duration(now - self._failing_since)}" if self._failing_since else ""
            log.warning(
                "the CalDAV server at %s is back%s (%s)",
                self.config.caldav.url if self.config.caldav else "?",
                down,
                plural(failures, "failed attempt"),
            )
        self._failing = None
        self._failing_since = None

    # ---- reload ----------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the config again; a bad one is refused and the old one stays in force."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            if new.store.url != self.config.store.url:
                raise ConfigError(
                    self.config_path, ["store.url cannot change on reload; restart the service"]
                )
        except ConfigError as e:
            log.error(
                "the new configuration is refused; the old one stays in force.\n%s", e.report()
            )
            self.notifier.ready(f"reload refused: {e.problems[0]}")
            return False
        self.app.close()
        self.app = App(self.config_path, config=new, store=self.store)
        self.config = new
        log.info(
            "configuration reloaded from %s (poll every %g s)",
            self.config_path,
            self.config.daemon.poll_interval,
        )
        self.notifier.ready("configuration reloaded")
        return True

    # ---- the loop --------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        """Run until stopped (or one tick with `once`); returns the exit code."""
        lock = self.app.lock("once" if once else "daemon")
        try:
            if not self._take_lock(lock, once=once):
                return EXIT_OK  # stopped while standing by
        except AlreadyRunning as e:
            log.error("%s", e)
            return EXIT_LOCKED
        except StoreUnavailable as e:
            log.error("%s", e)
            return EXIT_CONFIG
        except StoreError as e:
            log.error("%s", e)
            return EXIT_FAILED
        self._warn_insecure()
        try:
            if once:
                result = self.tick()
                log.info("%s", result.summary)
                return EXIT_OK if result.ok else EXIT_FAILED
            return self._unless_fenced(self._loop())
        finally:
            if not self.abandoned:
                # An abandoned tick may still be using both: the process ends instead,
                # and the operating system releases the lock.
                self._end_lease()
                lock.release()
                self.store.close()

    def _warn_insecure(self) -> None:
        caldav = self.config.caldav
        if caldav is not None and caldav.insecure:
            log.warning(
                "[caldav] allow_insecure_http = true: the password for %s crosses the "
                "network in clear text; use https:// when you can",
                caldav.url,
            )

    # ---- the store lock across machines (tmcaldav.standby) ------------------------------

    def _take_lock(self, lock: StoreLock, *, once: bool) -> bool:
        """Take the store lock — standing by for it when `standby` — and, for the loop,
        the lease: our row in `daemons`, the heartbeat and the fence. False when stopped
        while standing by."""
        if once:
            lock.acquire()
            return True
        self.lease = Lease(
            self.store, lock, self.config.daemon.takeover_seconds, self._on_lease_lost
        )
        if self.standby:
            self.install_signals()
            self.notifier.ready(self.lease.status)
            if not self.lease.stand_by(
                lambda: self.stop_requested, self._pause_standing_by, self._tell_standing_by
            ):
                self.lease.close()
                lock.release()
                log.info("tmcaldav standby stopped")
                return False
        else:
            lock.acquire()
        try:
            self.lease.activate()
        except DBAPIError as e:
            lock.release()
            raise StoreError(
                f"could not record this daemon as the active one in the store: {e.orig}"
            ) from e
        if self.standby and self.lease.replaced:
            log.warning(
                "this daemon is now the active one (took over from %s)", self.lease.replaced
            )
        elif self.standby:
            log.info("this daemon is now the active one (no other daemon was active)")
        return True

    def _pause_standing_by(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def _tell_standing_by(self, status: str) -> None:
        self.notifier.status(status)
        self.notifier.watchdog()

    def _on_lease_lost(self, reason: str) -> None:
        """The store lock is gone (any thread): stop at once; the fence refuses writes."""
        self.fenced = reason
        self.stop_requested = True
        self.wake.set()

    def _unless_fenced(self, code: int) -> int:
        if self.fenced is None:
            return code
        log.error(
            "this daemon lost the store lock (%s) and stopped without writing anything "
            "more: another daemon may be active (a standby takes over when this one is "
            "silent for [daemon] takeover_after). Exit %d; systemd restarts it, as a "
            "standby with [daemon] standby = true",
            self.fenced,
            EXIT_FENCED,
        )
        return EXIT_FENCED

    def _end_lease(self) -> None:
        if self.lease is not None:
            self.lease.close()

    def _loop(self) -> int:
        self.install_signals()
        log.info(
            "tmcaldav daemon started (poll every %g s, %s mode)",
            self.config.daemon.poll_interval,
            self.config.scheduling.mode,
        )
        self.notifier.ready("started")
        while not self.stop_requested:
            started = time.monotonic()
            result = self._tick_in_worker()
            if result is None:
                break  # stopped while the tick ran
            self.notifier.status(result.summary)
            self.notifier.watchdog()
            self._log_tick(result)
            self._sleep_until(started + self.config.daemon.poll_interval)
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
        self.notifier.stopping()
        self.app.close()
        log.info("tmcaldav daemon stopped")
        return EXIT_OK

    def _log_tick(self, result: TickResult) -> None:
        """A tick that recorded answers or made suggestions is worth a line; a quiet or
        failing one is not (failures are logged when they start and end). Every
        HEARTBEAT a line says the daemon is alive and what it did meanwhile."""
        (log.info if result.eventful else log.debug)("tick: %s", result.summary)
        self._counts["ticks"] += 1
        self._counts["answers"] += result.answers
        self._counts["suggestions"] += result.suggestions
        now = utcnow()
        if now - self._counted_since >= HEARTBEAT:
            log.info(
                "alive: %s, %s recorded, %s since %s",
                plural(self._counts["ticks"], "poll"),
                plural(self._counts["answers"], "answer"),
                plural(self._counts["suggestions"], "new suggestion"),
                f"{self._counted_since:%H:%M} UTC",
            )
            self._counts = {"ticks": 0, "answers": 0, "suggestions": 0}
            self._counted_since = now

    def _tick_in_worker(self) -> TickResult | None:
        """Run one tick in a worker thread; None when a stop request abandoned it.

        The main thread only waits here, so the signal handlers run at once: a stop is
        acted on within STOP_GRACE however long the tick's request or hook would take.
        """
        done: list[TickResult] = []
        failed: list[BaseException] = []
        finished = threading.Event()

        def work() -> None:
            try:
                done.append(self.tick())
            except BaseException as e:  # handed to the main thread, which raises it
                failed.append(e)
            finally:
                finished.set()
                self.wake.set()

        worker = threading.Thread(target=work, name="tmcaldav-tick", daemon=True)
        worker.start()
        told = False
        while not finished.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            if self.stop_requested:
                return self._stop_during(worker)
            if self.poll_requested and not told and not finished.is_set():
                log.info("a poll was asked for (SIGUSR1) during a tick: it runs right after it")
                told = True
        worker.join()
        if failed:
            raise failed[0]
        return done[0]

    def _stop_during(self, worker: threading.Thread) -> TickResult | None:
        """A stop request while `worker` runs a tick: give it STOP_GRACE, then abandon it."""
        log.info("stopping (a tick is in progress)")
        self.app.stopping.set()
        worker.join(STOP_GRACE)
        if not worker.is_alive():
            return None
        self.abandoned = True
        log.warning(
            "stopping now: the tick in progress is abandoned (a request or a plugin hook "
            "was still running); what it had not committed is rolled back and done again "
            "after the restart"
        )
        return None

    def _sleep_until(self, deadline: float) -> None:
        """Sleep until `deadline`, a signal, or a watchdog ping is due."""
        ping = self.notifier.watchdog_interval
        while not (self.stop_requested or self.reload_requested or self.poll_requested):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.wake.wait(min(left, ping) if ping else left)
            self.wake.clear()
            if ping:
                # Still looping means still alive: the loop is the progress.
                self.notifier.watchdog()


def run_daemon(config_path: str, *, once: bool = False, standby: bool = False) -> int:
    """Entry point of `tmcaldav run`; returns the exit code."""
    try:
        daemon = Daemon(config_path)
        # A config that loads may still lack what a tick needs ([caldav]): say so now.
    except ConfigError as e:
        log.error("%s", e.report())
        return EXIT_CONFIG
    except StoreUnavailable as e:
        log.error("%s", e)
        return EXIT_CONFIG
    daemon.standby = standby or daemon.config.daemon.standby
    if daemon.standby:
        refusal = standby_refusal(daemon.config.store.url)
        if refusal:
            log.error("a standby is refused: %s", refusal)
            daemon.store.close()
            return EXIT_CONFIG
    code = daemon.run(once=once)
    if daemon.abandoned:
        # The abandoned tick's thread must not go on writing after "stopped": end the
        # process here (its open transaction, if any, is rolled back by the database).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
