"""Web nodes side by side: two `tmcaldav web` processes and one `tmcaldav run` daemon on
one real PostgreSQL store, against a real Radicale, each a separate process.

An answer a student gives in Radicale, recorded by the daemon, reaches a live page
served by the other web node within 1 s of the daemon's commit (PostgreSQL
LISTEN/NOTIFY; the fallback poll alone would take up to 5 s); after the listening
connections are cut, the nodes say so once, come back, and stay live. A login
throttled on one node is throttled on the other.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from tests.conftest import Cli
from tests.postgres import PostgresServer
from tests.scenario import StudentSide, add_session, cli_for
from tests.test_daemon import STUDENTS, DaemonProcess
from tests.test_standby import href
from tests.web_support import PASSWORDS, WebServer, add_users, csrf_of
from tmcaldav.app import open_store
from tmcaldav.localhost import wait_for
from tmcaldav.store import Store, get_session
from tmcaldav.store.model import Change
from tmcaldav.testing import RadicaleServer
from tmcaldav.web.feed import LISTENER_NAME, ChangeListener
from tmcaldav.web.throttle import LoginThrottle

POLL = 0.3
# What a web node logs when its listening connection fails, and when it is back.
LISTEN_LOST = "the connection that listens to the store failed"
LISTEN_BACK = "listening to the store again"


@dataclass
class Nodes:
    """One PostgreSQL store with TM-1 (three students invited), and two web nodes."""

    tm: Cli
    a: WebServer
    b: WebServer
    store: Store
    token: str


@pytest.fixture
def nodes(
    tmp_path: Path, radicale_server: RadicaleServer, postgres_server: PostgresServer
) -> Iterator[Nodes]:
    url = postgres_server.create_database(f"nodes_{tmp_path.name.lower().replace('-', '_')}")
    tm = cli_for(tmp_path, radicale_server, url, extra=f"\n[daemon]\npoll_interval = {POLL}\n")
    add_users(tm)
    token = tm.ok("user", "token", "boss").stdout.strip()
    for email in STUDENTS:
        tm.ok("person", "add", email, "--name", email.split("@")[0].title())
    add_session(tm, "TM-1", start="2027-01-04T09:00", end="2027-01-04T12:00")
    tm.ok("enroll", "TM-1", *STUDENTS)
    tm.ok("invite", "TM-1", "--all-enrolled")
    store = open_store(url)
    started: list[WebServer] = []
    try:
        # The same config on both nodes: the same store and the same cookie key.
        for name in ("a", "b"):
            started.append(WebServer(tm.config, tmp_path / f"web-{name}.log"))
        yield Nodes(tm, started[0], started[1], store, token)
    finally:
        for web in started:
            web.stop()
        store.close()


class LiveStream:
    """A script following a session page's live channel (Server-Sent Events) in a
    thread, noting the time each change event arrives."""

    def __init__(self, web: WebServer, key: str, token: str):
        self.client = httpx.Client(
            base_url=web.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30, read=60),
        )
        self.events: list[tuple[int, float]] = []
        self.failure: str | None = None
        self._socket: socket.socket | None = None
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(key,), daemon=True)
        self._thread.start()
        assert self._open.wait(20), self.failure or "the live channel did not open"

    def _follow(self, key: str) -> None:
        with (
            contextlib.suppress(httpx.HTTPError, RuntimeError),
            self.client.stream("GET", f"/sessions/{key}/live") as response,
        ):
            if response.status_code != 200:
                self.failure = f"live channel: HTTP {response.status_code}"
                return
            self._socket = response.extensions["network_stream"].get_extra_info("socket")
            for line in response.iter_lines():
                if line.startswith("retry:"):
                    self._open.set()
                elif line.startswith("id: "):
                    self.events.append((int(line[4:]), time.time()))

    def arrival(self, change: int, deadline: float) -> float | None:
        """When the first event for `change` (or a later one) arrived, if it did by
        `deadline` (seconds since the epoch)."""
        return next(
            (at for seen, at in list(self.events) if seen >= change and at <= deadline), None
        )

    def close(self) -> None:
        """Hang up (a shut-down socket wakes the thread blocked reading it)."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.client.close()


def newest_change(store: Store) -> int:
    with store.scratch() as db:
        return db.scalar(select(Change.id).order_by(Change.id.desc()).limit(1)) or 0


def first_change_for(store: Store, key: str, after: int) -> tuple[int, float] | None:
    """(id, commit time) of the first change of session `key` after change `after`."""
    with store.scratch() as db:
        session_id = get_session(db, key, notes=False).id
        row = db.execute(
            select(Change.id, Change.created_at)
            .where(Change.id > after, Change.session_id == session_id)
            .order_by(Change.id)
            .limit(1)
        ).one_or_none()
    return (row.id, row.created_at.timestamp()) if row is not None else None


