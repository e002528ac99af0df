"""`tmcaldav suggestions`, `apply`, `dismiss` and `report no-shows` through the CLI, on
SQLite and PostgreSQL. Kinds that change the event (cancel, invite, offer) are applied
against Radicale in test_plugins_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tmcaldav_plugins.noshow import NoShowPlugin
from tmcaldav_plugins.waitlist import WaitlistPlugin

from tests.conftest import Cli
from tests.plugin_world import answer, config_for, dispatcher_for, seed
from tmcaldav.app import open_store
from tmcaldav.config import Config, load_config
from tmcaldav.hooks.suggestions import SuggestionError, apply_suggestion
from tmcaldav.publish import Publisher
from tmcaldav.store import Store, get_enrollment, get_session
from tmcaldav.store.model import Suggestion, utcnow
from tmcaldav.views import SuggestionSpec

CONTRACT = {"id", "session", "email", "kind", "reason", "plugin", "state", "created_at"}


@pytest.fixture
def store(tm: Cli) -> Iterator[Store]:
    """The CLI's store, for seeding (closed afterwards: PostgreSQL waits for clients)."""
    opened = open_store(load_config(tm.config).store.url)
    yield opened
    opened.close()


class Advice:
    """A plugin giving fixed advice on every decline."""

    def __init__(self, *specs: SuggestionSpec):
        self.specs = specs

    from tmcaldav.hookspecs import hookimpl

    @hookimpl
    def on_decline(self, change):  # type: ignore[no-untyped-def]
        return list(self.specs)


def listed(tm: Cli, *args: str) -> list[dict]:
    return json.loads(tm.ok("suggestions", *args, "--json").output)


def test_list_apply_and_dismiss(tm: Cli, store: Store) -> None:
    seed(store, waitlisted=["dee@example.org"])
    seed(store, "TM-2", enrolled=["eve@example.org"])
    with store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-1"), "dee@example.org").calendar_status = "invited"
    advice = Advice(
        SuggestionSpec("contact_student", "ann@example.org", "ask why"),
        SuggestionSpec("promote_waitlisted", "dee@example.org", "accepted from the waitlist"),
        SuggestionSpec("cancel_enrollment", "ann@example.org", "declined"),
    )
    dispatcher = dispatcher_for(config_for(store.url), store, ("advice", advice))
    answer(store, "TM-1", "ann@example.org", "declined")
    dispatcher.run()
    rows = listed(tm)
    assert [(r["kind"], r["email"], r["state"]) for r in rows] == [
        ("contact_student", "ann@example.org", "open"),
        ("promote_waitlisted", "dee@example.org", "open"),
        ("cancel_enrollment", "ann@example.org", "open"),
    ]
    assert all(set(r) >= CONTRACT for r in rows)
    assert {r["plugin"] for r in rows} == {"advice"}
    assert listed(tm, "--session", "TM-2") == []
    contact_id, promote_id, cancel_id = (r["id"] for r in rows)

    # promote_waitlisted is refused while the session is full, and changes nothing.
    refused = tm("suggestions", "apply", str(promote_id))
    assert refused.exit_code == 1
    assert "session TM-1 is full (3/3)" in refused.stderr
    assert listed(tm)[1]["state"] == "open"

    # Ann's seat is freed (in the store only: this test has no CalDAV server), then promote.
    with store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-1"), "ann@example.org").status = "cancelled"
    out = tm.ok("suggestions", "apply", str(promote_id)).output
    assert "dee@example.org enrolled in TM-1 (was waitlisted)" in out
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    assert {s["email"]: s["status"] for s in page["students"]}["dee@example.org"] == "enrolled"

    # Cancelling Ann by hand broke the premise of the advice about her: the contact and
    # the cancel were withdrawn in that transaction, with the reason.
    everything = {r["id"]: r for r in listed(tm, "--all")}
    assert everything[contact_id]["state"] == "withdrawn"
    assert everything[cancel_id]["state"] == "withdrawn"
    assert everything[contact_id]["withdrawn_reason"] == (
        "Ann's status was changed from enrolled to cancelled, after this was suggested"
    )
    refused = tm("suggestions", "apply", str(contact_id), "--note", "phoned: moved to May")
    assert refused.exit_code == 1
    assert f"suggestion {contact_id} was withdrawn" in refused.stderr
    assert f"tmcaldav suggestions apply {contact_id} --force" in refused.stderr
    assert tm("suggestions", "dismiss", str(cancel_id)).exit_code == 1

    # contact_student with --force: done anyway, with a note.
    tm.ok("suggestions", "apply", str(contact_id), "--note", "phoned: moved to May", "--force")
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    notes = {s["email"]: [n["text"] for n in s["notes"]] for s in page["students"]}
    assert notes["ann@example.org"] == ["phoned: moved to May"]

    # Applying twice: a clear error, exit 1.
    again = tm("suggestions", "apply", str(contact_id))
    assert again.exit_code == 1 and f"suggestion {contact_id} was already applied" in again.stderr
    missing = tm("suggestions", "apply", "999")
    assert missing.exit_code == 1 and "no suggestion with id 999" in missing.stderr

    # Open ones by default; --all shows the decided ones with their state.
    assert listed(tm) == []
    everything = listed(tm, "--all")
    assert [(r["kind"], r["state"]) for r in everything] == [
        ("contact_student", "applied"),
        ("promote_waitlisted", "applied"),
        ("cancel_enrollment", "withdrawn"),
    ]
    assert all(r["decided_at"] for r in everything)
    assert "no suggestions" in tm.ok("suggestions").output
    text = tm.ok("suggestions", "--all").output
    assert "promote_waitlisted" in text and "withdrawn" in text
    unknown = tm("suggestions", "--session", "NOPE")
    assert unknown.exit_code == 1 and "no session with key 'NOPE'" in unknown.stderr


