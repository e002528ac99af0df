"""The daemon as a real subprocess against a real Radicale: systemd notify, signals,
reload, backoff, the store lock, exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.scenario import StudentSide, add_session, cli_for, radicale_config
from tmcaldav.app import App
from tmcaldav.localhost import wait_for
from tmcaldav.testing import FaultProxy, RadicaleServer

STUDENTS = ["ann@example.org", "bob@example.org", "cy@example.org"]


class DaemonProcess:
    """`tmcaldav run` in a subprocess, its stderr in a file."""

    def __init__(
        self, config: Path, log: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ):
        self.log = log
        self.process = subprocess.Popen(
            # -vv: every tick is logged, so a test can count ticks instead of sleeping.
            [sys.executable, "-m", "tmcaldav", "-vv", "-c", str(config), "run", *args],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            env={**os.environ, **(env or {})},
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 20) -> None:
        wait_for(
            lambda: self.text().count(needle) >= count or self.process.poll() is not None,
            timeout,
            needle,
        )
        assert self.text().count(needle) >= count, (needle, self.text())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def scenario(tmp_path: Path, radicale_server: RadicaleServer) -> Cli:
    tm = cli_for(
        tmp_path,
        radicale_server,
        f"sqlite:///{tmp_path / 'store.db'}",
        extra="\n[daemon]\npoll_interval = 0.3\nbackoff_max = 1.5\n",
    )
    return invite_students(tm)


def invite_students(tm: Cli) -> Cli:
    """TM-1 (4 January 2027, 09:00-12:00) with the three STUDENTS enrolled and invited."""
    for email in STUDENTS:
        tm.ok("person", "add", email, "--name", email.split("@")[0].title())
    add_session(tm, "TM-1", start="2027-01-04T09:00", end="2027-01-04T12:00")
    tm.ok("enroll", "TM-1", *STUDENTS)
    tm.ok("invite", "TM-1", "--all-enrolled")
    return tm


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.kill()


def calendars(tm: Cli) -> dict[str, str]:
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    return {s["email"]: s["calendar"] for s in page["students"]}


def history(tm: Cli, email: str) -> list[dict]:
    return json.loads(tm.ok("session", "history", "TM-1", email, "--json").output)


def failures(tm: Cli) -> int:
    """Failed server attempts in a row, as the daemon stored them."""
    from sqlalchemy import select

    from tmcaldav.store.model import SyncState

    with App(str(tm.config)).store.scratch() as db:
        return max(db.scalars(select(SyncState.failures)), default=0)


def href(tm: Cli) -> str:
    from tmcaldav.store import get_session

    with App(str(tm.config)).store.scratch() as db:
        value = get_session(db, "TM-1").href
    assert value
    return value


def test_sd_notify_ready_status_watchdog_reload_stop(
    scenario: Cli, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    daemon = DaemonProcess(
        scenario.config, tmp_path / "d.log", {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"}
    )
    daemons.append(daemon)
    received: list[str] = []

    def until(field: str) -> str:
        while True:
            message = sock.recv(4096).decode()
            received.append(message)
            if field in message.split("\n") or any(
                line.startswith(field) for line in message.split("\n")
            ):
                return message

    assert "READY=1" in until("READY=1")
    assert until("STATUS=").startswith("STATUS=")
    until("WATCHDOG=1")
    daemon.signal(signal.SIGHUP)
    reloading = until("RELOADING=1")
    assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
    until("READY=1")
    daemon.signal(signal.SIGTERM)
    until("STOPPING=1")
    assert daemon.wait() == 0
    sock.close()


def test_sighup_with_broken_then_good_config(
    scenario: Cli, tmp_path: Path, daemons: list[DaemonProcess], student: StudentSide
) -> None:
    config = scenario.config
    good = config.read_text()
    # The daemon's config will be broken on purpose; the test reads through a copy.
    view = Cli(tmp_path / "view.toml")
    view.config.write_text(good)
    config.write_text(
        good.replace("poll_interval = 0.3", "poll_interval = 3600").replace(
            "backoff_max = 1.5", "backoff_max = 3600"
        )
    )
    daemon = DaemonProcess(config, tmp_path / "d.log")
    daemons.append(daemon)
    daemon.wait_log("tick:")
    config.write_text(good + "\n[nonsense]\nkey = 1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("the new configuration is refused")
    assert "[nonsense]: unknown section" in daemon.text()
    assert daemon.process.poll() is None
    # The old config (a poll an hour) is still in force: the refused one polled every
    # 0.3 s. SIGUSR1 asks for one poll: exactly one more tick, and it records the answer.
    student.answer(href(view), {"ann@example.org": "ACCEPTED"})
    ticks = daemon.text().count("tick:")
    daemon.signal(signal.SIGUSR1)
    wait_for(lambda: calendars(view)["ann@example.org"] == "accepted", what="the polled answer")
    daemon.wait_log("tick:", count=ticks + 1)
    assert "configuration reloaded" not in daemon.text()
    # A good config with a short interval applies.
    config.write_text(good)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("configuration reloaded")
    student.answer(href(view), {"bob@example.org": "DECLINED"})
    wait_for(lambda: calendars(scenario)["bob@example.org"] == "declined", what="the answer")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


@pytest.fixture
def student(radicale_server: RadicaleServer) -> StudentSide:
    return StudentSide(radicale_server)


@dataclass
class MidTick:
    """A scenario whose daemon reaches Radicale through the fault proxy, so a test can
    stall a tick and act in the middle of it."""

    scenario: Cli
    tmp_path: Path
    daemons: list[DaemonProcess]
    student: StudentSide
    faults: FaultProxy
    server: RadicaleServer

    def config(self, extra: str = "") -> Path:
        """The scenario's config, polling every 0.3 s through the proxy, plus `extra`."""
        config = radicale_config(
            self.tmp_path,
            self.server,
            f"sqlite:///{self.tmp_path / 'store.db'}",
            extra="\n[daemon]\npoll_interval = 0.3\n" + extra,
        )
        config.write_text(config.read_text().replace(self.server.url, self.faults.url))
        return config

    def answer(self, answers: dict[str, str]) -> None:
        """Students answer in their calendars (PARTSTAT by address)."""
        self.student.answer(href(self.scenario), answers)


