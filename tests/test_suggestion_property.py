"""A property test of suggestions that stay true (Hypothesis), on a real store and a real
Radicale: random sequences of answers, reschedules, status changes, applies and
dismissals, with the shipped seat plugins giving advice. After every step:

- no open suggestion contradicts the store (its premise holds);
- no apply acts on a broken premise: a stale one is refused and changes nothing;
- no session holds more seats than its capacity.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tmcaldav_plugins.followup import FollowupPlugin
from tmcaldav_plugins.reschedule import ReschedulePlugin
from tmcaldav_plugins.waitlist import WaitlistPlugin

from tests.plugin_world import answer, dispatcher_for, seed
from tests.scenario import radicale_config
from tmcaldav.app import open_store
from tmcaldav.config import Config, load_config
from tmcaldav.domain import SEAT_STATUSES
from tmcaldav.errors import TmcaldavError
from tmcaldav.hooks.premises import check_one
from tmcaldav.hooks.suggestions import StaleSuggestion, apply_suggestion, dismiss_suggestion
from tmcaldav.publish import Publisher, connect_calendar
from tmcaldav.store import Store, get_session
from tmcaldav.store.model import Note, Suggestion, utcnow
from tmcaldav.store.roster import SessionFields
from tmcaldav.testing import RadicaleServer

ENROLLED = ("ann@example.org", "bob@example.org", "cy@example.org")
WAITING = ("dee@example.org", "eve@example.org")
EVERYONE = ENROLLED + WAITING
CAPACITY = 3

answers = st.tuples(
    st.just("answer"),
    st.sampled_from(EVERYONE),
    st.sampled_from(("accepted", "declined", "tentative")),
)
step = st.one_of(
    answers,
    answers,  # answers are what advice is made of: drawn more often
    st.tuples(st.just("apply"), st.integers(0, 20)),
    st.tuples(st.just("reschedule"), st.integers(1, 5)),
    st.tuples(
        st.just("status"), st.sampled_from(EVERYONE), st.sampled_from(("cancelled", "waitlisted"))
    ),
    st.tuples(st.just("apply"), st.integers(0, 20)),
    st.tuples(st.just("dismiss"), st.integers(0, 20)),
)


def everything(store: Store, key: str) -> tuple[Any, ...]:
    """What an apply may change: statuses and answers, suggestions' states, notes."""
    with store.scratch() as db:
        session = get_session(db, key)
        people = tuple(
            sorted(
                (e.person.email, e.status, e.calendar_status, e.calendar_reason)
                for e in session.enrollments
            )
        )
        suggestions = tuple(db.execute(select(Suggestion.id, Suggestion.state)).all())
        notes = len(db.scalars(select(Note.id)).all())
        return people, suggestions, notes, session.sequence


def open_ids(store: Store, states: tuple[str, ...] = ("open",)) -> list[int]:
    with store.scratch() as db:
        return list(
            db.scalars(select(Suggestion.id).where(Suggestion.state.in_(states)).order_by("id"))
        )


def check_invariants(store: Store, key: str) -> None:
    now = utcnow()
    with store.scratch() as db:
        for suggestion_id in open_ids(store):
            assert check_one(db, suggestion_id, now) is None, suggestion_id
        session = get_session(db, key)
        taken = sum(1 for e in session.enrollments if e.status in SEAT_STATUSES)
        assert taken <= CAPACITY


class World:
    """One example's store and publisher, on the test's one Radicale."""

    counter = itertools.count()

    def __init__(self, folder: Path, config: Config, calendar: Any):
        n = next(self.counter)
        self.key = f"PROP-{n}"
        self.store = open_store(f"sqlite:///{folder / f'prop-{n}.db'}")
        self.store.upgrade()
        self.publisher = Publisher(config, self.store, calendar)
        seed(self.store, self.key, enrolled=ENROLLED, waitlisted=WAITING, capacity=CAPACITY,
             invited=False)  # fmt: skip
        self.publisher.invite(self.key, all_enrolled=True)
        plugins = (
            ("waitlist", WaitlistPlugin({})),
            ("followup", FollowupPlugin({})),
            ("reschedule", ReschedulePlugin({})),
        )
        self.dispatcher = dispatcher_for(config, self.store, *plugins)
        self.dispatcher.publisher = self.publisher

    def close(self) -> None:
        self.store.close()

    def run(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        if kind == "answer":
            with self.store.scratch() as db:
                status = {
                    e.person.email: e.status for e in get_session(db, self.key).enrollments
                }
            if status[action[1]] != "cancelled":
                answer(self.store, self.key, action[1], action[2])
        elif kind == "reschedule":
            with self.store.scratch() as db:
                start = get_session(db, self.key).start_at + timedelta(hours=action[1])
            end = start + timedelta(hours=3)
            self.publisher.edit(
                self.key, SessionFields(start=start.isoformat(), end=end.isoformat())
            )
        elif kind == "status":
            self.publisher.set_status(self.key, action[1], action[2])
        elif kind in ("apply", "dismiss"):
            # Applies also try withdrawn advice: it must be refused, changing nothing.
            ids = open_ids(self.store, ("open", "withdrawn") if kind == "apply" else ("open",))
            if not ids:
                return
            chosen = ids[action[1] % len(ids)]
            if kind == "dismiss":
                dismiss_suggestion(self.store, chosen)
            else:
                self.apply(chosen)
        self.dispatcher.run()

    def apply(self, suggestion_id: int) -> None:
        with self.store.scratch() as db:
            stale = check_one(db, suggestion_id, utcnow())
            state = db.scalar(select(Suggestion.state).where(Suggestion.id == suggestion_id))
        before = everything(self.store, self.key)
        try:
            apply_suggestion(self.store, self.publisher, suggestion_id)
        except StaleSuggestion:
            assert stale is not None or state == "withdrawn"  # refused only for a reason
            assert everything(self.store, self.key) == before
            return
        except TmcaldavError:
            # Refused for another reason (no seat free yet): nothing changed either.
            assert everything(self.store, self.key) == before
            return
        assert state == "open"
        assert stale is None, f"applied suggestion {suggestion_id} on a broken premise: {stale}"


@pytest.fixture
def config(tmp_path: Path, radicale_server: RadicaleServer) -> Config:
    return load_config(
        radicale_config(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'unused.db'}")
    )


@pytest.fixture
def worlds(tmp_path: Path, config: Config) -> Iterator[Any]:
    calendar = connect_calendar(config)
    opened: list[World] = []

    def make() -> World:
        world = World(tmp_path, config, calendar)
        opened.append(world)
        return world

    yield make
    for world in opened:
        world.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_suggestions_stay_true(worlds: Any, steps: list[tuple[Any, ...]]) -> None:
    world = worlds()
    world.dispatcher.run()
    check_invariants(world.store, world.key)
    for action in steps:
        world.run(action)
        check_invariants(world.store, world.key)