def test_mark_no_show_and_the_report(tm: Cli, store: Store) -> None:
    ended = (utcnow() - timedelta(days=2)).replace(microsecond=0)
    seed(store, "PAST-1", start=ended)
    seed(
        store,
        "PAST-2",
        enrolled=["ann@example.org", "bob@example.org"],
        start=ended - timedelta(days=7),
    )
    seed(store, "FUTURE", enrolled=["ann@example.org"], capacity=None)
    for key in ("PAST-1", "PAST-2"):
        answer(store, key, "ann@example.org", "accepted")
    answer(store, "PAST-1", "bob@example.org", "tentative")
    dispatcher = dispatcher_for(config_for(store.url), store, ("noshow", NoShowPlugin({})))
    dispatcher.run()
    rows = listed(tm, "--session", "PAST-1")
    assert [(r["kind"], r["email"]) for r in rows] == [
        ("mark_no_show", "ann@example.org"),
        ("mark_no_show", "bob@example.org"),
        ("mark_no_show", "cy@example.org"),
    ]
    assert "they had accepted" in rows[0]["reason"]
    ids = {r["email"]: r["id"] for r in rows}
    tm.ok("set-status", "PAST-1", "cy@example.org", "attended")
    came = tm("suggestions", "apply", str(ids["cy@example.org"]))
    assert came.exit_code == 1 and "from enrolled to attended" in came.stderr
    tm.ok("suggestions", "apply", str(ids["ann@example.org"]))
    tm.ok("suggestions", "apply", str(ids["bob@example.org"]))
    past2 = {r["email"]: r["id"] for r in listed(tm, "--session", "PAST-2")}
    tm.ok("suggestions", "apply", str(past2["ann@example.org"]))
    tm.ok("set-status", "PAST-2", "bob@example.org", "attended")

    report = json.loads(tm.ok("report", "no-shows", "--json").output)
    assert report == [
        {
            "email": "ann@example.org",
            "name": "Ann",
            "sessions": 2,
            "accepted": 2,
            "no_shows": 2,
            "accepted_no_shows": 2,
        },
        {
            "email": "bob@example.org",
            "name": "Bob",
            "sessions": 2,
            "accepted": 0,
            "no_shows": 1,
            "accepted_no_shows": 0,
        },
    ]
    text = tm.ok("report", "no-shows").output
    assert "ann@example.org" in text and "NO-SHOWS" in text


