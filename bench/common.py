"""Shared set-up for the benchmarks: a real Radicale, a seeded SQLite store, raw HTTP.

The raw floor is plain HTTP with niquests, the same library caldav uses, on one
keep-alive connection: what any client must at least spend talking to the server.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

import niquests

from tmcaldav.app import open_store
from tmcaldav.config import Config, parse_config
from tmcaldav.publish import Publisher
from tmcaldav.store import Store
from tmcaldav.store.model import Enrollment, Person, TrainingSession
from tmcaldav.testing import RadicaleServer, start_radicale

T = TypeVar("T")


@contextmanager
def radicale() -> Iterator[tuple[RadicaleServer, Path]]:
    """A Radicale in a temp folder, and the folder for other files."""
    with tempfile.TemporaryDirectory(prefix="tmcaldav-bench-") as tmp:
        folder = Path(tmp)
        server = start_radicale(folder / "radicale")
        try:
            yield server, folder
        finally:
            server.stop()


def bench_config(server: RadicaleServer, folder: Path, calendar: str = "trainings") -> Config:
    """A config for the organizer on `server`, with a SQLite store in `folder`."""
    pw = folder / "pw"
    pw.write_text(server.users[server.organizer])
    pw.chmod(0o600)
    return parse_config(
        {
            "store": {"url": f"sqlite:///{folder / 'store.db'}"},
            "caldav": {
                "url": server.url,
                "username": server.organizer,
                "password_file": str(pw),
                "calendar": calendar,
            },
            "scheduling": {
                "organizer_email": "training@example.org",
                "organizer_name": "Training Office",
            },
        }
    )


def seed(store: Store, sessions: int, students: int, *, invited: bool = False) -> list[str]:
    """`sessions` sessions with `students` enrolled students each; returns the keys."""
    start = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    keys = []
    with store.transaction() as db:
        people = [
            Person(email=f"s{i:05d}@example.org", name=f"Student {i}") for i in range(students)
        ]
        db.add_all(people)
        for n in range(sessions):
            key = f"BENCH-{n:05d}"
            keys.append(key)
            session = TrainingSession(
                key=key,
                title=f"Training {n}",
                tz="Europe/Berlin",
                start_at=start + timedelta(days=n % 300, hours=n % 5),
                end_at=start + timedelta(days=n % 300, hours=n % 5 + 2),
                capacity=students,
                location="Room 1",
            )
            session.enrollments = [
                Enrollment(
                    person=p,
                    status="enrolled",
                    calendar_status="invited" if invited else "not_invited",
                )
                for p in people
            ]
            db.add(session)
    return keys


def size_arguments(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the calendar's size: ``--sessions`` and ``--students``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--students", type=int, default=30)
    return parser


@dataclass
class PublishedCalendar:
    """A Radicale whose calendar holds every seeded session, all students invited."""

    server: RadicaleServer
    folder: Path
    config: Config
    store: Store
    publisher: Publisher
    keys: list[str]
    #: How long publishing every session took (set-up, not a figure).
    publish_seconds: float


@contextmanager
def published_calendar(sessions: int, students: int) -> Iterator[PublishedCalendar]:
    """A Radicale, a store seeded with `sessions` × `students` (invited), all published."""
    with radicale() as (server, folder):
        config = bench_config(server, folder)
        store = open_store(config.store.url)
        store.upgrade()
        keys = seed(store, sessions, students, invited=True)
        publisher = Publisher(config, store)
        publish_seconds, _ = timed(lambda: [publisher.publish(key) for key in keys])
        yield PublishedCalendar(server, folder, config, store, publisher, keys, publish_seconds)


class RawClient:
    """Plain HTTP to the server as the organizer: the floor every figure is compared to."""

    def __init__(self, server: RadicaleServer):
        self.server = server
        self.http = niquests.Session()
        self.http.auth = (server.organizer, server.users[server.organizer])
        self.requests = 0

    def url(self, path: str) -> str:
        """Absolute URL."""
        return urljoin(self.server.url, path)

    def mkcalendar(self, name: str) -> str:
        """Create a calendar; returns its path."""
        path = f"/{self.server.organizer}/{name}/"
        r = self.http.request("MKCALENDAR", self.url(path))
        assert r.status_code in (201, 405), r.status_code
        return path

    def put(self, path: str, body: str) -> str:
        """Create an event; returns the ETag."""
        self.requests += 1
        r = self.http.put(
            self.url(path),
            data=body.encode(),
            headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
        )
        assert r.status_code == 201, r.status_code
        return str(r.headers["ETag"])

    def report(self, path: str, body: str) -> bytes:
        """A REPORT (Depth 1); returns the raw multistatus."""
        self.requests += 1
        r = self.http.request(
            "REPORT",
            self.url(path),
            data=body.encode(),
            headers={"Depth": "1", "Content-Type": "application/xml"},
        )
        assert r.status_code == 207, r.status_code
        return r.content or b""


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def ratio_line(name: str, ours: float, floor: float, target: float | None = None) -> str:
    """One printed figure: ours, the floor, the ratio and the target."""
    r = ours / floor if floor else float("inf")
    verdict = (
        ""
        if target is None
        else f"  (target ≤ {target:.2f}: {'met' if r <= target else 'MISSED'})"
    )
    return f"{name:<44} ours {ours:9.3f} s   raw {floor:9.3f} s   ratio {r:5.2f}{verdict}"