@pytest.fixture
def mid_tick(
    scenario: Cli,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    student: StudentSide,
    radicale_faults: FaultProxy,
    radicale_server: RadicaleServer,
) -> MidTick:
    return MidTick(scenario, tmp_path, daemons, student, radicale_faults, radicale_server)


def test_sigterm_mid_tick_exits_zero_and_keeps_store_consistent(mid_tick: MidTick) -> None:
    config = mid_tick.config()
    mid_tick.answer({"ann@example.org": "DECLINED", "bob@example.org": "ACCEPTED"})
    # The sync REPORT stalls, so the signal lands in the middle of the tick.
    mid_tick.faults.stall_next(1.5, count=1)
    daemon = DaemonProcess(config, mid_tick.tmp_path / "d.log")
    mid_tick.daemons.append(daemon)
    wait_for(lambda: any(m == "REPORT" for m, _ in mid_tick.faults.seen), what="a REPORT")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    states = calendars(mid_tick.scenario)
    assert (states["ann@example.org"], states["bob@example.org"]) in (
        ("declined", "accepted"),
        ("invited", "invited"),
    )
    for email in ("ann@example.org", "bob@example.org"):
        assert len(history(mid_tick.scenario, email)) <= 1


RECORDER = """
import os
from tmcaldav.hookspecs import hookimpl


@hookimpl
def on_response(change, session, context):
    with open(os.environ["TM_HOOK_LOG"], "a") as log:
        log.write(f"{change.event_id} {change.email} {change.new}\\n")
"""


def test_kill_9_mid_tick_then_restart_records_each_answer_once(mid_tick: MidTick) -> None:
    plugins = mid_tick.tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "recorder.py").write_text(RECORDER)
    hook_log = mid_tick.tmp_path / "hooks.log"
    config = mid_tick.config(f'\n[plugins]\nenable = ["recorder"]\nplugin_dirs = ["{plugins}"]\n')
    mid_tick.answer({"ann@example.org": "TENTATIVE", "cy@example.org": "DECLINED"})
    mid_tick.faults.stall_next(3, count=1)
    env = {"TM_HOOK_LOG": str(hook_log)}
    first = DaemonProcess(config, mid_tick.tmp_path / "d1.log", env)
    mid_tick.daemons.append(first)
    wait_for(lambda: any(m == "REPORT" for m, _ in mid_tick.faults.seen), what="a REPORT")
    first.process.send_signal(signal.SIGKILL)
    first.wait()
    second = DaemonProcess(config, mid_tick.tmp_path / "d2.log", env)
    mid_tick.daemons.append(second)
    wait_for(
        lambda: calendars(mid_tick.scenario)["cy@example.org"] == "declined", what="the answers"
    )
    wait_for(
        lambda: hook_log.exists() and len(hook_log.read_text().splitlines()) >= 2, what="the hooks"
    )
    # Three more ticks of the new daemon: nothing may fire twice.
    second.wait_log("tick:", count=second.text().count("tick:") + 3)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    for email, answer in (("ann@example.org", "tentative"), ("cy@example.org", "declined")):
        assert [h["calendar"] for h in history(mid_tick.scenario, email)] == [answer]
    fired = sorted(line.split()[1:] for line in hook_log.read_text().splitlines())
    assert fired == [["ann@example.org", "tentative"], ["cy@example.org", "declined"]]


