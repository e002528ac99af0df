"""Plugins end to end against a real Radicale: a decline frees a seat for the waitlist,
the suggestions are applied through the CLI, the server and the store agree, and a real
webhook receiver gets each event once, signed."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.scenario import StudentSide, add_session, cli_for
from tests.webhook_receiver import Receiver, receiving
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.store import get_session
from tmcaldav.store.model import utcnow
from tmcaldav.testing import RadicaleServer

SECRET = "e2e-webhook-secret"
PEOPLE = {
    "ann@example.org": "Ann",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy",
    "dee@example.org": "Dee",
    "eve@example.org": "Eve",
}

# Records every hook call, to check on_invitation_sent against the real publisher.
AUDIT = """
import json
from tmcaldav.hookspecs import hookimpl


class Audit:
    def __init__(self, settings):
        self.log = settings["log_file"]

    def _write(self, hook, context, **data):
        with open(self.log, "a") as f:
            f.write(json.dumps({"hook": hook, "event": context.event_id, **data}) + "\\n")

    @hookimpl
    def on_invitation_sent(self, students, session, context):
        self._write("on_invitation_sent", context, session=session.key,
                    emails=[s.email for s in students])

    @hookimpl
    def on_accept(self, change, context):
        self._write("on_accept", context, email=change.email)


def tmcaldav_plugin(settings):
    return Audit(settings)
