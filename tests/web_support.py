"""Helpers for the web tests: `tmcaldav web` (and `tmcaldav run`) as real processes on
127.0.0.1, and an HTTP client that logs in the way a browser does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tmcaldav.localhost import HOST, free_port, wait_for

PASSWORDS = {"boss": "boss-password", "watcher": "watcher-password"}


class Process:
    """A `tmcaldav` command running in the background, its output in a log file."""

    def __init__(self, config: Path, log: Path, *args: str):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tmcaldav", "-c", str(config), *args],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        )

    def text(self) -> str:
        """What it logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        """True while it runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, as systemctl stop sends; SIGKILL if it does not end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WebServer(Process):
    """`tmcaldav web` on a free port, ready when it answers."""

    def __init__(self, config: Path, log: Path):
        self.port = free_port()
        super().__init__(config, log, "web", "--listen", f"{HOST}:{self.port}")
        self.url = f"http://{HOST}:{self.port}"

        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"tmcaldav web stopped:\n{self.text()}")
            try:
                return httpx.get(self.url + "/login", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 30, "tmcaldav web to answer")


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def browser_client(url: str, name: str | None = None) -> httpx.Client:
    """An HTTP client with a cookie jar, logged in as `name` when given."""
    client = httpx.Client(base_url=url, timeout=30)
    if name is not None:
        page = client.get("/login")
        done = client.post(
            "/login",
            data={"name": name, "password": PASSWORDS[name], "csrf_token": csrf_of(page.text)},
        )
        assert done.status_code == 303, (done.status_code, done.text[:2000])
    return client


def add_users(tm: object) -> None:
    """An admin `boss` and a viewer `watcher`, through `tmcaldav user add`."""
    for name, role in (("boss", "admin"), ("watcher", "viewer")):
        tm.ok("user", "add", name, "--role", role, input=PASSWORDS[name] + "\n")  # type: ignore[attr-defined]