def test_server_down_backs_off_then_catches_every_answer(
    scenario: Cli,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    student: StudentSide,
    radicale_server: RadicaleServer,
) -> None:
    daemon = DaemonProcess(scenario.config, tmp_path / "d.log")
    daemons.append(daemon)
    daemon.wait_log("tick:")
    radicale_server.stop()
    daemon.wait_log("retrying with backoff")
    # Several failed attempts in a row (the store counts them; backoff caps at 1.5 s).
    wait_for(lambda: failures(scenario) >= 5, timeout=30, what="five failed attempts")
    assert daemon.process.poll() is None
    radicale_server.start()
    student.answer(
        href(scenario),
        {
            "ann@example.org": "ACCEPTED",
            "bob@example.org": "DECLINED",
            "cy@example.org": "TENTATIVE",
        },
    )
    wait_for(lambda: calendars(scenario)["cy@example.org"] == "tentative", what="the answers")
    daemon.wait_log("is back")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    for email in STUDENTS:
        assert len(history(scenario, email)) == 1
    # What an administrator reads (INFO and above): one line when the server failed,
    # naming the URL and the user, and one when it came back, saying for how long.
    said = [
        line
        for line in daemon.text().splitlines()
        if " INFO " in line or " WARNING " in line or " ERROR " in line
    ]
    outage = [line for line in said if "CalDAV server" in line]
    assert len(outage) == 2, outage
    assert "retrying with backoff" in outage[0] and radicale_server.url in outage[0]
    assert "[user organizer]" in outage[0]
    assert " is back after " in outage[1] and "failed attempts" in outage[1]
    assert not any("server failing" in line for line in said)


def test_second_instance_exits_75(
    scenario: Cli, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    first = DaemonProcess(scenario.config, tmp_path / "d1.log")
    daemons.append(first)
    first.wait_log("tick:")
    second = DaemonProcess(scenario.config, tmp_path / "d2.log")
    daemons.append(second)
    assert second.wait() == 75
    assert f"(pid {first.process.pid})" in second.text()
    assert "another tmcaldav daemon" in second.text()
    once = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(scenario.config), "run", "--once"],
        capture_output=True,
        text=True,
    )
    assert once.returncode == 75
    sync = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(scenario.config), "sync"],
        capture_output=True,
        text=True,
    )
    assert sync.returncode == 75 and "polls by itself" in sync.stderr
    first.signal(signal.SIGINT)
    assert first.wait() == 0


def test_run_once_exit_codes_and_persisted_backoff(
    scenario: Cli, tmp_path: Path, student: StudentSide, radicale_server: RadicaleServer
) -> None:
    def once(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tmcaldav", "-c", str(config), "run", "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    student.answer(href(scenario), {"ann@example.org": "ACCEPTED"})
    done = once(scenario.config)
    assert done.returncode == 0, done.stderr
    assert "1 answer recorded" in done.stderr
    assert calendars(scenario)["ann@example.org"] == "accepted"
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nurl = 3\n")
    assert once(bad).returncode == 2
    text = scenario.config.read_text().replace("backoff_max = 1.5", "backoff_max = 60")
    scenario.config.write_text(text.replace("poll_interval = 0.3", "poll_interval = 30"))
    radicale_server.stop()
    done = once(scenario.config)
    assert done.returncode == 1 and "retrying with backoff" in done.stderr
    radicale_server.start()
    # The backoff (15 to 30 s) survived the restart: the next run leaves the server alone.
    done = once(scenario.config)
    assert done.returncode == 1 and "server failing, next attempt" in done.stderr


def test_journald_format(scenario: Cli, tmp_path: Path) -> None:
    log = tmp_path / "journal.log"
    with log.open("wb") as stream:
        st = os.fstat(stream.fileno())
        done = subprocess.run(
            [sys.executable, "-m", "tmcaldav", "-c", str(scenario.config), "run", "--once"],
            stdout=subprocess.DEVNULL,
            stderr=stream,
            timeout=60,
            env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
        )
    assert done.returncode == 0
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines
    assert any(line.startswith("<6>tmcaldav.daemon: ") for line in lines), lines
    assert "pw-organizer" not in log.read_text()


def test_a_store_error_fails_the_tick_not_the_daemon(scenario: Cli) -> None:
    from tmcaldav.daemon import Daemon
    from tmcaldav.store import StoreError

    daemon = Daemon(str(scenario.config))
    poller = daemon.app.poller

    def locked(**_: object) -> None:
        raise StoreError("store sqlite:///x.db: database is locked; nothing was changed")

    poller.poll = locked  # type: ignore[method-assign,assignment]
    result = daemon.tick()
    assert not result.ok and "store busy" in result.summary
    daemon.store.close()


def test_quiet_ticks_are_debug_and_a_heartbeat_says_what_happened(
    scenario: Cli, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import timedelta

    from tmcaldav.daemon import HEARTBEAT, Daemon, TickResult

    daemon = Daemon(str(scenario.config))
    caplog.set_level(logging.DEBUG, logger="tmcaldav")
    daemon._log_tick(TickResult(True, "quiet"))
    daemon._log_tick(TickResult(True, "busy", answers=2, suggestions=1))
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels == {"tick: quiet": logging.DEBUG, "tick: busy": logging.INFO}
    caplog.clear()
    daemon._counted_since -= HEARTBEAT + timedelta(seconds=1)
    daemon._log_tick(TickResult(True, "quiet"))
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert line.startswith("alive: 3 polls, 2 answers recorded, 1 new suggestion since ")
    daemon.store.close()
