"""The shipped plugins, each on its own: waitlist, followup, noshow, reschedule.

They are plain functions of frozen views, so most tests build the views directly; one
test per plugin runs it through the dispatcher on a real store. The webhook plugin has
its own file (it needs an HTTP server).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tmcaldav_plugins.followup import FollowupPlugin
from tmcaldav_plugins.noshow import NoShowPlugin
from tmcaldav_plugins.reschedule import ReschedulePlugin
from tmcaldav_plugins.waitlist import WaitlistPlugin, next_in_line

from tests.plugin_world import answer, config_for, dispatcher_for, seed
from tmcaldav.store import Store
from tmcaldav.store.model import Suggestion, utcnow
from tmcaldav.views import (
    HookContext,
    ResponseChange,
    SessionView,
    StudentView,
    SuggestionSpec,
    SuggestionView,
)

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def student(
    email: str, status: str = "enrolled", calendar: str = "invited", position: int | None = None
) -> StudentView:
    return StudentView(
        enrollment_id=next(_ids),
        email=email,
        name=email.split("@")[0].title(),
        phone=None,
        status=status,
        calendar_status=calendar,
        calendar_reason=None,
        responded_at=None,
        invited_at=None,
        waitlist_position=position,
    )


def suggestion(email: str, kind: str, state: str = "open") -> SuggestionView:
    return SuggestionView(
        id=next(_ids),
        session="TM-1",
        email=email,
        kind=kind,
        reason="r",
        plugin="waitlist",
        state=state,
        dedupe_key=f"{kind}:TM-1:{email}",
        created_at=NOW,
    )


def session(
    *students: StudentView,
    capacity: int | None = 3,
    key: str = "TM-1",
    start: datetime = NOW + timedelta(days=10),
    suggestions: tuple[SuggestionView, ...] = (),
    course: str | None = "EXC",
    status: str = "scheduled",
) -> SessionView:
    return SessionView(
        id=next(_ids),
        key=key,
        title=f"Title {key}",
        course=course,
        start=start,
        end=start + timedelta(hours=3),
        tz="Europe/Berlin",
        location=None,
        capacity=capacity,
        status=status,
        calendar_state="published",
        students=tuple(students),
        suggestions=suggestions,
    )


def change(email: str, new: str, old: str = "invited", status: str = "enrolled") -> ResponseChange:
    return ResponseChange("evt-1", "TM-1", email, old, new, NOW, 0, "poll", status)


def context(*later: SessionView, now: datetime = NOW) -> HookContext:
    return HookContext(now, "evt-1", later)


def kinds(result: Any) -> list[tuple[str, str]]:
    if result is None:
        return []
    items = [result] if isinstance(result, SuggestionSpec) else result
    return [(s.kind, s.email) for s in items]


# ---- waitlist ----------------------------------------------------------------------------------

FULL = (
    student("ann@x.org", calendar="declined"),
    student("bob@x.org", calendar="accepted"),
    student("cy@x.org"),
    student("dee@x.org", "waitlisted", "not_invited", 1),
    student("eve@x.org", "waitlisted", "not_invited", 2),
)



def with_calendar(
    students: tuple[StudentView, ...], calendars: dict[str, str]
) -> tuple[StudentView, ...]:
    """`students`, with the calendar status of each one named in `calendars` changed."""
    return tuple(
        dataclasses.replace(s, calendar_status=calendars[s.email]) if s.email in calendars else s
        for s in students
    )


def test_waitlist_decline_cancels_and_invites_the_first_in_line() -> None:
    plugin = WaitlistPlugin({})
    result = plugin.on_decline(change("ann@x.org", "declined"), session(*FULL))
    assert kinds(result) == [("cancel_enrollment", "ann@x.org"), ("invite_waitlisted", "dee@x.org")]
    assert "position 1" in result[1].reason


def test_waitlist_counts_capacity_and_invitations_already_out() -> None:
    # Two seats free up (Ann and Bob declined), Dee already holds an invitation: one more.
    students = (
        *with_calendar(FULL, {"bob@x.org": "declined", "dee@x.org": "invited"}),
        student("fay@x.org", "waitlisted", "not_invited", 3),
    )
    assert next_in_line(session(*students)) == ["eve@x.org"]
    # An open invite suggestion counts as out too.
    pending = (suggestion("eve@x.org", "invite_waitlisted"),)
    assert next_in_line(session(*students, suggestions=pending)) == []
    # A dismissed one: Eve was passed over on purpose, Fay is next.
    passed = (suggestion("eve@x.org", "invite_waitlisted", "dismissed"),)
    assert next_in_line(session(*students, suggestions=passed)) == ["fay@x.org"]
    # A kept decliner (cancel dismissed) frees no seat.
    kept = (suggestion("bob@x.org", "cancel_enrollment", "dismissed"),)
    assert next_in_line(session(*students, suggestions=kept)) == []
    # A bigger room: capacity 5, 3 seated of whom 2 leave → 4 free, 1 out → 3 more.
    assert next_in_line(session(*students, capacity=5)) == ["eve@x.org", "fay@x.org"]


def test_waitlist_invitee_accepts_or_declines() -> None:
    plugin = WaitlistPlugin({})
    students = (
        student("bob@x.org"),
        student("cy@x.org"),
        student("dee@x.org", "waitlisted", "accepted", 1),
        student("eve@x.org", "waitlisted", "not_invited", 2),
    )
    accepted = plugin.on_accept(
        change("dee@x.org", "accepted", status="waitlisted"), session(*students)
    )
    assert kinds(accepted) == [("promote_waitlisted", "dee@x.org")]
    declined = (*students[:2], student("dee@x.org", "waitlisted", "declined", 1), students[3])
    result = plugin.on_decline(
        change("dee@x.org", "declined", status="waitlisted"), session(*declined)
    )
    assert kinds(result) == [("cancel_enrollment", "dee@x.org"), ("invite_waitlisted", "eve@x.org")]
    # An enrolled student who accepts: nothing to do.
    assert plugin.on_accept(change("bob@x.org", "accepted"), session(*students)) is None


def test_waitlist_ignores_cancelled_students_and_rejects_settings() -> None:
    plugin = WaitlistPlugin({})
    gone = session(student("ann@x.org", "cancelled", "declined"), *FULL[1:])
    assert plugin.on_decline(change("ann@x.org", "declined"), gone) == []
    with pytest.raises(ValueError, match="unknown setting"):
        WaitlistPlugin({"size": 3})


def test_seat_plugins_leave_a_cancelled_session_alone() -> None:
    """Hooks called for a cancelled session (a late answer) suggest nothing: its seats
    are not handed on, nobody is offered another session or contacted."""
    waitlisted = student("dee@x.org", "waitlisted", "invited", 1)
    for status, expected in (("scheduled", True), ("cancelled", False)):
        full = session(*FULL, status=status)
        invited = session(*FULL[:3], waitlisted, status=status)
        unsure = session(student("ann@x.org", calendar="tentative"), *FULL[3:], status=status)
        later = session(key="TM-2", start=NOW + timedelta(days=30))
        results = [
            WaitlistPlugin({}).on_decline(change("ann@x.org", "declined"), full),
            WaitlistPlugin({}).on_accept(
                change("dee@x.org", "accepted", status="waitlisted"), invited
            ),
            FollowupPlugin({}).on_tentative(change("ann@x.org", "tentative"), unsure, context()),
            FollowupPlugin({}).on_no_response(unsure.students[0], unsure, context()),
            ReschedulePlugin({}).on_decline(change("ann@x.org", "declined"), full, context(later)),
        ]
        assert [bool(kinds(r)) for r in results] == [expected] * len(results), status


def test_waitlist_through_the_dispatcher(store: Store) -> None:
    seed(store, waitlisted=["dee@example.org", "eve@example.org"])
    dispatcher = dispatcher_for(config_for(store.url), store, ("waitlist", WaitlistPlugin({})))
    answer(store, "TM-1", "ann@example.org", "declined")
    dispatcher.run()
    with store.transaction() as db:
        stored = [
            (s.kind, s.plugin) for s in db.scalars(select(Suggestion).order_by(Suggestion.id))
        ]
    assert stored == [("cancel_enrollment", "waitlist"), ("invite_waitlisted", "waitlist")]


# ---- followup ----------------------------------------------------------------------------------


def test_followup_tentative_with_a_waitlist_is_contacted_at_once() -> None:
    plugin = FollowupPlugin({})
    students = (
        student("ann@x.org", calendar="tentative"),
        student("dee@x.org", "waitlisted", "not_invited", 1),
    )
    result = plugin.on_tentative(change("ann@x.org", "tentative"), session(*students), context())
    assert kinds(result) == [("contact_student", "ann@x.org")]
    assert "1 student is waiting" in result.reason


def test_followup_tentative_without_a_waitlist_waits_until_days_before() -> None:
    plugin = FollowupPlugin({"days_before": 3})
    ann = student("ann@x.org", calendar="tentative")
    far = session(ann, start=NOW + timedelta(days=10))
    assert plugin.on_tentative(change("ann@x.org", "tentative"), far, context()) is None
    # The time check asks N days before the start.
    assert kinds(plugin.on_no_response(ann, far, context())) == [("contact_student", "ann@x.org")]
    # An answer that comes within N days: at once.
    near = session(ann, start=NOW + timedelta(days=2))
    assert kinds(plugin.on_tentative(change("ann@x.org", "tentative"), near, context())) == [
        ("contact_student", "ann@x.org")
    ]
    # Both paths give the same advice, stored once.
    a = plugin.on_tentative(change("ann@x.org", "tentative"), near, context())
    b = plugin.on_no_response(ann, far, context())
    assert a is not None and b is not None and a.key_for("TM-1") == b.key_for("TM-1")


def test_followup_no_answer_only_when_seats_are_short() -> None:
    plugin = FollowupPlugin({})
    cy = student("cy@x.org")
    roomy = session(student("ann@x.org", calendar="accepted"), cy, capacity=5)
    assert plugin.on_no_response(cy, roomy, context()) is None
    full = session(student("ann@x.org"), student("bob@x.org"), cy, capacity=3)
    assert kinds(plugin.on_no_response(cy, full, context())) == [("contact_student", "cy@x.org")]
    waiting = session(cy, student("dee@x.org", "waitlisted", "not_invited", 1), capacity=5)
    result = plugin.on_no_response(cy, waiting, context())
    assert result is not None and "has not answered" in result.reason


def test_followup_settings() -> None:
    with pytest.raises(ValueError, match="days_before"):
        FollowupPlugin({"days_before": -1})
    with pytest.raises(ValueError, match="unknown setting"):
        FollowupPlugin({"day_before": 2})


def test_followup_through_the_dispatcher(store: Store) -> None:
    start = (utcnow() + timedelta(days=10)).replace(microsecond=0)
    seed(store, start=start, capacity=5)
    config = config_for(store.url, plugins={"enable": [], "followup": {"days_before": 4}})
    from tmcaldav.hooks.plugins import get_plugin_manager, register_plugin

    dispatcher = dispatcher_for(config, store)
    pm = dispatcher.pm
    register_plugin(pm, FollowupPlugin, "followup", settings=config.plugins.settings["followup"])
    assert pm.days_before["followup"] == 4 and get_plugin_manager() is not pm
    answer(store, "TM-1", "ann@example.org", "tentative")
    dispatcher.run(start - timedelta(days=5))
    with store.transaction() as db:
        assert db.scalars(select(Suggestion)).all() == []
    dispatcher.run(start - timedelta(days=4))
    with store.transaction() as db:
        stored = [(s.kind, s.dedupe_key) for s in db.scalars(select(Suggestion))]
    # Ann (unsure) is contacted; Bob and Cy did not answer but the session has room.
    assert stored == [("contact_student", "contact_student:TM-1:ann@example.org:tentative")]


# ---- noshow ------------------------------------------------------------------------------------


def test_noshow_suggests_enrolled_students_without_attendance() -> None:
    plugin = NoShowPlugin({})
    ended = session(
        student("ann@x.org", calendar="accepted"),
        student("bob@x.org", calendar="invited"),
        student("cy@x.org", "attended", "accepted"),
        student("dee@x.org", "no_show", "accepted"),
        student("eve@x.org", "cancelled", "declined"),
    )
    result = plugin.on_session_ended(ended)
    assert kinds(result) == [("mark_no_show", "ann@x.org"), ("mark_no_show", "bob@x.org")]
    assert "they had accepted the invitation" in result[0].reason
    assert "they never answered the invitation" in result[1].reason


def test_noshow_through_the_dispatcher(store: Store) -> None:
    start = (utcnow() - timedelta(hours=5)).replace(microsecond=0)
    seed(store, start=start, hours=2)
    answer(store, "TM-1", "ann@example.org", "accepted")
    dispatcher = dispatcher_for(config_for(store.url), store, ("noshow", NoShowPlugin({})))
    dispatcher.run()
    dispatcher.run()
    with store.transaction() as db:
        stored = [s.reason for s in db.scalars(select(Suggestion).order_by(Suggestion.id))]
    assert len(stored) == 3
    assert "Ann" in stored[0] and "they had accepted" in stored[0]


# ---- reschedule --------------------------------------------------------------------------------


def test_reschedule_offers_the_soonest_later_session_with_a_seat() -> None:
    plugin = ReschedulePlugin({})
    here = session(student("ann@x.org", calendar="declined"), student("bob@x.org"))
    full = session(student("x@x.org"), capacity=1, key="TM-2", start=NOW + timedelta(days=20))
    has_ann = session(student("ann@x.org", "cancelled"), key="TM-3", start=NOW + timedelta(days=25))
    roomy = session(student("y@x.org"), capacity=4, key="TM-4", start=NOW + timedelta(days=30))
    result = plugin.on_decline(change("ann@x.org", "declined"), here, context(full, has_ann, roomy))
    assert kinds(result) == [("offer_other_session", "ann@x.org")]
    assert result is not None and result.details["session"] == "TM-4"
    assert "TM-4" in result.reason and "3 free seats" in result.reason
    assert plugin.on_decline(change("ann@x.org", "declined"), here, context(full)) is None
    waitlisted = session(student("ann@x.org", "waitlisted", "declined", 1))
    assert plugin.on_decline(change("ann@x.org", "declined"), waitlisted, context(roomy)) is None


def test_reschedule_through_the_dispatcher(store: Store) -> None:
    now = utcnow()
    seed(store, "EXC-1", course="EXC", start=now + timedelta(days=5))
    seed(store, "EXC-2", enrolled=["dee@example.org"], course="EXC", start=now + timedelta(days=12))
    dispatcher = dispatcher_for(config_for(store.url), store, ("reschedule", ReschedulePlugin({})))
    answer(store, "EXC-1", "bob@example.org", "declined")
    dispatcher.run()
    with store.transaction() as db:
        [offer] = db.scalars(select(Suggestion)).all()
        assert (offer.kind, offer.details) == ("offer_other_session", {"session": "EXC-2"})
        assert offer.dedupe_key == "offer_other_session:EXC-1:bob@example.org:EXC-2"
