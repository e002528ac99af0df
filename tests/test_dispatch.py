"""The outbox dispatcher on SQLite and PostgreSQL: each change fires its hooks once,
suggestions are stored once, time hooks fire once, failures stay with their plugin."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.plugin_world import (
    Recorder,
    answer,
    config_for,
    contact,
    dispatcher_for,
    seed,
)
from tmcaldav.hooks.dispatch import Dispatcher
from tmcaldav.hookspecs import hookimpl
from tmcaldav.store import Store, get_enrollment, get_session
from tmcaldav.store.model import Outbox, Suggestion, utcnow
from tmcaldav.views import SuggestionSpec


def suggestions(store: Store) -> list[tuple[str, str, str]]:
    with store.transaction() as db:
        rows = db.scalars(select(Suggestion).order_by(Suggestion.id)).all()
        return [(s.kind, s.plugin, s.dedupe_key) for s in rows]


def recording(store: Store, recorder: Recorder | None = None) -> tuple[Dispatcher, Recorder]:
    """A dispatcher over the store with one plugin, `recorder` (a fresh Recorder unless
    given), named "recorder"; and that recorder."""
    recorder = recorder or Recorder()
    return dispatcher_for(config_for(store.url), store, ("recorder", recorder)), recorder


def test_answers_fire_response_and_answer_hooks(store: Store) -> None:
    seed(store)
    dispatcher, recorder = recording(store)
    answer(store, "TM-1", "ann@example.org", "accepted")
    answer(store, "TM-1", "bob@example.org", "declined")
    answer(store, "TM-1", "cy@example.org", "tentative")
    result = dispatcher.run()
    assert result.events == 3
    assert [(c.hook, c.subject.email) for c in recorder.calls] == [
        ("on_response", "ann@example.org"),
        ("on_accept", "ann@example.org"),
        ("on_response", "bob@example.org"),
        ("on_decline", "bob@example.org"),
        ("on_response", "cy@example.org"),
        ("on_tentative", "cy@example.org"),
    ]
    # The change carries its event id, the same one the context gives.
    decline = recorder.hooks("on_decline")[0]
    assert decline.subject.event_id == decline.event_id
    assert decline.subject.old == "invited" and decline.subject.new == "declined"
    # Nothing is pending any more: a second run fires nothing.
    recorder.calls.clear()
    assert dispatcher.run().events == 0
    assert recorder.calls == []


def test_delegated_and_reset_fire_on_response_only(store: Store) -> None:
    seed(store)
    dispatcher, recorder = recording(store)
    answer(store, "TM-1", "ann@example.org", "delegated")
    answer(store, "TM-1", "bob@example.org", "accepted")
    answer(store, "TM-1", "bob@example.org", "invited")  # the student's client reset it
    dispatcher.run()
    assert [(c.hook, c.subject.email, c.subject.new) for c in recorder.calls] == [
        ("on_response", "ann@example.org", "delegated"),
        ("on_response", "bob@example.org", "accepted"),
        ("on_accept", "bob@example.org", "accepted"),
        ("on_response", "bob@example.org", "invited"),
    ]


def test_answer_on_cancelled_enrollment_fires_no_seat_hooks(store: Store) -> None:
    seed(store)
    with store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-1"), "bob@example.org").status = "cancelled"
    dispatcher, recorder = recording(store)
    answer(store, "TM-1", "bob@example.org", "declined")
    answer(store, "TM-1", "bob@example.org", "accepted")
    dispatcher.run()
    assert [c.hook for c in recorder.calls] == ["on_response", "on_response"]
    assert {c.subject.enrollment_status for c in recorder.calls} == {"cancelled"}


def test_answers_to_a_cancelled_session_fire_no_seat_hooks(store: Store) -> None:
    seed(store, waitlisted=["dee@example.org"])
    advice = {"on_decline": contact(), "on_accept": contact()}
    dispatcher, recorder = recording(store, Recorder(advice=advice))
    # One answer recorded before the cancel, dispatched after it; two that come later.
    answer(store, "TM-1", "ann@example.org", "declined")
    with store.transaction() as db:
        get_session(db, "TM-1").status = "cancelled"
    answer(store, "TM-1", "bob@example.org", "accepted")
    answer(store, "TM-1", "cy@example.org", "tentative")
    result = dispatcher.run()
    assert [(c.hook, c.subject.email) for c in recorder.calls] == [
        ("on_response", "ann@example.org"),
        ("on_response", "bob@example.org"),
        ("on_response", "cy@example.org"),
    ]
    assert {c.subject.enrollment_status for c in recorder.calls} == {"enrolled"}
    assert (result.events, result.suggestions) == (3, 0)


def test_suggestions_are_stored_once_and_fire_on_suggestion(store: Store) -> None:
    seed(store)
    first = Recorder(advice={"on_decline": contact("phone them")})
    # Another plugin gives the same advice: it is stored once (the first plugin's).
    second = Recorder(advice={"on_decline": contact("same advice")})
    dispatcher = dispatcher_for(config_for(store.url), store, ("first", first), ("second", second))
    answer(store, "TM-1", "bob@example.org", "declined")
    result = dispatcher.run()
    stored = suggestions(store)
    assert len(stored) == 1 and stored[0][0] == "contact_student"
    assert result.suggestions == 1
    # Both plugins hear about the new suggestion, once.
    for recorder in (first, second):
        calls = recorder.hooks("on_suggestion")
        assert len(calls) == 1
        assert calls[0].subject.kind == "contact_student"
        assert calls[0].subject.plugin == stored[0][1]
        assert calls[0].event_id.startswith("suggestion:")
    # Bob accepts: the advice made from his decline is withdrawn in that transaction,
    # and both plugins hear of it once (on_suggestion_withdrawn), with the reason.
    answer(store, "TM-1", "bob@example.org", "accepted")
    assert [s[2].partition("#")[2] for s in suggestions(store)] == ["withdrawn:1"]
    assert dispatcher.run().suggestions == 0
    for recorder in (first, second):
        [withdrawn] = recorder.hooks("on_suggestion_withdrawn")
        assert withdrawn.subject.state == "withdrawn"
        assert withdrawn.subject.withdrawn_reason.startswith("Bob accepted")
        assert withdrawn.subject.withdrawn_reason.endswith(", after this was suggested")
        assert withdrawn.event_id == f"suggestion_withdrawn:{withdrawn.subject.id}"
    # He declines again: the reason is back, so is the advice (once).
    answer(store, "TM-1", "bob@example.org", "declined")
    assert dispatcher.run().suggestions == 1
    assert [s[2].partition("#")[2] for s in suggestions(store)] == ["withdrawn:1", ""]
    assert dispatcher.run().suggestions == 0


def test_a_plugin_that_raises_does_not_stop_the_others(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    seed(store)

    class Broken:
        @staticmethod
        def fail(*args: object, **kw: object) -> None:
            raise RuntimeError("plugin bug")

    broken = Recorder(advice={"on_decline": Broken.fail, "on_response": Broken.fail})
    healthy = Recorder(advice={"on_decline": contact()})
    dispatcher = dispatcher_for(
        config_for(store.url, plugins={"enable": [], "max_attempts": 2}),
        store,
        ("broken", broken),
        ("healthy", healthy),
    )
    answer(store, "TM-1", "bob@example.org", "declined")
    with caplog.at_level(logging.ERROR, logger="tmcaldav"):
        result = dispatcher.run()
    assert result.plugin_failures == 2
    # The new suggestion's event is done; the answer's waits for the failing plugin.
    assert result.events == 1 and result.left_pending == 1
    assert [c.hook for c in healthy.hooks("on_decline")] == ["on_decline"]
    assert len(suggestions(store)) == 1
    failures = [r for r in caplog.records if "plugin broken failed in" in r.getMessage()]
    assert {r.getMessage().split(" for event ")[0] for r in failures} == {
        "plugin broken failed in on_response",
        "plugin broken failed in on_decline",
    }
    assert "healthy" not in " ".join(r.getMessage() for r in failures)
    # The next run calls only the plugin that failed; at max_attempts it is parked
    # and the event is done.
    with caplog.at_level(logging.ERROR, logger="tmcaldav"):
        again = dispatcher.run()
    assert again.plugin_failures == 2 and again.parked == 2
    assert again.events == 1 and again.left_pending == 0
    assert [c.hook for c in healthy.calls if c.hook != "on_suggestion"] == [
        "on_response",
        "on_decline",
    ]
    assert [c.hook for c in broken.calls if c.hook != "on_suggestion"] == [
        "on_response",
        "on_decline",
    ] * 2
    assert "plugin broken failed on_decline for event" in caplog.text
    assert "it is parked for this event" in caplog.text
    quiet = dispatcher.run()  # nothing is called again: the event is done
    assert (quiet.events, quiet.plugin_failures, quiet.parked) == (0, 0, 0)
    assert len(suggestions(store)) == 1


def test_bad_return_values_and_bad_advice_are_logged_and_dropped(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    seed(store)
    odd = Recorder(
        advice={
            "on_decline": lambda change, **kw: "cancel them",
            "on_response": lambda change, **kw: SuggestionSpec(
                "contact_student", "stranger@example.org", "not in the session"
            ),
        }
    )
    dispatcher = dispatcher_for(config_for(store.url), store, ("odd", odd))
    answer(store, "TM-1", "bob@example.org", "declined")
    with caplog.at_level(logging.ERROR, logger="tmcaldav"):
        result = dispatcher.run()
    assert result.events == 1 and result.suggestions == 0
    assert "plugin odd returned 'cancel them' from on_decline" in caplog.text
    assert "plugin odd suggested contact_student for stranger@example.org" in caplog.text


def test_suggestion_spec_rejects_bad_advice() -> None:
    with pytest.raises(ValueError, match="unknown suggestion kind"):
        SuggestionSpec("phone_home", "a@example.org", "why")
    with pytest.raises(ValueError, match="needs a reason"):
        SuggestionSpec("contact_student", "a@example.org", " ")
    with pytest.raises(ValueError, match="details"):
        SuggestionSpec("offer_other_session", "a@example.org", "later one")
    spec = SuggestionSpec(
        "offer_other_session", "A@Example.org", "later", details={"session": "TM-2"}
    )
    assert spec.key_for("TM-1") == "offer_other_session:TM-1:a@example.org:TM-2"
    with pytest.raises(TypeError):
        spec.details["session"] = "TM-3"  # type: ignore[index]


def test_no_response_fires_once_per_plugin_at_its_own_window(store: Store) -> None:
    start = (utcnow() + timedelta(days=10)).replace(microsecond=0)
    seed(store, start=start)
    answer(store, "TM-1", "ann@example.org", "accepted")
    answer(store, "TM-1", "bob@example.org", "tentative")
    config = config_for(
        store.url,
        plugins={"enable": [], "early": {"days_before": 7}, "late": {"days_before": 2}},
    )
    early, late = Recorder(), Recorder()
    from tmcaldav.hooks.plugins import get_plugin_manager, register_plugin

    pm = get_plugin_manager(config, load_entrypoints=False)
    register_plugin(pm, early, "early", settings=config.plugins.settings["early"])
    register_plugin(pm, late, "late", settings=config.plugins.settings["late"])
    from tmcaldav.hooks.dispatch import Dispatcher
    from tmcaldav.publish import Publisher

    dispatcher = Dispatcher(config, store, Publisher(config, store), pm)
    dispatcher.run(start - timedelta(days=8))
    assert early.hooks("on_no_response") == late.hooks("on_no_response") == []
    dispatcher.run(start - timedelta(days=6))
    # Bob is unsure, Cy never answered; Ann accepted.
    assert sorted(c.subject.email for c in early.hooks("on_no_response")) == [
        "bob@example.org",
        "cy@example.org",
    ]
    assert {c.subject.calendar_status for c in early.hooks("on_no_response")} == {
        "tentative",
        "invited",
    }
    assert late.hooks("on_no_response") == []
    for day in (5, 4, 1, 0.5):
        dispatcher.run(start - timedelta(days=day))
    assert len(early.hooks("on_no_response")) == 2  # once, however many ticks
    assert sorted(c.subject.email for c in late.hooks("on_no_response")) == [
        "bob@example.org",
        "cy@example.org",
    ]
    fired = early.hooks("on_no_response") + late.hooks("on_no_response")
    assert sorted(c.event_id.rsplit(":", 1)[1] for c in fired) == ["early"] * 2 + ["late"] * 2
    assert len({c.event_id for c in fired}) == 4


def test_no_response_fires_once_for_a_plugin_with_a_very_long_name(store: Store) -> None:
    # Its event ids are too long for the column and end in a digest: they cannot be
    # built in SQL, and are checked against the outbox afterwards instead.
    start = (utcnow() + timedelta(days=10)).replace(microsecond=0)
    seed(store, start=start)
    name = "a_plugin_from_a_very_thorough_organisation_" + "x" * 50
    recorder = Recorder()
    dispatcher = dispatcher_for(config_for(store.url), store, (name, recorder))
    for day in (2, 1.5, 1):
        dispatcher.run(start - timedelta(days=day))
    fired = recorder.hooks("on_no_response")
    assert sorted(c.subject.email for c in fired) == [
        "ann@example.org",
        "bob@example.org",
        "cy@example.org",
    ]
    assert all(len(c.event_id) == 100 and "#" in c.event_id for c in fired)


def test_a_row_that_cannot_be_prepared_is_left_pending_and_counted(store: Store) -> None:
    seed(store)
    dispatcher, recorder = recording(store)
    with store.transaction() as db:
        session_id = get_session(db, "TM-1").id
        # A payload this version cannot read (no email, no old or new status).
        db.add(Outbox(event_id="odd-1", hook="response", session_id=session_id, payload={}))
    answer(store, "TM-1", "ann@example.org", "accepted")
    first = dispatcher.run()
    assert (first.events, first.left_pending) == (1, 1)
    assert dispatcher.run().left_pending == 1  # tried again, and counted again
    assert [c.hook for c in recorder.calls] == ["on_response", "on_accept"]


def test_session_ended_fires_once_and_not_for_old_sessions(store: Store) -> None:
    now = utcnow().replace(microsecond=0)
    seed(store, "OLD", start=now - timedelta(days=60))
    seed(store, "NEW", start=now + timedelta(hours=1), hours=2)
    dispatcher, recorder = recording(store)
    dispatcher.run(now)
    assert recorder.hooks("on_session_ended") == []
    dispatcher.run(now + timedelta(hours=3))
    dispatcher.run(now + timedelta(hours=4))
    assert [c.subject.key for c in recorder.hooks("on_session_ended")] == ["NEW"]
    assert recorder.hooks("on_session_ended")[0].event_id.startswith("session_ended:")


def test_time_hooks_need_a_plugin_that_listens(store: Store) -> None:
    now = utcnow()
    seed(store, start=now - timedelta(days=1), hours=1)
    dispatcher = dispatcher_for(config_for(store.url), store)
    assert dispatcher.run(now).due == 0
    with store.transaction() as db:
        assert db.scalars(select(Outbox)).all() == []


def test_auto_apply_applies_the_listed_kinds(store: Store) -> None:
    seed(store, enrolled=["ann@example.org", "bob@example.org"], waitlisted=["eve@example.org"])
    with store.transaction() as db:
        eve = get_enrollment(db, get_session(db, "TM-1"), "eve@example.org")
        eve.calendar_status = "invited"
    promote = Recorder(
        advice={
            "on_accept": lambda change, **kw: SuggestionSpec(
                "promote_waitlisted", change.email, "accepted from the waitlist"
            ),
            "on_decline": contact(),
        }
    )
    config = config_for(store.url, suggestions={"auto_apply": ["promote_waitlisted"]})
    dispatcher = dispatcher_for(config, store, ("promote", promote))
    answer(store, "TM-1", "eve@example.org", "accepted")
    answer(store, "TM-1", "ann@example.org", "declined")
    result = dispatcher.run()
    assert (result.suggestions, result.applied) == (2, 1)
    with store.transaction() as db:
        assert get_enrollment(db, get_session(db, "TM-1"), "eve@example.org").status == ("enrolled")
        states = {s.kind: s.state for s in db.scalars(select(Suggestion))}
    assert states == {"promote_waitlisted": "applied", "contact_student": "open"}


def test_a_failing_auto_apply_is_logged_once_and_tried_again_later(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    seed(store, waitlisted=["eve@example.org"])  # three seats, three enrolled
    with store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-1"), "eve@example.org").calendar_status = "invited"
    # Ann's decline will free a seat for Eve, but only once Ann is cancelled.
    promote = Recorder(
        advice={
            "on_decline": lambda change, **kw: SuggestionSpec(
                "promote_waitlisted", "eve@example.org", "a seat frees up"
            )
        }
    )
    config = config_for(store.url, suggestions={"auto_apply": ["promote_waitlisted"]})
    dispatcher = dispatcher_for(config, store, ("promote", promote))
    answer(store, "TM-1", "ann@example.org", "declined")
    now = utcnow()
    with caplog.at_level(logging.WARNING, logger="tmcaldav"):
        assert dispatcher.run(now).applied == 0  # the session is full
        for seconds in (10, 20, 30):
            assert dispatcher.run(now + timedelta(seconds=seconds)).applied == 0
    warnings = [r.getMessage() for r in caplog.records if "auto-apply" in r.getMessage()]
    assert len(warnings) == 1 and "session TM-1 is full (3/3)" in warnings[0]
    # A seat frees: the suggestion is applied once its wait is over, not at once.
    with store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-1"), "ann@example.org").status = "cancelled"
    assert dispatcher.run(now + timedelta(seconds=40)).applied == 0
    assert dispatcher.run(now + timedelta(minutes=2)).applied == 1
    with store.transaction() as db:
        assert get_enrollment(db, get_session(db, "TM-1"), "eve@example.org").status == "enrolled"


def test_hooks_see_frozen_views_with_seat_counts_and_waitlist(store: Store) -> None:
    seed(
        store,
        enrolled=["ann@example.org", "bob@example.org", "cy@example.org"],
        waitlisted=["eve@example.org", "dee@example.org"],
        course="EXC",
    )
    seed(
        store,
        "TM-2",
        enrolled=["fay@example.org"],
        course="EXC",
        start=utcnow() + timedelta(days=40),
    )
    dispatcher, recorder = recording(store)
    with store.transaction() as db:
        from tmcaldav.store import add_note

        add_note(db, get_enrollment(db, get_session(db, "TM-1"), "ann@example.org"), "phoned")
    answer(store, "TM-1", "ann@example.org", "declined")
    seen: dict[str, object] = {}

    def look(change: object, session: object, **kw: object) -> None:
        seen["session"] = session

    recorder.advice["on_decline"] = look
    dispatcher.run()
    from tmcaldav.views import SessionView

    session = seen["session"]
    assert isinstance(session, SessionView)
    assert (session.capacity, session.seats_taken, session.free_seats, session.is_full) == (
        3,
        3,
        0,
        True,
    )
    assert [s.email for s in session.waitlist] == ["eve@example.org", "dee@example.org"]
    ann = session.student("ANN@example.org")
    assert ann is not None and ann.calendar_status == "declined" and ann.responded_at
    assert [n.text for n in ann.notes] == ["phoned"]
    with pytest.raises(AttributeError):
        ann.status = "cancelled"  # type: ignore[misc]


def test_later_sessions_of_the_course_are_in_the_context(store: Store) -> None:
    now = utcnow()
    seed(store, "A-1", course="A", start=now + timedelta(days=5))
    seed(store, "A-3", enrolled=[], course="A", start=now + timedelta(days=20))
    seed(store, "A-2", enrolled=["dee@example.org"], course="A", start=now + timedelta(days=12))
    seed(store, "B-1", enrolled=[], course="B", start=now + timedelta(days=6))
    seed(store, "A-0", enrolled=[], course="A", start=now + timedelta(days=1))
    seen = []

    class WithContext:
        # A plugin may take only the arguments it needs.
        @hookimpl
        def on_decline(self, context):  # type: ignore[no-untyped-def]
            seen.append(context)

    dispatcher = dispatcher_for(config_for(store.url), store, ("ctx", WithContext()))
    answer(store, "A-1", "ann@example.org", "declined")
    dispatcher.run()
    [context] = seen
    assert [s.key for s in context.later_sessions] == ["A-2", "A-3"]
    assert context.later_sessions[0].student("dee@example.org") is not None


def test_advice_is_withdrawn_when_its_session_has_ended(store: Store) -> None:
    """Time alone makes advice untrue: once the session has ended, a contact about it is
    withdrawn on the next tick (before auto-apply could act on it)."""
    start = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    seed(store, start=start, hours=3)
    advice = {"on_tentative": contact("ask if they come")}
    dispatcher, recorder = recording(store, Recorder(advice=advice))
    answer(store, "TM-1", "ann@example.org", "tentative")
    dispatcher.run()
    with store.transaction() as db:
        assert db.scalars(select(Suggestion.state)).all() == ["open"]
    dispatcher.run(start + timedelta(hours=1))  # started, not ended: still true
    with store.transaction() as db:
        assert db.scalars(select(Suggestion.state)).all() == ["open"]
    dispatcher.run(start + timedelta(hours=4))
    with store.transaction() as db:
        [row] = db.scalars(select(Suggestion)).all()
    assert (row.state, row.withdrawn_reason) == ("withdrawn", "session TM-1 has ended")
    assert len(recorder.hooks("on_suggestion_withdrawn")) == 1