"""


def start(days: int) -> str:
    return (utcnow() + timedelta(days=days)).replace(microsecond=0).isoformat()


def plugins_config(tmp_path: Path, receiver: Receiver) -> str:
    secret = tmp_path / "webhook.secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    folder = tmp_path / "local-plugins"
    folder.mkdir()
    (folder / "audit.py").write_text(AUDIT)
    return textwrap.dedent(
        f"""
        [plugins]
        enable = ["waitlist", "followup", "noshow", "reschedule", "webhook", "audit"]
        plugin_dirs = ["{folder}"]

        [plugins.webhook]
        urls = ["{receiver.url}"]
        secret_file = "{secret}"
        backoff = 0.05

        [plugins.audit]
        log_file = "{tmp_path / "audit.jsonl"}"
        """
    )


@pytest.fixture
def receiver() -> object:
    with receiving() as r:
        yield r


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer, receiver: Receiver) -> Cli:
    runner = cli_for(
        tmp_path,
        radicale_server,
        f"sqlite:///{tmp_path / 'store.db'}",
        extra=plugins_config(tmp_path, receiver),
    )
    for email, name in PEOPLE.items():
        runner.ok("person", "add", email, "--name", name)
    return runner


def suggestions(tm: Cli, *args: str) -> list[dict]:
    return json.loads(tm.ok("suggestions", *args, "--json").output)


def state(tm: Cli, key: str = "TM-1") -> dict[str, tuple[str, str]]:
    page = json.loads(tm.ok("session", "show", key, "--json").output)
    return {s["email"]: (s["status"], s["calendar"]) for s in page["students"]}


def href(tm: Cli, key: str = "TM-1") -> str:
    store = open_store(load_config(tm.config).store.url)
    try:
        with store.transaction() as db:
            found = get_session(db, key).href
    finally:
        store.close()
    assert found
    return found


def test_decline_frees_a_seat_for_the_waitlist(
    tm: Cli, radicale_server: RadicaleServer, receiver: Receiver, tmp_path: Path
) -> None:
    student = StudentSide(radicale_server)
    add_session(tm, "TM-1", "--capacity", "3", start=start(30), end=start(31))
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    tm.ok("enroll", "TM-1", "dee@example.org", "--waitlist")
    tm.ok("enroll", "TM-1", "eve@example.org", "--waitlist")
    tm.ok("invite", "TM-1", "--all-enrolled")
    out = tm.ok("sync").output
    assert "0 new suggestions" in out

    # Ann declines: cancel her, invite the first on the waitlist (Dee). Nothing else.
    student.answer(href(tm), {"ann@example.org": "DECLINED"})
    out = tm.ok("sync").output
    assert "1 answer recorded" in out and "2 new suggestions" in out
    open_ = suggestions(tm)
    assert [(s["kind"], s["email"], s["plugin"]) for s in open_] == [
        ("cancel_enrollment", "ann@example.org", "waitlist"),
        ("invite_waitlisted", "dee@example.org", "waitlist"),
    ]
    for s in open_:
        tm.ok("suggestions", "apply", str(s["id"]))

    # The server and the store agree: Ann is off the event, Dee is on it, unanswered.
    assert student.partstats(href(tm)) == {
        "bob@example.org": "NEEDS-ACTION",
        "cy@example.org": "NEEDS-ACTION",
        "dee@example.org": "NEEDS-ACTION",
    }
    # Ann is off the event; the Calendar column still shows the decline she gave.
    assert state(tm) == {
        "ann@example.org": ("cancelled", "declined"),
        "bob@example.org": ("enrolled", "invited"),
        "cy@example.org": ("enrolled", "invited"),
        "dee@example.org": ("waitlisted", "invited"),
        "eve@example.org": ("waitlisted", "not_invited"),
    }

    # Dee accepts: promote her.
    student.answer(href(tm), {"dee@example.org": "ACCEPTED"})
    out = tm.ok("sync").output
    assert "1 answer recorded" in out and "1 new suggestion" in out
    [promote] = suggestions(tm)
    assert (promote["kind"], promote["email"]) == ("promote_waitlisted", "dee@example.org")
    tm.ok("suggestions", "apply", str(promote["id"]))
    assert state(tm)["dee@example.org"] == ("enrolled", "accepted")
    assert student.partstats(href(tm))["dee@example.org"] == "ACCEPTED"
    assert "0 answers recorded" in tm.ok("sync").output
    assert len(suggestions(tm, "--all")) == 3

    # The webhook receiver got each answer and each suggestion once, signed.
    got = receiver.wait_for(5)
    assert len(got) == 5
    assert len({r.event_id for r in got}) == 5
    assert all(r.signed_with(SECRET.encode()) for r in got)
    bodies = [r.json for r in got]
    assert [(b["type"], b["data"]["email"]) for b in bodies if b["type"] == "response"] == [
        ("response", "ann@example.org"),
        ("response", "dee@example.org"),
    ]
    assert sorted(b["data"]["kind"] for b in bodies if b["type"] == "suggestion") == [
        "cancel_enrollment",
        "invite_waitlisted",
        "promote_waitlisted",
    ]
    assert all(b["event_id"] == r.event_id for b, r in zip(bodies, got, strict=True))

    # on_invitation_sent fired once per invitation: the first three (`tmcaldav invite`),
    # then Dee's (made by applying the suggestion).
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    invitations = [a for a in audit if a["hook"] == "on_invitation_sent"]
    assert [(a["session"], a["emails"]) for a in invitations] == [
        ("TM-1", ["ann@example.org", "bob@example.org", "cy@example.org"]),
        ("TM-1", ["dee@example.org"]),
    ]
    assert [a["email"] for a in audit if a["hook"] == "on_accept"] == ["dee@example.org"]


def test_offer_other_session_enrolls_and_invites(tm: Cli, radicale_server: RadicaleServer) -> None:
    student = StudentSide(radicale_server)
    add_session(
        tm,
        "EXC-1",
        "--capacity",
        "2",
        "--course",
        "EXC",
        title="Excel 1",
        start=start(10),
        end=start(11),
    )
    add_session(
        tm,
        "EXC-2",
        "--capacity",
        "2",
        "--course",
        "EXC",
        title="Excel 1 again",
        start=start(20),
        end=start(21),
    )
    add_session(
        tm,
        "EXC-3",
        "--capacity",
        "1",
        "--course",
        "EXC",
        title="Full one",
        start=start(15),
        end=start(16),
    )
    tm.ok("enroll", "EXC-1", "ann@example.org", "bob@example.org")
    tm.ok("enroll", "EXC-3", "cy@example.org")
    tm.ok("invite", "EXC-1", "--all-enrolled")
    tm.ok("sync")
    student.answer(href(tm, "EXC-1"), {"bob@example.org": "DECLINED"})
    tm.ok("sync")
    offers = [s for s in suggestions(tm) if s["kind"] == "offer_other_session"]
    assert [(s["email"], s["session"], s["details"]) for s in offers] == [
        ("bob@example.org", "EXC-1", {"session": "EXC-2"})  # EXC-3 is sooner but full
    ]
    out = tm.ok("suggestions", "apply", str(offers[0]["id"])).output
    assert "bob@example.org enrolled in EXC-2 and invited" in out
    assert state(tm, "EXC-2") == {"bob@example.org": ("enrolled", "invited")}
    assert student.partstats(href(tm, "EXC-2")) == {"bob@example.org": "NEEDS-ACTION"}
    again = tm("suggestions", "apply", str(offers[0]["id"]))
    assert again.exit_code == 1 and "already applied" in again.stderr
