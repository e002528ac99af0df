"""Benchmark: the web interface's pages over HTTP, from a real `tmcaldav web` process.

- The session page of a session with 200 students (half of them answered, notes, open
  suggestions), against the floor measured in the same run: the store queries that
  page needs (`web.reads.session_view`, in this process). Target: p95 ≤ 3× the floor's.
- The sessions page with a store of 10 sessions × 30 students and one of 1,000 × 30
  (requests interleaved, so both see the same machine). Target: large/small ≤ 1.5×,
  the cost follows what the page shows, not the size of the store.

    .venv/bin/python bench/web.py [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import seed
from tmcaldav.app import open_store
from tmcaldav.localhost import HOST, free_port, wait_for
from tmcaldav.store import Store, get_session
from tmcaldav.store.model import Note, Response, Suggestion, utcnow
from tmcaldav.web.reads import session_view

PASSWORD = "bench-password"
BIG = "BIG-200"


def big_session(store: Store, students: int = 200) -> None:
    """A session of `students`: half answered (one answer each, a few two), notes, and
    a handful of open suggestions."""
    from tmcaldav.store.model import Enrollment, Person, TrainingSession

    start = utcnow().replace(microsecond=0) + timedelta(days=20)
    with store.transaction() as db:
        session = TrainingSession(
            key=BIG, title="Large lecture", tz="Europe/Berlin", start_at=start,
            end_at=start + timedelta(hours=3), capacity=students, location="Hall A",
            calendar_state="published", uid="uid-big",
        )
        db.add(session)
        statuses = ["accepted", "declined", "tentative", "invited"]
        for i in range(students):
            person = Person(email=f"big{i:04d}@example.org", name=f"Student {i}")
            calendar = statuses[i % 4]
            enrollment = Enrollment(
                person=person, status="enrolled" if i < students - 10 else "waitlisted",
                waitlisted_at=start if i >= students - 10 else None,
                calendar_status=calendar, invited_at=start - timedelta(days=10),
                responded_at=start - timedelta(days=5) if calendar != "invited" else None,
            )
            session.enrollments.append(enrollment)
            if calendar != "invited":
                if i % 8 == 1:
                    enrollment.responses.append(Response(
                        calendar_status="tentative", responded_at=start - timedelta(days=7),
                        source="poll"))
                enrollment.responses.append(Response(
                    calendar_status=calendar, responded_at=enrollment.responded_at,
                    source="imip" if i % 3 else "poll"))
            if i % 5 == 0:
                enrollment.notes.append(Note(text=f"phoned student {i}, will come"))
        db.flush()
        for n, enrollment in enumerate(session.enrollments[:8]):
            db.add(Suggestion(
                session_id=session.id, enrollment_id=enrollment.id, kind="contact_student",
                reason="said maybe; ask", plugin="bench", dedupe_key=f"bench-{n}",
            ))


def make_store(folder: Path, sessions: int, students: int, *, big: bool) -> Path:
    """An upgraded store with a web user; returns its config file."""
    folder.mkdir()
    url = f"sqlite:///{folder / 'store.db'}"
    store = open_store(url)
    store.upgrade()
    seed(store, sessions, students, invited=True)
    if big:
        big_session(store)
    from tmcaldav.web.users import add_user

    with store.transaction() as db:
        add_user(db, "bench", PASSWORD, "viewer")
    store.close()
    config = folder / "daemon.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\n\n[scheduling]\norganizer_email = "t@example.org"\n'
    )
    return config


class Web:
    """`tmcaldav web` on a store, with a logged-in client."""

    def __init__(self, config: Path):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tmcaldav", "-c", str(config), "web",
             "--listen", f"{HOST}:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=30)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError("tmcaldav web stopped")
            try:
                return self.client.get("/login").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 30, "tmcaldav web")
        page = self.client.get("/login").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        done = self.client.post(
            "/login", data={"name": "bench", "password": PASSWORD, "csrf_token": token}
        )
        assert done.status_code == 303, done.status_code

    def get(self, path: str) -> float:
        """Seconds for one page (it must come back whole)."""
        t0 = time.perf_counter()
        response = self.client.get(path)
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200 and response.text.rstrip().endswith("</html>")
        return elapsed

    def stop(self) -> None:
        """Stop the server."""
        self.client.close()
        self.process.terminate()
        self.process.wait(20)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def line(name: str, samples: list[float]) -> str:
    """One printed figure."""
    p50, p95 = percentiles(samples)
    return f"{name:<48} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   (n={len(samples)})"


def interleave(n: int, *runs: Callable[[], float]) -> list[list[float]]:
    """Run each measurement n times, taking turns."""
    results: list[list[float]] = [[] for _ in runs]
    for _ in range(n):
        for i, run in enumerate(runs):
            results[i].append(run())
    return results


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory(prefix="tmcaldav-bench-web-") as tmp:
        folder = Path(tmp)
        print("seeding the stores (10 × 30, and 1,000 × 30 plus one session of 200) …")
        small = Web(make_store(folder / "small", 10, 30, big=False))
        large_config = make_store(folder / "large", 1000, 30, big=True)
        large = Web(large_config)
        store = open_store(large_config.read_text().split('"')[1])
        try:
            with store.scratch() as db:
                shown = len(get_session(db, BIG).enrollments)
            assert shown == 200

            def floor() -> float:
                t0 = time.perf_counter()
                with store.scratch() as db:
                    session_view(db, BIG)
                return time.perf_counter() - t0

            def page() -> float:
                return large.get(f"/sessions/{BIG}")

            # Warm up both processes and this one (imports, caches, the SQLite pages).
            interleave(20, floor, page, lambda: small.get("/sessions"),
                       lambda: large.get("/sessions"))
            floors, pages = interleave(n, floor, page)
            small_list, large_list = interleave(
                n, lambda: small.get("/sessions"), lambda: large.get("/sessions")
            )
        finally:
            store.close()
            small.stop()
            large.stop()

    print()
    print(line("session page, 200 students (HTTP)", pages))
    print(line("  floor: its store queries (session_view)", floors))
    ratio = percentiles(pages)[1] / percentiles(floors)[1]
    print(f"  p95 ratio page/queries: {ratio:.2f}  (target ≤ 3.00: "
          f"{'met' if ratio <= 3 else 'MISSED'})")
    print(line("sessions page, store of 10 × 30", small_list))
    print(line("sessions page, store of 1,000 × 30", large_list))
    for name, index in (("p50", 0), ("p95", 1)):
        r = percentiles(large_list)[index] / percentiles(small_list)[index]
        print(f"  {name} ratio large/small store: {r:.2f}  (target ≤ 1.50: "
              f"{'met' if r <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
