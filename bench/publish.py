"""Benchmark: publish 1,000 sessions × 30 students to a real Radicale.

Ours: `Publisher.invite(key, all_enrolled=True)` for every session, as
`tmcaldav invite KEY --all-enrolled` does (store snapshot, build the event, create it
with If-None-Match, record href/ETag/SEQUENCE). Raw floor, in the same run: the same
iCalendar bodies PUT with plain HTTP into a second, empty calendar on the same server.

    .venv/bin/python bench/publish.py [--sessions 1000] [--students 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RawClient, bench_config, radicale, ratio_line, seed
from tmcaldav import ical
from tmcaldav.app import open_store
from tmcaldav.caldav import resource_name
from tmcaldav.publish import Plan, Publisher, merge_attendees, snapshot
from tmcaldav.store import get_session


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--students", type=int, default=30)
    args = parser.parse_args()
    with radicale() as (server, folder):
        config = bench_config(server, folder)
        store = open_store(config.store.url)
        store.upgrade()
        keys = seed(store, args.sessions, args.students)
        publisher = Publisher(config, store)
        _ = publisher.calendar  # connect (and create the calendar) outside the timing

        # The raw floor's bodies: the same events, built by the same code beforehand
        # (as every attendee NEEDS-ACTION, which is what invite --all-enrolled writes).
        bodies = []
        with store.transaction() as db:
            for key in keys:
                snap = snapshot(get_session(db, key))
                students = tuple(replace(s, calendar_status="invited") for s in snap.students)
                plan = Plan(attendees=students)
                attendees, _ = merge_attendees(plan, None)
                uid = ical.session_uid(key, config.scheduling.organizer_email)
                spec = publisher._spec(snap, attendees, 0, plan, uid)
                bodies.append((uid, ical.build_calendar(spec)))
        raw = RawClient(server)
        path = raw.mkcalendar("raw-floor")
        # Interleaved, so both calendars grow in step: Radicale slows down as a
        # calendar fills up, and that must weigh on both figures alike.
        ours = floor = 0.0
        for key, (uid, body) in zip(keys, bodies, strict=True):
            t0 = time.perf_counter()
            publisher.invite(key, all_enrolled=True)
            t1 = time.perf_counter()
            raw.put(path + resource_name(uid), body)
            t2 = time.perf_counter()
            ours += t1 - t0
            floor += t2 - t1
        our_requests = publisher.calendar.request_count

        print(f"publish: {args.sessions} sessions × {args.students} students on Radicale")
        print(ratio_line("publish (invite --all-enrolled) all sessions", ours, floor, 1.15))
        print(
            f"  per session: ours {1000 * ours / len(keys):.2f} ms, "
            f"raw {1000 * floor / len(keys):.2f} ms; requests ours "
            f"{our_requests}, raw {raw.requests}"
        )
        store.close()


if __name__ == "__main__":
    main()
