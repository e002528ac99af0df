"""The first hour: import, publish, invite every session at once (against Radicale)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.conftest import Cli
from tests.scenario import StudentSide, cli_for
from tmcaldav.store.model import utcnow
from tmcaldav.testing import RadicaleServer


def _imported(tmp_path: Path, server: RadicaleServer) -> Cli:
    tm = cli_for(tmp_path, server, f"sqlite:///{tmp_path / 'store.db'}")
    soon = (utcnow() + timedelta(days=10)).replace(microsecond=0)
    past = (utcnow() - timedelta(days=10)).replace(microsecond=0)
    sessions = tmp_path / "sessions.csv"
    sessions.write_text(
        "key,title,start,end,capacity\n"
        f"S-1,One,{soon.isoformat()},{(soon + timedelta(hours=2)).isoformat()},5\n"
        f"S-2,Two,{(soon + timedelta(days=1)).isoformat()},"
        f"{(soon + timedelta(days=1, hours=2)).isoformat()},5\n"
        f"S-0,Past,{past.isoformat()},{(past + timedelta(hours=2)).isoformat()},5\n"
    )
    people = tmp_path / "people.csv"
    people.write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
    enrollments = tmp_path / "enrollments.csv"
    enrollments.write_text(
        "session,email\nS-1,ann@example.org\nS-1,bob@example.org\nS-2,ann@example.org\n"
        "S-0,bob@example.org\n"
    )
    tm.ok("import", str(sessions), "--kind", "sessions")
    tm.ok("import", str(people), "--kind", "people")
    tm.ok("import", str(enrollments), "--kind", "enrollments")
    return tm


def _invited(tm: Cli, key: str) -> set[str]:
    page = json.loads(tm.ok("session", "show", key, "--json").output)
    return {s["email"] for s in page["students"] if s["calendar"] == "invited"}


def test_publish_says_how_to_invite_and_invite_all_does_it(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    tm = _imported(tmp_path, radicale_server)
    out = tm.ok("publish").output
    assert "published 3 of 3 sessions" in out
    assert "2 sessions published with enrolled students not invited yet" in out
    assert "tmcaldav invite --all" in out
    assert _invited(tm, "S-1") == set()
    out = tm.ok("invite", "--all").output
    assert "invited 3 students in 2 sessions" in out
    assert _invited(tm, "S-1") == {"ann@example.org", "bob@example.org"}
    assert _invited(tm, "S-2") == {"ann@example.org"}
    assert _invited(tm, "S-0") == set()  # it has ended: nobody is invited to the past
    # On the server too: the events carry the attendees.
    student = StudentSide(radicale_server)
    assert len(student.hrefs()) == 3
    # Again: nothing left to invite.
    assert "invited 0 students in 0 sessions" in tm.ok("invite", "--all").output


def test_publish_invite_publishes_and_invites(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    tm = _imported(tmp_path, radicale_server)
    out = tm.ok("publish", "--invite").output
    assert "invited 3 students in 2 sessions" in out
    assert "not invited yet" not in out
    assert _invited(tm, "S-2") == {"ann@example.org"}


def test_invite_needs_a_key_or_all(tmp_path: Path, radicale_server: RadicaleServer) -> None:
    tm = _imported(tmp_path, radicale_server)
    result = tm("invite")
    assert result.exit_code == 2 and "name a session KEY" in result.output
    result = tm("invite", "S-1", "--all")
    assert result.exit_code == 2 and "takes no KEY" in result.output
