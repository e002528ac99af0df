"""Suggestions that stay true, end to end against a real Radicale: each case of issue 11
played through the CLI as an administrator would, with the students' answers written
into the organizer's copy on the server.

Each test first shows the advice being given, then the change that breaks its premise,
then that the advice was withdrawn (with its reason, in `--all` and the student's
history) and that applying it is refused with nothing changed on the server or in the
store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.scenario import StudentSide, cli_for
from tests.test_plugins_e2e import href
from tmcaldav.store.model import utcnow
from tmcaldav.testing import RadicaleServer

PEOPLE = {
    "ann@example.org": "Ann",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy",
    "dee@example.org": "Dee",
    "eve@example.org": "Eve",
}
PLUGINS = textwrap.dedent(
    """
    [plugins]
    enable = ["waitlist", "followup", "noshow", "reschedule"]

    [plugins.followup]
    days_before = 3
    """
)


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer) -> Cli:
    runner = cli_for(
        tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}", extra=PLUGINS
    )
    for email, name in PEOPLE.items():
        runner.ok("person", "add", email, "--name", name)
    return runner


@pytest.fixture
def student(radicale_server: RadicaleServer) -> StudentSide:
    return StudentSide(radicale_server)


def at(days: float) -> str:
    return (utcnow() + timedelta(days=days)).replace(microsecond=0).isoformat()


def session(
    tm: Cli, key: str = "TM-1", *, days: float = 30, capacity: int = 3, course: str = ""
) -> None:
    options = ["--capacity", str(capacity)] + (["--course", course] if course else [])
    tm.ok(
        "session", "add", key, "--title", f"Intro {key}", "--start", at(days), "--end",
        at(days + 0.25), *options,
    )  # fmt: skip


def listed(tm: Cli, *args: str) -> list[dict]:
    return json.loads(tm.ok("suggestions", *args, "--json").output)


def page(tm: Cli, key: str = "TM-1") -> dict:
    return json.loads(tm.ok("session", "show", key, "--json").output)


def students(tm: Cli, key: str = "TM-1") -> dict[str, tuple[str, str]]:
    return {s["email"]: (s["status"], s["calendar"]) for s in page(tm, key)["students"]}


def by_kind(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["email"]): r for r in rows}


def test_decline_then_accept_withdraws_the_cancel_and_the_invitation(
    tm: Cli, student: StudentSide
) -> None:
    session(tm)
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    tm.ok("enroll", "TM-1", "dee@example.org", "--waitlist")
    tm.ok("invite", "TM-1", "--all-enrolled")
    tm.ok("sync")
    student.answer(href(tm), {"ann@example.org": "DECLINED"})
    tm.ok("sync")
    advice = by_kind(listed(tm))
    cancel = advice[("cancel_enrollment", "ann@example.org")]
    invite = advice[("invite_waitlisted", "dee@example.org")]
    assert cancel["reason"] == (
        "Ann declined the invitation; free their seat for the waitlist (1 waiting)"
    )
    assert cancel["premise"]["student"]["calendar"] == "declined"

    # Ann changes her mind: both suggestions go, in the poll's own transaction.
    student.answer(href(tm), {"ann@example.org": "ACCEPTED"})
    tm.ok("sync")
    assert listed(tm) == []
    everything = by_kind(listed(tm, "--all"))
    for row in (everything[("cancel_enrollment", "ann@example.org")],
                everything[("invite_waitlisted", "dee@example.org")]):  # fmt: skip
        assert row["state"] == "withdrawn"
        assert row["withdrawn_reason"].startswith("Ann accepted at ")
        assert row["withdrawn_reason"].endswith(", after this was suggested")
    text = tm.ok("suggestions", "--all").output
    assert "withdrawn: Ann accepted at" in text

    # Applying them without --force is refused; nothing changes on the server or here.
    on_server = student.partstats(href(tm))
    before = students(tm)
    for row in (cancel, invite):
        refused = tm("suggestions", "apply", str(row["id"]))
        assert refused.exit_code == 1
        assert "Ann accepted at" in refused.stderr
        assert f"tmcaldav suggestions apply {row['id']} --force" in refused.stderr
    assert student.partstats(href(tm)) == on_server == {
        "ann@example.org": "ACCEPTED",
        "bob@example.org": "NEEDS-ACTION",
        "cy@example.org": "NEEDS-ACTION",
    }
    assert students(tm) == before
    assert [r["state"] for r in listed(tm, "--all")] == ["withdrawn", "withdrawn"]

    # The withdrawn advice is in Ann's history, with why.
    history = tm.ok("session", "history", "TM-1", "ann@example.org").output
    assert "cancel_enrollment" in history and "withdrawn: Ann accepted at" in history

    # She declines again: the same advice is given again, and now it applies.
    student.answer(href(tm), {"ann@example.org": "DECLINED"})
    tm.ok("sync")
    again = by_kind(listed(tm))
    assert set(again) == {
        ("cancel_enrollment", "ann@example.org"),
        ("invite_waitlisted", "dee@example.org"),
    }
    tm.ok("suggestions", "apply", str(again[("cancel_enrollment", "ann@example.org")]["id"]))
    tm.ok("suggestions", "apply", str(again[("invite_waitlisted", "dee@example.org")]["id"]))
    assert student.partstats(href(tm)) == {
        "bob@example.org": "NEEDS-ACTION",
        "cy@example.org": "NEEDS-ACTION",
        "dee@example.org": "NEEDS-ACTION",
    }
    # A cancelled student's Calendar column still shows the decline she gave, with its time.
    ann = {s["email"]: s for s in page(tm)["students"]}["ann@example.org"]
    assert (ann["status"], ann["calendar"], ann["icon"]) == ("cancelled", "declined", "✗")
    assert ann["responded_at"]
    assert "✗ declined" in tm.ok("session", "show", "TM-1").output


def test_maybe_then_yes_withdraws_the_contact_and_a_reschedule_withdraws_answers(
    tm: Cli, student: StudentSide
) -> None:
    session(tm, days=2)  # within followup's days_before: Maybe is followed up at once
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org")
    tm.ok("invite", "TM-1", "--all-enrolled")
    tm.ok("sync")
    student.answer(href(tm), {"ann@example.org": "TENTATIVE", "bob@example.org": "TENTATIVE"})
    tm.ok("sync")
    contacts = by_kind(listed(tm))
    assert set(contacts) == {
        ("contact_student", "ann@example.org"),
        ("contact_student", "bob@example.org"),
    }
    # Nobody waits: no waitlist talk.
    assert all("waiting" not in r["reason"] for r in contacts.values())
    assert "the session starts soon" in contacts[("contact_student", "ann@example.org")]["reason"]

    student.answer(href(tm), {"ann@example.org": "ACCEPTED"})
    tm.ok("sync")
    assert [(r["email"], r["state"]) for r in listed(tm, "--all")] == [
        ("ann@example.org", "withdrawn"),
        ("bob@example.org", "open"),
    ]

    # A reschedule resets every answer: advice made from Bob's Maybe goes too.
    tm.ok("session", "edit", "TM-1", "--start", at(2.5), "--end", at(2.75))
    bob = by_kind(listed(tm, "--all"))[("contact_student", "bob@example.org")]
    assert bob["state"] == "withdrawn"
    assert bob["withdrawn_reason"].startswith("session TM-1 was rescheduled")
    refused = tm("suggestions", "apply", str(bob["id"]))
    assert refused.exit_code == 1 and "rescheduled" in refused.stderr
    notes = {s["email"]: s["notes"] for s in page(tm)["students"]}
    assert notes["bob@example.org"] == []


def test_a_non_responder_who_declines_and_no_waiting_for_her_own_seat(
    tm: Cli, student: StudentSide
) -> None:
    session(tm, days=2, capacity=3)
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    tm.ok("enroll", "TM-1", "dee@example.org", "--waitlist")
    tm.ok("invite", "TM-1", "--all-enrolled")
    # Dee, the only one waiting, is invited too (to take a seat when one frees).
    tm.ok("invite", "TM-1", "dee@example.org")
    student.answer(href(tm), {"ann@example.org": "ACCEPTED", "bob@example.org": "ACCEPTED"})
    tm.ok("sync")  # the time check: Cy and Dee have not answered, 2 days before
    advice = by_kind(listed(tm))
    cy = advice[("contact_student", "cy@example.org")]
    # Cy: the session is full and Dee waits. Dee: nobody else waits and she holds no
    # seat to lose, so she is not told she waits for her own seat.
    assert "has not answered the invitation and 1 student is waiting" in cy["reason"]
    assert ("contact_student", "dee@example.org") not in advice or (
        "waiting" not in advice[("contact_student", "dee@example.org")]["reason"]
    )

    student.answer(href(tm), {"cy@example.org": "DECLINED"})
    tm.ok("sync")
    now = by_kind(listed(tm, "--all"))
    assert now[("contact_student", "cy@example.org")]["state"] == "withdrawn"
    assert now[("contact_student", "cy@example.org")]["withdrawn_reason"].startswith(
        "Cy declined at "
    )
    # Cy's decline frees a seat: she is cancelled, and Dee (invited, no answer yet) is
    # not invited twice.
    assert now[("cancel_enrollment", "cy@example.org")]["state"] == "open"
    assert ("invite_waitlisted", "dee@example.org") not in now


def test_two_waitlisted_acceptors_for_one_seat_first_come_first_served(
    tm: Cli, student: StudentSide
) -> None:
    session(tm, capacity=3)
    tm.ok("enroll", "TM-1", "ann@example.org", "bob@example.org", "cy@example.org")
    tm.ok("enroll", "TM-1", "dee@example.org", "--waitlist")
    tm.ok("enroll", "TM-1", "eve@example.org", "--waitlist")
    tm.ok("invite", "TM-1", "--all-enrolled")
    student.answer(href(tm), {"ann@example.org": "DECLINED"})
    tm.ok("sync")
    # One seat frees; the administrator invites both waitlisted students anyway.
    tm.ok("invite", "TM-1", "eve@example.org", "dee@example.org")
    assert ("invite_waitlisted", "dee@example.org") not in by_kind(listed(tm))  # done by hand
    # Eve accepts first, then Dee.
    student.answer(href(tm), {"eve@example.org": "ACCEPTED"})
    tm.ok("sync")
    student.answer(href(tm), {"dee@example.org": "ACCEPTED"})
    tm.ok("sync")
    advice = by_kind(listed(tm))
    promote = advice[("promote_waitlisted", "eve@example.org")]
    assert ("promote_waitlisted", "dee@example.org") not in advice
    dee = advice[("contact_student", "dee@example.org")]
    assert "no seat left; still on the waitlist at position 1" in dee["reason"]

    tm.ok("suggestions", "apply", str(advice[("cancel_enrollment", "ann@example.org")]["id"]))
    tm.ok("suggestions", "apply", str(promote["id"]))
    seats = students(tm)
    assert seats["eve@example.org"] == ("enrolled", "accepted")
    assert seats["dee@example.org"] == ("waitlisted", "accepted")
    assert page(tm)["seats_taken"] == 3  # never overbooked
    # The contact still holds (no seat for Dee); a second decline frees one for her:
    # the contact is withdrawn and Dee is promoted.
    assert by_kind(listed(tm))[("contact_student", "dee@example.org")]["state"] == "open"
    student.answer(href(tm), {"bob@example.org": "DECLINED"})
    tm.ok("sync")
    everything = by_kind(listed(tm, "--all"))
    assert everything[("contact_student", "dee@example.org")]["withdrawn_reason"] == (
        "a seat is free for Dee now"
    )
    assert everything[("promote_waitlisted", "dee@example.org")]["state"] == "open"


def test_cancelling_a_session_offers_the_next_one_and_withdraws_its_advice(
    tm: Cli, student: StudentSide
) -> None:
    session(tm, "EXC-1", days=10, capacity=4, course="EXC")
    session(tm, "EXC-2", days=20, capacity=1, course="EXC")
    tm.ok("enroll", "EXC-1", "ann@example.org", "bob@example.org")
    tm.ok("invite", "EXC-1", "--all-enrolled")
    student.answer(href(tm, "EXC-1"), {"bob@example.org": "TENTATIVE"})
    tm.ok("sync")
    assert listed(tm) == []  # Maybe, 10 days before and nobody waits: asked later

    student.answer(href(tm, "EXC-1"), {"ann@example.org": "DECLINED"})
    tm.ok("sync")
    [cancel_ann] = [r for r in listed(tm) if r["kind"] == "cancel_enrollment"]
    assert "waitlist" not in cancel_ann["reason"]  # nobody waits

    out = tm.ok("session", "cancel", "EXC-1").output
    assert " for its students: tmcaldav suggestions --session" in out
    advice = by_kind(listed(tm, "--session", "EXC-1"))
    # EXC-2 has one seat, offered to Ann already when she declined (that offer stands:
    # it is about the other session); Bob gets a call, as no other seat is free. Ann's
    # cancel is withdrawn: the session is gone.
    offers = [r for r in advice.values() if r["kind"] == "offer_other_session"]
    assert [(r["email"], r["plugin"], r["details"]) for r in offers] == [
        ("ann@example.org", "reschedule", {"session": "EXC-2"})
    ]
    bob = advice[("contact_student", "bob@example.org")]
    assert bob["plugin"] == "tmcaldav"
    assert bob["reason"] == (
        "EXC-1 was cancelled and no other session of the course has a free seat; tell Bob"
    )
    withdrawn = by_kind(listed(tm, "--all"))[("cancel_enrollment", "ann@example.org")]
    assert withdrawn["withdrawn_reason"] == "session EXC-1 was cancelled after this was suggested"
    # The page and the list say the seats are gone.
    assert page(tm, "EXC-1")["free_seats"] == 0
    assert "cancelled: no seats" in tm.ok("session", "show", "EXC-1").output
    listing = tm.ok("session", "list").output
    assert "cancelled" in next(line for line in listing.splitlines() if "EXC-1" in line)

    tm.ok("suggestions", "apply", str(offers[0]["id"]))
    assert students(tm, "EXC-2") == {"ann@example.org": ("enrolled", "invited")}


def test_cancelling_a_session_offers_each_student_the_next_session_with_seats(
    tm: Cli,
) -> None:
    session(tm, "EXC-1", days=10, capacity=4, course="EXC")
    session(tm, "EXC-2", days=20, capacity=1, course="EXC")
    session(tm, "EXC-3", days=30, capacity=5, course="EXC")
    tm.ok("enroll", "EXC-1", "ann@example.org", "bob@example.org")
    tm.ok("session", "cancel", "EXC-1")
    offers = {r["email"]: r for r in listed(tm, "--session", "EXC-1")}
    # Seats handed out in page order: Ann gets EXC-2's only seat, Bob the next session.
    assert {e: r["details"]["session"] for e, r in offers.items()} == {
        "ann@example.org": "EXC-2",
        "bob@example.org": "EXC-3",
    }
    assert all(r["kind"] == "offer_other_session" for r in offers.values())


def test_a_maybe_after_the_start_says_it_has_started(tm: Cli, student: StudentSide) -> None:
    tm.ok(
        "session", "add", "NOW-1", "--title", "Running", "--start", at(-0.05), "--end",
        at(0.2), "--capacity", "3",
    )  # fmt: skip
    tm.ok("enroll", "NOW-1", "ann@example.org")
    tm.ok("invite", "NOW-1", "--all-enrolled")
    student.answer(href(tm, "NOW-1"), {"ann@example.org": "TENTATIVE"})
    tm.ok("sync")
    [contact] = listed(tm)
    assert "the session has started" in contact["reason"]
    assert "starts soon" not in contact["reason"]


def test_long_reasons_wrap_at_word_ends(tm: Cli, student: StudentSide) -> None:
    session(tm, days=2)
    tm.ok("enroll", "TM-1", "ann@example.org")
    tm.ok("invite", "TM-1", "--all-enrolled")
    student.answer(href(tm), {"ann@example.org": "TENTATIVE"})
    tm.ok("sync")
    [row] = listed(tm)
    text = tm.ok("suggestions").output
    words = set(row["reason"].replace(";", " ").split())
    printed = set(text.replace(";", " ").split())
    assert words <= printed  # every word whole, none cut


LAYERING = textwrap.dedent(
    """
    import sys
    from tmcaldav.store import Store
    Store(sys.argv[1]).close()
    assert not [m for m in sys.modules if m.startswith("tmcaldav.hooks")], "store loaded hooks"
    from tmcaldav.app import open_store
    store = open_store(sys.argv[1])
    assert "tmcaldav.hooks.premises" in sys.modules
    store.close()
    print("ok")
    """
)


def test_the_store_knows_no_hooks_and_the_composition_root_installs_the_premises(
    tmp_path: Path,
) -> None:
    # A fresh interpreter: this one has long imported the hooks.
    done = subprocess.run(
        [sys.executable, "-c", LAYERING, f"sqlite:///{tmp_path / 'store.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "ok", done.stderr
