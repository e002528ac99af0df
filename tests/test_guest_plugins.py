"""Plugins are guests: real plugin files in a `plugin_dirs` folder that call sys.exit,
raise, or sleep, run by `tmcaldav sync` and the daemon against a real Radicale.

A plugin's failure is its own: the others run once per event, the outbox is not held
up, a plugin that keeps failing one event is parked for it (and named by `doctor`), a
hook that overruns `hook_timeout` is abandoned, and a stop request is honoured at once.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.plugin_file_support import (
    logged_calls,
    plugins_section,
    recording_plugin,
    run_sync,
)
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.store_support import session_href
from tests.test_daemon import DaemonProcess
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.localhost import wait_for
from tmcaldav.store.model import Outbox, PluginAttempt
from tmcaldav.testing import RadicaleServer

# Records every call in a file: the side effect that must not be repeated.
COUNTER = recording_plugin("on_response", "on_decline")

# Misbehaves in on_response (and on_decline): the statement is filled in per test.
GUEST = """
import sys
import time

from tmcaldav.hookspecs import hookimpl


@hookimpl
def on_response(change, context):
    {statement}


@hookimpl
def on_decline(change, context):
    {statement}
"""

STUDENTS = {"ann@example.org": "Ann", "bob@example.org": "Bob", "cy@example.org": "Cy"}


def world(
    tmp_path: Path, server: RadicaleServer, statement: str, plugins: str = ""
) -> tuple[Cli, Path]:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "counter.py").write_text(COUNTER)
    (folder / "guest.py").write_text(GUEST.format(statement=statement))
    log = tmp_path / "calls.jsonl"
    extra = plugins_section(folder, ["guest", "counter"], {"counter": {"log_file": log}}, plugins)
    tm = cli_for(tmp_path, server, f"sqlite:///{tmp_path / 'store.db'}", extra=extra)
    add_people(tm, STUDENTS)
    add_session(tm, "TM-1", start="2027-01-04T09:00", end="2027-01-04T12:00")
    tm.ok("enroll", "TM-1", *STUDENTS)
    tm.ok("invite", "TM-1", "--all-enrolled")
    return tm, log


def sync(tm: Cli, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_sync(tm.config, timeout)


def answer(tm: Cli, server: RadicaleServer, answers: dict[str, str]) -> None:
    StudentSide(server).answer(session_href(tm.config), answers)


def calls(log: Path) -> Counter[tuple[str, str]]:
    return Counter((c["hook"], c["event"]) for c in logged_calls(log))


def attempts(tm: Cli) -> list[tuple[str, str, int, bool, bool]]:
    store = open_store(load_config(tm.config).store.url)
    try:
        with store.scratch() as db:
            return sorted(
                (a.plugin, a.hook, a.failures, a.succeeded_at is not None, a.parked_at is not None)
                for a in db.query(PluginAttempt)
            )
    finally:
        store.close()


def pending(tm: Cli) -> int:
    store = open_store(load_config(tm.config).store.url)
    try:
        with store.scratch() as db:
            return db.query(Outbox).filter(Outbox.done_at.is_(None)).count()
    finally:
        store.close()


@pytest.mark.parametrize(
    "statement",
    ["sys.exit(3)", "raise KeyboardInterrupt", "raise GeneratorExit", "raise RuntimeError('bug')"],
)
def test_a_failing_plugin_is_its_own_failure_and_is_parked(
    statement: str, tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    tm, log = world(tmp_path, radicale_server, statement, "max_attempts = 3")
    answer(tm, radicale_server, {"ann@example.org": "DECLINED", "bob@example.org": "ACCEPTED"})
    first = sync(tm)
    # The guest's SystemExit is not tmcaldav's: the tick ends normally and says so.
    assert first.returncode == 0, first.stderr
    assert "2 answers recorded" in first.stdout
    assert "plugin failures" in first.stdout
    assert "plugin guest failed in on_response" in first.stderr
    if "exit" in statement or "Interrupt" in statement or "Generator" in statement:
        assert "a plugin may not stop tmcaldav" in first.stderr
    # The other plugin ran every hook of both events, once.
    after_first = calls(log)
    assert sorted(h for h, _ in after_first) == ["on_decline", "on_response", "on_response"]
    assert set(after_first.values()) == {1}
    assert pending(tm) == 2
    if statement != "sys.exit(3)":
        return  # parking is the same for every kind of failure: shown once, below
    for _ in range(2):
        again = sync(tm)
        assert again.returncode == 0, again.stderr
    # Parked after three failures in a row; the other plugin never ran again.
    assert calls(log) == after_first
    assert pending(tm) == 0
    parked = [a for a in attempts(tm) if a[0] == "guest"]
    assert [(hook, failures, is_parked) for _, hook, failures, _, is_parked in parked] == [
        ("on_decline", 3, True),
        ("on_response", 3, True),
        ("on_response", 3, True),
    ]
    assert "it is parked for this event" in again.stderr
    assert "parked (see tmcaldav doctor)" in again.stdout
    doctor = tm("doctor")
    assert "warn plugin guest is parked for 3 events" in doctor.output
    # Nothing is left to do, and the guest is not called for those events again.
    assert "plugins told of 0 changes" in sync(tm).stdout


def test_a_plugin_that_sleeps_is_abandoned_at_hook_timeout(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    tm, log = world(
        tmp_path, radicale_server, "time.sleep(120)", "hook_timeout = 1\nmax_attempts = 2"
    )
    answer(tm, radicale_server, {"cy@example.org": "TENTATIVE"})
    # Without the timeout this sync would sleep for two minutes per hook call.
    first = sync(tm, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "timed out: it did not return within 1 s ([plugins] hook_timeout)" in first.stderr
    assert calls(log) and set(calls(log).values()) == {1}
    second = sync(tm, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "it is parked for this event" in second.stderr
    assert pending(tm) == 0
    assert set(calls(log).values()) == {1}


def test_the_daemon_stops_at_once_while_a_plugin_sleeps(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    mark = tmp_path / "sleeping"
    tm, _log = world(
        tmp_path,
        radicale_server,
        f"open({str(mark)!r}, 'w').close(); time.sleep(120)",
        "hook_timeout = 100",
    )
    tm.config.write_text(tm.config.read_text() + "\n[daemon]\npoll_interval = 0.3\n")
    daemon = DaemonProcess(tm.config, tmp_path / "d.log")
    try:
        daemon.wait_log("tick:")
        answer(tm, radicale_server, {"bob@example.org": "DECLINED"})
        wait_for(mark.exists, 30, "the plugin to start sleeping")
        daemon.signal(signal.SIGTERM)
        # The hook would sleep for two minutes, and hook_timeout is 100 s.
        assert daemon.wait(timeout=10) == 0
        text = daemon.text()
        assert "was still in on_response" in text and "abandoned" in text
        assert "tmcaldav daemon stopped" in text
        assert "Traceback" not in text
    finally:
        daemon.kill()
    # The event is still pending: its hooks run again after the restart.
    assert pending(tm) >= 1
