"""Exactly once across a kill: `tmcaldav sync` runs in a subprocess that a plugin kills
(os._exit(137)) after the answers were applied, before or while the hooks run. The next
run fires every hook that did not complete, and no suggestion is doubled.

The plugin appends every call to a file. Hooks of an event whose outbox row was marked
done before the kill appear exactly once; the one event being dispatched at the kill
runs again (side effects are at least once, deduplicated by event id).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.scenario import StudentSide, add_session, cli_for
from tmcaldav.app import open_store
from tmcaldav.store.model import utcnow
from tmcaldav.testing import RadicaleServer

CRASHY = '''
import json
import os
from pathlib import Path

from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import SuggestionSpec


class Crashy:
    """Records each call; kills the process at the configured on_response call."""

    def __init__(self, settings):
        self.log = Path(settings["log_file"])
        self.flag = Path(settings["crash_flag"])
        self.mode = settings["mode"]

    def _record(self, hook, event_id):
        with open(self.log, "a") as f:
            f.write(json.dumps({"hook": hook, "event": event_id}) + "\\n")
            f.flush()
            os.fsync(f.fileno())

    def _responses(self):
        if not self.log.exists():
            return 0
        return sum('"on_response"' in line for line in self.log.read_text().splitlines())

    @hookimpl
    def on_response(self, change, context):
        if self.flag.exists() and self.mode == "before_hooks":
            self.flag.unlink()
            os._exit(137)
        self._record("on_response", context.event_id)
        if self.flag.exists() and self.mode == "mid_dispatch" and self._responses() == 2:
            self.flag.unlink()
            os._exit(137)
        return SuggestionSpec("contact_student", change.email, "answered: " + change.new)

    @hookimpl
    def on_accept(self, change, context):
        self._record("on_accept", context.event_id)

    @hookimpl
    def on_decline(self, change, context):
        self._record("on_decline", context.event_id)

    @hookimpl
    def on_tentative(self, change, context):
        self._record("on_tentative", context.event_id)

    @hookimpl
    def on_suggestion(self, suggestion, context):
        self._record("on_suggestion", context.event_id)


def tmcaldav_plugin(settings):
    return Crashy(settings)
'''


def run_sync(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TMCALDAV_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(config), "sync"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("mode", ["before_hooks", "mid_dispatch"])
def test_a_kill_during_dispatch_loses_and_doubles_nothing(
    mode: str, tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "crashy.py").write_text(CRASHY)
    log, flag = tmp_path / "calls.jsonl", tmp_path / "crash.flag"
    extra = textwrap.dedent(
        f"""
        [plugins]
        enable = ["waitlist", "crashy"]
        plugin_dirs = ["{folder}"]

        [plugins.crashy]
        log_file = "{log}"
        crash_flag = "{flag}"
        mode = "{mode}"
        """
    )
    tm: Cli = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}", extra=extra)
    people = ["ann", "bob", "cy", "dee", "eve"]
    for name in people:
        tm.ok("person", "add", f"{name}@example.org", "--name", name.title())
    begin = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    add_session(
        tm,
        "TM-1",
        "--capacity",
        "3",
        start=begin.isoformat(),
        end=(begin + timedelta(hours=3)).isoformat(),
    )
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    tm.ok("enroll", "TM-1", "dee@example.org", "--waitlist")
    tm.ok("enroll", "TM-1", "eve@example.org", "--waitlist")
    tm.ok("invite", "TM-1", "--all-enrolled")
    tm.ok("sync")
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    href = _href(tm)
    StudentSide(radicale_server).answer(
        href,
        {
            "ann@example.org": "DECLINED",
            "bob@example.org": "TENTATIVE",
            "cy@example.org": "ACCEPTED",
        },
    )
    assert page["students"]

    flag.touch()
    killed = run_sync(tm.config)
    assert killed.returncode == 137, killed.stderr
    assert not flag.exists()
    # The answers were applied before the kill.
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    calendar = {s["email"]: s["calendar"] for s in page["students"]}
    assert (
        calendar["ann@example.org"],
        calendar["bob@example.org"],
        calendar["cy@example.org"],
    ) == ("declined", "tentative", "accepted")
    before = _calls(log)

    again = run_sync(tm.config)
    assert again.returncode == 0, again.stderr
    assert "0 answers recorded" in again.stdout
    calls = _calls(log)
    counts = Counter((c["hook"], c["event"]) for c in calls)
    # Every hook of every event, once — except the event being dispatched at the kill,
    # whose hooks ran again (at least once, same event id).
    repeated = {k: n for k, n in counts.items() if n > 1}
    if mode == "before_hooks":
        assert before == [] and repeated == {}
    else:
        assert len(before) == 3  # event 1: on_response + its answer hook; event 2: on_response
        assert repeated == {("on_response", before[-1]["event"]): 2}
    responses = [e for h, e in counts if h == "on_response"]
    assert len(responses) == 3
    answer_hooks = sorted(h for h, _ in counts if h in ("on_accept", "on_decline", "on_tentative"))
    assert answer_hooks == ["on_accept", "on_decline", "on_tentative"]
    # No suggestion doubled: three contacts (crashy), cancel Ann and invite Dee (waitlist),
    # and on_suggestion once for each.
    rows = json.loads(tm.ok("suggestions", "--json").output)
    assert sorted((r["kind"], r["email"]) for r in rows) == [
        ("cancel_enrollment", "ann@example.org"),
        ("contact_student", "ann@example.org"),
        ("contact_student", "bob@example.org"),
        ("contact_student", "cy@example.org"),
        ("invite_waitlisted", "dee@example.org"),
    ]
    suggestion_events = [e for h, e in counts if h == "on_suggestion"]
    assert sorted(suggestion_events) == sorted(f"suggestion:{r['id']}" for r in rows)
    # A third run has nothing left to do.
    assert "plugins told of 0 changes" in run_sync(tm.config).stdout
    assert _calls(log) == calls


def _calls(log: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _href(tm: Cli) -> str:
    from tmcaldav.config import load_config
    from tmcaldav.store import get_session

    store = open_store(load_config(tm.config).store.url)
    try:
        with store.transaction() as db:
            href = get_session(db, "TM-1").href
    finally:
        store.close()
    assert href
    return href
