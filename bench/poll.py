"""Benchmark: polling answers from a calendar of 1,000 sessions × 30 students.

Figures, each next to the raw floor measured in the same run with plain HTTP:
  (a) a poll with no change         vs one raw sync-collection REPORT
  (b) a poll after 10 changed sessions (fetch, parse, diff, commit)
                                    vs the raw sync REPORT + one raw calendar-multiget
  (c) the first full sync           vs a raw full sync REPORT + multiget of everything,
      with a breakdown of where our time goes.

    .venv/bin/python bench/poll.py [--sessions 1000] [--students 30] [--rounds 15]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RawClient, bench_config, radicale, ratio_line, seed
from tests.scenario import StudentSide
from tmcaldav import ical, sync
from tmcaldav.app import open_store
from tmcaldav.publish import Publisher
from tmcaldav.store import Store
from tmcaldav.store.model import SyncState, TrainingSession

SYNC = (
    '<?xml version="1.0" encoding="utf-8"?><sync-collection xmlns="DAV:">'
    "<sync-token>{token}</sync-token><sync-level>1</sync-level>"
    "<prop><getetag/></prop></sync-collection>"
)
MULTIGET = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>"
)
HREF = re.compile(rb"<(?:\w+:)?href>([^<]+\.ics)</(?:\w+:)?href>")
TOKEN = re.compile(rb"<(?:\w+:)?sync-token>([^<]+)</(?:\w+:)?sync-token>")


def raw_poll(raw: RawClient, path: str, token: str) -> tuple[str, int]:
    """The floor: a sync REPORT, and a multiget of what it lists (if anything)."""
    listing = raw.report(path, SYNC.format(token=token))
    hrefs = [h.decode() for h in HREF.findall(listing)]
    if hrefs:
        raw.report(path, MULTIGET.format(hrefs="".join(f"<D:href>{h}</D:href>" for h in hrefs)))
    return TOKEN.findall(listing)[0].decode(), len(hrefs)


def current_token(store: Store) -> str:
    """The sync token the store holds."""
    with store.transaction() as db:
        return db.query(SyncState).one().sync_token or ""


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with radicale() as (server, folder):
        config = bench_config(server, folder)
        store = open_store(config.store.url)
        store.upgrade()
        keys = seed(store, args.sessions, args.students, invited=True)
        publisher = Publisher(config, store)
        t0 = time.perf_counter()
        for key in keys:
            publisher.publish(key)
        print(
            f"poll: {args.sessions} sessions × {args.students} students on Radicale "
            f"(set-up publish took {time.perf_counter() - t0:.1f} s)"
        )
        poller = sync.Poller(store, publisher.calendar, "training@example.org")
        raw = RawClient(server)
        path = f"/{server.organizer}/trainings/"
        student = StudentSide(server)
        with store.transaction() as db:
            hrefs = {s.key: s.href for s in db.query(TrainingSession)}

        # (c) first full sync: no token, no known ETags, so every event is parsed.
        with store.transaction() as db:
            db.query(TrainingSession).update({"etag": None})
        t_fetch0 = time.perf_counter()
        changes = publisher.calendar.changes_since(None)
        t_fetch = time.perf_counter() - t_fetch0
        t_parse0 = time.perf_counter()
        for event in changes.changed:
            ical.read_event(event.body)
        t_parse = time.perf_counter() - t_parse0
        ours_full, result = _timed_poll(poller)
        assert result.full and result.changed_events == args.sessions, result
        raw_full, (_, listed) = _timed(raw_poll, raw, path, "")
        assert listed == args.sessions

        # (a) no change.
        ours_idle, raw_idle = [], []
        for _ in range(args.rounds):
            seconds, result = _timed_poll(poller)
            assert result.changed_events == 0 and result.answers == 0
            ours_idle.append(seconds)
            raw_idle.append(_timed(raw_poll, raw, path, current_token(store))[0])

        # (b) ten changed sessions per round.
        ours_ten, raw_ten = [], []
        answers = ["ACCEPTED", "DECLINED", "TENTATIVE"]
        for round_ in range(args.rounds):
            token = current_token(store)
            for i in range(10):
                key = keys[(round_ * 10 + i) % len(keys)]
                student.answer(hrefs[key], {f"s{i:05d}@example.org": answers[round_ % 3]})
            seconds, listed = _timed(raw_poll, raw, path, token)
            assert listed[1] == 10, listed
            raw_ten.append(seconds)
            seconds, result = _timed_poll(poller)
            assert result.changed_events == 10 and result.answers == 10, result
            ours_ten.append(seconds)

        med = statistics.median
        print(ratio_line("(a) no-change poll (median)", med(ours_idle), med(raw_idle), 1.2))
        print(
            ratio_line(
                "(b) poll after 10 changed sessions (median)", med(ours_ten), med(raw_ten), 1.5
            )
        )
        print(ratio_line("(c) first full sync", ours_full, raw_full, 2.0))
        print(
            f"    (c) breakdown: fetch (sync REPORT + multiget) "
            f"{t_fetch:.3f} s, parse {args.sessions} events {t_parse:.3f} s, "
            f"the rest (diff, store reads and commit) "
            f"{max(ours_full - t_fetch - t_parse, 0):.3f} s"
        )
        store.close()


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def _timed_poll(poller: sync.Poller):  # type: ignore[no-untyped-def]
    return _timed(poller.poll)


if __name__ == "__main__":
    main()