def answer_reaches(
    live: LiveStream, store: Store, student: StudentSide, event: str, email: str, partstat: str
) -> float:
    """The student answers in their calendar; the daemon records it; returns the seconds
    from the daemon's commit to the live page's event (failing past 1 s)."""
    before = newest_change(store)
    student.answer(event, {email: partstat})
    change, committed = wait_for(
        lambda: first_change_for(store, "TM-1", before), 20, f"the daemon to record {email}"
    )
    # The deadline counts from the daemon's commit (the change row is written just before
    # it), not from when this test noticed the commit.
    deadline = committed + 1.0
    arrived = wait_for(
        lambda: live.arrival(change, deadline),
        max(0.0, deadline - time.time()) + 0.05,
        f"{email}'s answer (change {change}) on the other node within 1 s of the commit",
    )
    return arrived - committed


def test_an_answer_recorded_by_the_daemon_is_live_on_the_other_node_within_1_s(
    nodes: Nodes, tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    student = StudentSide(radicale_server)
    event = href(nodes.tm)
    daemon = DaemonProcess(nodes.tm.config, tmp_path / "daemon.log")
    live = LiveStream(nodes.b, "TM-1", nodes.token)
    try:
        daemon.wait_log("tick:")
        # Node A acts, node B shows it: an administrator's note through A's API.
        before = newest_change(nodes.store)
        noted = httpx.post(
            nodes.a.url + "/api/sessions/TM-1/notes",
            headers={"Authorization": f"Bearer {nodes.token}"},
            json={"email": STUDENTS[2], "text": "phoned: will answer today"},
            timeout=30,
        )
        assert noted.status_code == 201, noted.text
        change, _ = wait_for(lambda: first_change_for(nodes.store, "TM-1", before))
        wait_for(lambda: live.arrival(change, float("inf")), 5, "A's note on B's live page")
        # Students answer in their calendars; three answers, each within 1 s (the
        # fallback poll every 5 s could not do that three times by luck).
        figures = [
            answer_reaches(live, nodes.store, student, event, STUDENTS[0], "ACCEPTED"),
            answer_reaches(live, nodes.store, student, event, STUDENTS[1], "DECLINED"),
        ]
        page = httpx.get(
            nodes.b.url + "/api/sessions/TM-1",
            headers={"Authorization": f"Bearer {nodes.token}"},
            timeout=30,
        ).json()
        calendar = {s["email"]: s["calendar"] for s in page["students"]}
        assert calendar[STUDENTS[0]] == "accepted" and calendar[STUDENTS[1]] == "declined"
        # Cut both nodes' listening connections: each says so once, comes back with
        # backoff, and the page stays live.
        with nodes.store.engine.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": LISTENER_NAME},
            ).all()
        assert len(ended) == 2, ended
        for web in (nodes.a, nodes.b):
            wait_for(lambda web=web: LISTEN_BACK in web.text(), 20, "the listener to be back")
            assert web.text().count(LISTEN_LOST) == 1, web.text()
        figures.append(answer_reaches(live, nodes.store, student, event, STUDENTS[2], "TENTATIVE"))
        print(
            "commit → event on the other web node: "
            + ", ".join(f"{f * 1000:.0f} ms" for f in figures)
            + f" (daemon poll interval {POLL * 1000:.0f} ms, fallback poll 5000 ms)"
        )
    finally:
        live.close()
        daemon.kill()


def try_login(web: WebServer, name: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=web.url, timeout=30) as browser:
        form = browser.get("/login")
        return browser.post(
            "/login",
            data={"name": name, "password": password, "csrf_token": csrf_of(form.text)},
        )


def test_a_login_throttled_on_one_node_is_throttled_on_the_other(nodes: Nodes) -> None:
    # Five failures on node A (each as soon as A lets it be tried): the name and the
    # address must now wait 4 s.
    for _ in range(LoginThrottle.FREE + 2):
        wait_for(
            lambda: try_login(nodes.a, "boss", "not the password").status_code == 401,
            20,
            "node A to try a login",
        )
    refused = try_login(nodes.b, "boss", PASSWORDS["boss"])
    assert refused.status_code == 429, refused.status_code
    assert "Too many failed logins" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    # Once the wait is over, the right password works on either node and clears it.
    wait_for(
        lambda: try_login(nodes.b, "boss", PASSWORDS["boss"]).status_code == 303,
        20,
        "node B to let boss in",
    )
    assert try_login(nodes.a, "boss", "not the password").status_code == 401


def test_the_listener_reads_the_store_url_by_its_parts() -> None:
    """A password with spaces stays one libpq value (its text once made libpq fail, and
    the failure quoted the password in the log); the URL's own parameters are kept."""
    from psycopg.conninfo import conninfo_to_dict

    url = (
        "postgresql+psycopg://tm:correct%20horse%20battery@127.0.0.1:5433/training"
        "?sslmode=require&options=-c%20search_path%3Dtm"
    )
    given = conninfo_to_dict(ChangeListener(url, lambda: None)._conninfo())
    assert given["password"] == "correct horse battery"
    assert (given["user"], given["host"], given["port"]) == ("tm", "127.0.0.1", "5433")
    assert (given["dbname"], given["sslmode"]) == ("training", "require")
    assert given["application_name"] == LISTENER_NAME
    assert str(given["options"]).startswith("-c search_path=tm -c tcp_keepalives_idle=")
