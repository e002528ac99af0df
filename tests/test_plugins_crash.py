"""Exactly once across a kill: `tmcaldav sync` runs in a subprocess that a plugin kills
(os._exit(137)) after the answers were applied, before or while the hooks run. The next
run fires every hook that did not complete, and no suggestion is doubled.

The plugin appends every call to a file. Hooks of an event whose outbox row was marked
done before the kill appear exactly once; the one event being dispatched at the kill
runs again (side effects are at least once, deduplicated by event id).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.plugin_file_support import (
    RECORDING,
    logged_calls,
    plugins_section,
    recording_hooks,
    run_sync,
)
from tests.scenario import StudentSide, add_session, cli_for
from tests.store_support import session_href
from tmcaldav.store.model import utcnow
from tmcaldav.testing import RadicaleServer

CRASHY = RECORDING + '''
from tmcaldav.views import SuggestionSpec


class Crashy(Recording):
    """Records each call; kills the process at the configured on_response call."""

    def __init__(self, settings):
        super().__init__(settings)
        self.flag = Path(settings["crash_flag"])
        self.mode = settings["mode"]

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
''' + recording_hooks("on_accept", "on_decline", "on_tentative") + '''
    @hookimpl
    def on_suggestion(self, suggestion, context):
        self._record("on_suggestion", context.event_id)


def tmcaldav_plugin(settings):
    return Crashy(settings)
'''


@pytest.mark.parametrize("mode", ["before_hooks", "mid_dispatch"])
def test_a_kill_during_dispatch_loses_and_doubles_nothing(
    mode: str, tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "crashy.py").write_text(CRASHY)
    log, flag = tmp_path / "calls.jsonl", tmp_path / "crash.flag"
    settings = {"log_file": log, "crash_flag": flag, "mode": mode}
    extra = plugins_section(folder, ["waitlist", "crashy"], {"crashy": settings})
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
    href = session_href(tm.config)
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
    before = logged_calls(log)

    again = run_sync(tm.config)
    assert again.returncode == 0, again.stderr
    assert "0 answers recorded" in again.stdout
    calls = logged_calls(log)
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
    assert logged_calls(log) == calls