def test_report_is_empty_without_no_shows(tm: Cli) -> None:
    assert json.loads(tm.ok("report", "no-shows", "--json").output) == []
    assert "no no-shows recorded" in tm.ok("report", "no-shows").output


def test_auto_applied_waitlist_promotion_is_recorded_as_applied(tm: Cli, store: Store) -> None:
    seed(store, enrolled=["ann@example.org", "bob@example.org"], waitlisted=["dee@example.org"])
    with store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-1"), "dee@example.org").calendar_status = "invited"
    config = config_for(store.url, suggestions={"auto_apply": ["promote_waitlisted"]})
    dispatcher = dispatcher_for(config, store, ("waitlist", WaitlistPlugin({})))
    answer(store, "TM-1", "dee@example.org", "accepted")
    assert dispatcher.run().applied == 1
    [row] = listed(tm, "--all")
    assert (row["kind"], row["state"], row["plugin"]) == (
        "promote_waitlisted",
        "applied",
        "waitlist",
    )
    with store.transaction() as db:
        assert db.scalars(select(Suggestion.state)).all() == ["applied"]


class RacingPublisher(Publisher):
    """A Publisher during whose first status change another apply of `suggestion_id`
    runs from start to end: the interleaving of `suggestions apply N` with the daemon's
    auto-apply of the same suggestion."""

    def __init__(self, config: Config, store: Store, suggestion_id: int):
        super().__init__(config, store)
        self.suggestion_id = suggestion_id
        self.raced: list[str] = []

    def set_status(  # type: ignore[override]
        self, key: str, email: str, status: str, note: str | None = None, **kw: Any
    ) -> str:
        if not self.raced:
            other = Publisher(self.config, self.store)
            self.raced.append(apply_suggestion(self.store, other, self.suggestion_id))
        return super().set_status(key, email, status, note, **kw)


@pytest.mark.parametrize(
    ("kind", "email"),
    [("promote_waitlisted", "dee@example.org"), ("mark_no_show", "bob@example.org")],
)
def test_two_applies_racing_act_once_and_note_once(
    tm: Cli, store: Store, kind: str, email: str
) -> None:
    seed(store, waitlisted=["dee@example.org"])
    config = config_for(store.url)
    advice = Advice(SuggestionSpec(kind, email, "why"))
    answer(store, "TM-1", "ann@example.org", "declined")
    dispatcher_for(config, store, ("advice", advice)).run()
    with store.transaction() as db:  # Ann's seat is free
        get_enrollment(db, get_session(db, "TM-1"), "ann@example.org").status = "cancelled"
    [row] = listed(tm)
    racing = RacingPublisher(config, store, row["id"])
    with pytest.raises(SuggestionError, match=f"suggestion {row['id']} was applied meanwhile"):
        apply_suggestion(store, racing, row["id"], note="phoned: will come")
    assert len(racing.raced) == 1 and racing.raced[0].startswith(f"applied suggestion {row['id']}")
    assert [r["state"] for r in listed(tm, "--all")] == ["applied"]
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    student = {s["email"]: s for s in page["students"]}[email]
    # The daemon's apply gave no note, and the administrator's lost the race: it wrote
    # nothing, as it did not mark the suggestion.
    assert student["notes"] == []
    assert student["status"] == {"promote_waitlisted": "enrolled", "mark_no_show": "no_show"}[kind]


def test_a_note_is_written_once_with_the_apply(tm: Cli, store: Store) -> None:
    seed(store)
    config = config_for(store.url)
    advice = Advice(SuggestionSpec("contact_student", "bob@example.org", "ask why"))
    answer(store, "TM-1", "bob@example.org", "declined")
    dispatcher_for(config, store, ("advice", advice)).run()
    [row] = listed(tm)
    publisher = Publisher(config, store)
    assert "noted the follow-up" in apply_suggestion(store, publisher, row["id"], note="phoned")
    with pytest.raises(SuggestionError, match="was already applied"):
        apply_suggestion(store, publisher, row["id"], note="phoned again")
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    notes = {s["email"]: [n["text"] for n in s["notes"]] for s in page["students"]}
    assert notes["bob@example.org"] == ["phoned"]
