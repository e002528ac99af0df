"""Soak: the daemon's tick 1,000 times against 1,000 sessions × 30 students, with
answers arriving, on a real Radicale.

Prints resident memory after warm-up and at the end (target: no growth beyond 10%),
the mean tick time, and the raw floor measured in the same run: one no-change
sync-collection REPORT with plain HTTP.

    .venv/bin/python bench/soak.py [--sessions 1000] [--ticks 1000] [--answer-every 10]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RawClient, bench_config, radicale, seed
from bench.poll import SYNC, current_token
from tests.scenario import StudentSide
from tmcaldav.app import open_store
from tmcaldav.daemon import Daemon
from tmcaldav.publish import Publisher
from tmcaldav.store.model import TrainingSession


def rss_kib() -> int:
    """Resident set size of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--answer-every", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with radicale() as (server, folder):
        config = bench_config(server, folder)
        config_path = folder / "daemon.toml"
        pw = config.caldav.password_file if config.caldav else ""
        config_path.write_text(
            f'[store]\nurl = "{config.store.url}"\n[caldav]\nurl = "{server.url}"\n'
            f'username = "{server.organizer}"\npassword_file = "{pw}"\n'
            'calendar = "trainings"\n[scheduling]\norganizer_email = "training@example.org"\n'
        )
        store = open_store(config.store.url)
        store.upgrade()
        keys = seed(store, args.sessions, args.students, invited=True)
        publisher = Publisher(config, store)
        for key in keys:
            publisher.publish(key)
        with store.transaction() as db:
            hrefs = [s.href for s in db.query(TrainingSession).order_by(TrainingSession.id)]
        store.close()
        daemon = Daemon(str(config_path))
        student = StudentSide(server)
        raw = RawClient(server)
        path = f"/{server.organizer}/trainings/"
        answers = ["ACCEPTED", "DECLINED", "TENTATIVE", "NEEDS-ACTION"]
        tick_times: list[float] = []
        raw_times: list[float] = []
        start_rss = 0
        recorded = 0
        for n in range(args.ticks):
            if n == args.warmup:
                gc.collect()
                start_rss = rss_kib()
            if n % args.answer_every == 0:
                i = n // args.answer_every
                student.answer(
                    hrefs[i % len(hrefs)], {f"s{i % args.students:05d}@example.org": answers[i % 4]}
                )
            t0 = time.perf_counter()
            result = daemon.tick()
            tick_times.append(time.perf_counter() - t0)
            if not result.ok:
                raise SystemExit(f"tick {n} failed: {result.summary}")
            recorded += int(result.summary.split(" answer(s)")[0].rsplit(" ", 1)[-1])
            if n % 50 == 0:
                token = current_token(daemon.store)
                t0 = time.perf_counter()
                raw.report(path, SYNC.format(token=token))
                raw_times.append(time.perf_counter() - t0)
        gc.collect()
        end_rss = rss_kib()
        growth = (end_rss - start_rss) / start_rss * 100
        mean_tick = statistics.mean(tick_times)
        raw_idle = statistics.median(raw_times)
        print(
            f"soak: {args.ticks} ticks, {args.sessions} sessions × {args.students} students, "
            f"an answer every {args.answer_every} ticks ({recorded} recorded)"
        )
        print(
            f"resident memory after {args.warmup} ticks {start_rss / 1024:.1f} MiB, at the end "
            f"{end_rss / 1024:.1f} MiB: {growth:+.1f}% (target ≤ +10%: "
            f"{'met' if growth <= 10 else 'MISSED'})"
        )
        print(
            f"mean tick {1000 * mean_tick:.1f} ms "
            f"(median {1000 * statistics.median(tick_times):.1f},"
            f" max {1000 * max(tick_times):.1f}); raw no-change REPORT "
            f"{1000 * raw_idle:.1f} ms; ratio {mean_tick / raw_idle:.2f}"
        )


if __name__ == "__main__":
    main()
