"""Failover: how long answers stop arriving when the active daemon dies.

Two daemons (separate processes) on one real PostgreSQL store and a real Radicale: the
active one and a standby (`run --standby`). Each round kills the active one with -9 and
measures, from the kill, the time until the new active daemon has taken over and until
its first tick is done (median of N rounds), next to the poll interval and
`takeover_after`: the bound the design promises is takeover_after + one poll interval.
A second series pauses the active one with SIGSTOP instead, which PostgreSQL cannot see:
the standby takes over after `takeover_after` of silence.

Then the fence's cost: every transaction of an active daemon on PostgreSQL first checks
that its lock connection still holds the store lock; a one-row read and a one-row write
transaction are timed with and without that check (alternating batches, medians).

    .venv/bin/python -m bench.failover [--runs 10] [--paused-runs 3] [--poll 1.0]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Cli
from tests.postgres import start_postgres
from tests.scenario import add_session, cli_for
from tests.test_daemon import DaemonProcess
from tmcaldav.app import open_store
from tmcaldav.localhost import wait_for
from tmcaldav.testing import start_radicale

STANDING_BY = "standing by: this daemon takes over"
NOW_ACTIVE = "this daemon is now the active one"


def stamp(line: str) -> float:
    """The time of a log line (`2026-12-01 09:00:00,123 ...`), as time.time() counts."""
    when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return when.timestamp()


def first_after(daemon: DaemonProcess, marker: str, needle: str) -> float:
    """The time of the first line with `needle` after the line with `marker`."""
    lines = daemon.text().splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    return next(stamp(line) for line in lines[start:] if needle in line)


def one_round(
    tm: Cli, folder: Path, active: DaemonProcess, n: int, *, pause: bool
) -> tuple[float, float, DaemonProcess]:
    """Stop `active` (kill -9, or SIGSTOP); returns (takeover, first tick) in seconds
    from then, and the new active daemon (a fresh standby is started for the next)."""
    standby = DaemonProcess(tm.config, folder / f"d{n}.log", args=("--standby",))
    standby.wait_log(STANDING_BY, timeout=60)
    active.wait_log("tick:", count=active.text().count("tick:") + 1, timeout=60)
    stopped = time.time()
    active.process.send_signal(signal.SIGSTOP if pause else signal.SIGKILL)
    wait_for(lambda: NOW_ACTIVE in standby.text(), 120, "the takeover")
    standby.wait_log("tick:", count=1, timeout=60)
    wait_for(lambda: "tick:" in standby.text().split(NOW_ACTIVE, 1)[1], 60, "the new daemon's tick")
    takeover = first_after(standby, STANDING_BY, NOW_ACTIVE) - stopped
    ticked = first_after(standby, NOW_ACTIVE, "tick:") - stopped
    if pause:
        active.process.send_signal(signal.SIGCONT)
        active.wait(60)  # fenced: it exits by itself
    else:
        active.wait(60)
    return takeover, ticked, standby


def fence_cost(
    url: str, rounds: int = 300, batches: int = 15
) -> dict[str, tuple[float, float, float]]:
    """Microseconds per transaction — without a check, with the floor of any check (one
    trivial statement), with the fence — median of `batches` alternating batches of
    `rounds`: a one-row read, and a one-row write."""
    from sqlalchemy import text

    from tmcaldav.standby import Lease
    from tmcaldav.store.lock import StoreLock

    store = open_store(url)
    with store.engine.begin() as c:
        c.execute(text("CREATE TABLE IF NOT EXISTS bench_fence (n integer)"))
        c.execute(text("INSERT INTO bench_fence VALUES (0)"))
    lock = StoreLock(store)
    lease = Lease(store, lock, 60.0, lambda _reason: None)
    lock.acquire()
    lease.activate()
    fence = store.fence

    def floor(session: Session) -> None:
        """The least any check inside the transaction costs: one trivial statement."""
        driver = session.connection().connection.dbapi_connection
        assert driver is not None
        cursor = driver.cursor()
        cursor.execute("SELECT true")
        cursor.fetchone()
        cursor.close()

    work = {
        "one-row read": "SELECT n FROM bench_fence LIMIT 1",
        "one-row write": "INSERT INTO bench_fence VALUES (1)",
    }
    found: dict[str, tuple[float, float, float]] = {}
    checks = {"none": None, "floor": floor, "fence": fence}
    try:
        for name, sql in work.items():
            times: dict[str, list[float]] = {check: [] for check in checks}
            for _ in range(batches):
                for check, function in checks.items():
                    store.fence = function
                    started = time.perf_counter()
                    for _ in range(rounds):
                        with store.transaction() as db:
                            db.execute(text(sql))
                    times[check].append((time.perf_counter() - started) / rounds * 1e6)
            found[name] = (
                statistics.median(times["none"]),
                statistics.median(times["floor"]),
                statistics.median(times["fence"]),
            )
    finally:
        store.fence = fence
        lease.close()
        lock.release()
        store.fence = None
        with store.engine.begin() as c:
            c.execute(text("DROP TABLE bench_fence"))
        store.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--paused-runs", type=int, default=3)
    parser.add_argument("--poll", type=float, default=1.0, help="poll_interval, seconds")
    args = parser.parse_args()
    takeover_after = 2 * args.poll
    pg = start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="tmcaldav-failover-") as tmp:
            folder = Path(tmp)
            server = start_radicale(folder / "radicale")
            try:
                url = pg.create_database("failover")
                tm = cli_for(
                    folder,
                    server,
                    url,
                    extra=f"\n[daemon]\npoll_interval = {args.poll}\n",
                )
                tm.ok("person", "add", "ann@example.org", "--name", "Ann")
                add_session(tm, "TM-1", start="2027-01-04T09:00", end="2027-01-04T12:00")
                tm.ok("enroll", "TM-1", "ann@example.org")
                tm.ok("invite", "TM-1", "--all-enrolled")
                active = DaemonProcess(tm.config, folder / "first.log")
                active.wait_log("tick:", timeout=60)
                series: dict[str, list[tuple[float, float]]] = {"kill -9": [], "SIGSTOP": []}
                n = 0
                for label, runs in (("kill -9", args.runs), ("SIGSTOP", args.paused_runs)):
                    for _ in range(runs):
                        n += 1
                        takeover, ticked, active = one_round(
                            tm, folder, active, n, pause=label == "SIGSTOP"
                        )
                        series[label].append((takeover, ticked))
                        print(
                            f"  {label:8} run {n:2}: active after {takeover:6.3f} s, "
                            f"first tick done after {ticked:6.3f} s",
                            flush=True,
                        )
                active.kill()
                print()
                print(
                    f"poll_interval {args.poll:g} s, takeover_after {takeover_after:g} s "
                    f"(default: 2 poll intervals); promised: within takeover_after + one "
                    f"interval = {takeover_after + args.poll:g} s"
                )
                for label, found in series.items():
                    if not found:
                        continue
                    takeovers = [t for t, _ in found]
                    ticks = [t for _, t in found]
                    print(
                        f"{label:8} ({len(found)} runs): active after median "
                        f"{statistics.median(takeovers):.3f} s; first tick done after median "
                        f"{statistics.median(ticks):.3f} s (min {min(ticks):.3f}, max "
                        f"{max(ticks):.3f}) = {statistics.median(ticks) / args.poll:.2f} "
                        "poll intervals"
                    )
                for name, (bare, least, fenced) in fence_cost(url).items():
                    print(
                        f"fence, {name} transaction: {bare:.0f} µs without, {fenced:.0f} µs "
                        f"with (+{fenced - bare:.0f} µs, {(fenced / bare - 1) * 100:+.0f}%); "
                        f"floor, one trivial statement instead: +{least - bare:.0f} µs"
                    )
            finally:
                server.stop()
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
