"""Helpers for the plugin tests: a seeded store, answers through the real apply step,
and a plugin that records every hook call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tmcaldav.config import Config, parse_config
from tmcaldav.hooks.dispatch import Dispatcher
from tmcaldav.hooks.plugins import TmcaldavPluginManager, get_plugin_manager, register_plugin
from tmcaldav.hookspecs import hookimpl
from tmcaldav.publish import Publisher
from tmcaldav.store import Store, get_enrollment, get_session
from tmcaldav.store.model import utcnow
from tmcaldav.store.roster import SessionFields, add_person, add_session, enroll
from tmcaldav.sync import AnswerChange, apply_answers
from tmcaldav.views import SuggestionSpec

NAMES = {
    "ann@example.org": "Ann",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy",
    "dee@example.org": "Dee",
    "eve@example.org": "Eve",
    "fay@example.org": "Fay",
}
_sequence = itertools.count(1)


def config_for(store_url: str, **sections: dict[str, Any]) -> Config:
    """A validated config for a store, with extra sections."""
    data: dict[str, Any] = {
        "store": {"url": store_url},
        "scheduling": {"organizer_email": "training@example.org", "timezone": "UTC"},
        "plugins": {"enable": []},
    }
    data.update(sections)
    return parse_config(data)


def seed(
    store: Store,
    key: str = "TM-1",
    *,
    enrolled: Iterable[str] = ("ann@example.org", "bob@example.org", "cy@example.org"),
    waitlisted: Iterable[str] = (),
    capacity: int | None = 3,
    start: datetime | None = None,
    hours: int = 3,
    course: str | None = None,
    invited: bool = True,
) -> None:
    """A session with enrolled (invited) and waitlisted students, people added as needed."""
    start = start or (utcnow() + timedelta(days=30)).replace(microsecond=0)
    with store.transaction() as db:
        for email in [*enrolled, *waitlisted]:
            from tmcaldav.store import find_person

            if find_person(db, email) is None:
                add_person(db, email, NAMES.get(email, email.split("@")[0]))
        add_session(
            db,
            key,
            SessionFields(
                title=f"Session {key}",
                start=start.isoformat(),
                end=(start + timedelta(hours=hours)).isoformat(),
                capacity=capacity,
                course=course,
            ),
            "UTC",
        )
        if enrolled:
            enroll(db, key, list(enrolled))
        for email in waitlisted:  # one by one: waitlist order is the order given
            enroll(db, key, [email], waitlist=True)
        session = get_session(db, key)
        session.calendar_state = "published"
        session.uid = f"uid-{key}"
        if invited:
            for e in session.enrollments:
                if e.status == "enrolled":
                    e.calendar_status = "invited"
                    e.invited_at = utcnow()


def answer(store: Store, key: str, email: str, new: str, *, source: str = "poll") -> None:
    """Record an answer through the sync's one apply step (it writes the outbox row)."""
    with store.transaction() as db:
        enrollment = get_enrollment(db, get_session(db, key), email)
        change = AnswerChange(
            enrollment_id=enrollment.id,
            session_key=key,
            email=email,
            old=enrollment.calendar_status,
            new=new,
            sequence=0,
            dtstamp=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_sequence)),
            enrollment_status=enrollment.status,
        )
        apply_answers(db, [change], source=source, observed_at=utcnow())


@dataclass
class Call:
    """One hook call as a Recorder saw it."""

    hook: str
    event_id: str
    subject: Any


def _records(hook: str, subject: str = "change") -> Callable[..., Any]:
    """A Recorder's implementation of `hook`, whose arguments are (`subject`, session,
    context), `subject` being "change" (the answer hooks) or "suggestion".

    pluggy passes an implementation the arguments its code names, so each of the two
    signatures is spelled out once here.
    """

    @hookimpl
    def record_change(self: Recorder, change: Any, session: Any, context: Any) -> Any:
        return self._seen(hook, context, change, session=session)

    @hookimpl
    def record_suggestion(self: Recorder, suggestion: Any, session: Any, context: Any) -> Any:
        return self._seen(hook, context, suggestion, session=session)

    return record_suggestion if subject == "suggestion" else record_change


# eq=False: pluggy tells plugins apart by equality, and two empty recorders are equal.
@dataclass(eq=False)
class Recorder:
    """A plugin that implements every hook, records each call and returns `advice`."""

    advice: dict[str, Callable[..., Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def _seen(self, hook: str, context: Any, subject: Any, **kw: Any) -> Any:
        self.calls.append(Call(hook, context.event_id if context else "", subject))
        give = self.advice.get(hook)
        return give(subject, **kw) if give else None

    def hooks(self, name: str) -> list[Call]:
        """The calls of one hook."""
        return [c for c in self.calls if c.hook == name]

    on_response = _records("on_response")
    on_accept = _records("on_accept")
    on_decline = _records("on_decline")
    on_tentative = _records("on_tentative")
    on_suggestion = _records("on_suggestion", "suggestion")
    on_suggestion_withdrawn = _records("on_suggestion_withdrawn", "suggestion")

    @hookimpl
    def on_no_response(self, student, session, context):  # type: ignore[no-untyped-def]
        return self._seen("on_no_response", context, student, session=session)

    @hookimpl
    def on_session_ended(self, session, context):  # type: ignore[no-untyped-def]
        return self._seen("on_session_ended", context, session, session=session)

    @hookimpl
    def on_invitation_sent(self, students, session, context):  # type: ignore[no-untyped-def]
        return self._seen("on_invitation_sent", context, students, session=session)

    @hookimpl
    def on_shutdown(self):  # type: ignore[no-untyped-def]
        self.calls.append(Call("on_shutdown", "", None))


def contact(reason: str = "recorded") -> Callable[..., SuggestionSpec]:
    """Advice for a Recorder: contact the student the change is about."""
    return lambda change, **kw: SuggestionSpec("contact_student", change.email, reason)


def dispatcher_for(
    config: Config, store: Store, *plugins: tuple[str, Any], entry_points: bool = False
) -> Dispatcher:
    """A Dispatcher over exactly these plugins (name, object)."""
    pm: TmcaldavPluginManager = get_plugin_manager(config, load_entrypoints=entry_points)
    for name, plugin in plugins:
        assert register_plugin(pm, plugin, name), pm.failures
    return Dispatcher(config, store, Publisher(config, store), pm)
