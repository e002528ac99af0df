"""Outbox dispatch: pending changes → plugin hooks → suggestions, exactly once per change.

The sync writes one outbox row per answer in the transaction that records it. Each
tick the `Dispatcher` reads the pending rows oldest first, builds frozen views,
calls the hooks (each plugin on its own), and stores what they returned in ONE
transaction that also marks the row done. A crash before that commit leaves the row
pending, so the hooks run again; suggestions are deduplicated by their unique dedupe
key, so nothing is doubled.

Time hooks (`on_no_response`, `on_session_ended`) are turned into outbox rows with
deterministic event ids ("no_response:<enrollment>:<plugin>", "session_ended:<session>")
when they become due, so they fire once however many ticks see them due. Invitations
become rows through a listener on the Publisher, in the transaction that records them.
New suggestions become "suggestion" rows (for `on_suggestion`); kinds in
`[suggestions] auto_apply` are then applied. One that cannot be applied stays open; the
warning is logged once and it is tried again after a growing wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tmcaldav.config import Config
from tmcaldav.forecast import Model, Seat, fit
from tmcaldav.hooks.outbox import (
    DailyEvent,
    InvitationEvent,
    NoResponseEvent,
    ResponseEvent,
    SessionEndedEvent,
    SuggestionEvent,
    SuggestionWithdrawnEvent,
    UnknownKind,
    bounded,
    from_row,
    to_row,
)
from tmcaldav.hooks.plugins import TmcaldavPluginManager, call_each
from tmcaldav.hooks.premises import premise_for, withdraw, withdraw_due
from tmcaldav.hooks.snapshots import (
    build_daily_overview,
    build_later_sessions,
    build_session_view,
    session_view,
)
from tmcaldav.hooks.suggestions import record_suggestion
from tmcaldav.hooks.timers import schedule_time_hooks
from tmcaldav.hooks.views import (
    HookContext,
    Notice,
    ResponseChange,
    SessionView,
    SuggestionSpec,
)
from tmcaldav.publish import Published, Publisher
from tmcaldav.retry import backoff
from tmcaldav.store import Store, StoreError
from tmcaldav.store.model import Enrollment, Outbox, Person, Suggestion, TrainingSession, utcnow
from tmcaldav.store.outcomes import past_outcomes
from tmcaldav.words import plural

log = logging.getLogger(__name__)

# Which hook answers which new calendar status (besides on_response, which gets all).
ANSWER_HOOKS = {"accepted": "on_accept", "declined": "on_decline", "tentative": "on_tentative"}
# Rows read per query; a run goes on until none is pending (or MAX_ROUNDS).
BATCH_SIZE = 200
# Suggestions can lead to suggestions (on_suggestion); dedupe keys end that, this caps it.
MAX_ROUNDS = 20
# The turnout model is fitted again from the store's history after this long.
MODEL_LIFETIME = timedelta(minutes=10)
# A failed auto-apply is tried again after this, doubled per failure, at most the cap.
AUTO_RETRY_BASE = timedelta(minutes=1)
AUTO_RETRY_CAP = timedelta(minutes=30)
# Column limit of the model.
DEDUPE_KEY_LENGTH = 500


# ---- invitations become outbox rows ----------------------------------------------------------


def record_invitations(db: Session, published: Published) -> None:
    """Publisher listener: an outbox row for newly invited students, in the same transaction."""
    if not published.invited:
        return
    session_id = db.scalar(
        select(TrainingSession.id).where(TrainingSession.key == published.session_key)
    )
    if session_id is None:
        return
    event = InvitationEvent(
        published.session_key, tuple(sorted(published.invited)), published.sequence
    )
    db.add(to_row(event, session_id=session_id))


def watch_invitations(publisher: Publisher) -> None:
    """Make `publisher` record its invitations for `on_invitation_sent` (once per publisher)."""
    if record_invitations not in publisher.on_published:
        publisher.on_published.append(record_invitations)


# ---- the dispatcher ----------------------------------------------------------------------------


@dataclass
class DispatchResult:
    """What one run did, for the summary line and the daemon's status."""

    events: int = 0
    plugin_failures: int = 0
    suggestions: int = 0
    applied: int = 0
    # Time hooks that became due in this run.
    due: int = 0
    # Events left pending (an error while dispatching them; retried next run).
    left_pending: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """One line: events dispatched, suggestions made and applied, failures."""
        text = (
            f"plugins told of {plural(self.events, 'change')}, "
            f"{plural(self.suggestions, 'new suggestion')}"
        )
        if self.applied:
            text += f", {self.applied} applied"
        if self.plugin_failures:
            text += f", {plural(self.plugin_failures, 'plugin failure')} (see the log)"
        if self.left_pending:
            text += f", {plural(self.left_pending, 'change')} left for the next run"
        return text


@dataclass(frozen=True)
class _AutoFailure:
    """The last failed auto-apply of one suggestion, and when to try it again."""

    error: str
    failures: int
    retry_at: datetime


@dataclass(frozen=True)
class _Call:
    hook: str
    kwargs: Mapping[str, Any]
    only: str | None = None


@dataclass(frozen=True)
class _Plan:
    """What a pending row needs: the hook calls, and the session suggestions default to."""

    calls: tuple[_Call, ...]
    session: SessionView | None
    # The answer the hooks were called for: the premise of advice about that student.
    change: ResponseChange | None = None


class Dispatcher:
    """Runs the plugin hooks for the outbox rows, and the time checks, once per change."""

    def __init__(
        self,
        config: Config,
        store: Store,
        publisher: Publisher,
        plugin_manager: TmcaldavPluginManager,
        *,
        batch_size: int = BATCH_SIZE,
    ):
        self.config = config
        self.store = store
        self.pm = plugin_manager
        self.batch_size = batch_size
        self.publisher = publisher
        # Suggestion id -> its last failed auto-apply (this process only).
        self._auto_failures: dict[int, _AutoFailure] = {}
        # The turnout model and when it was fitted (refitted after MODEL_LIFETIME).
        self._model: tuple[datetime, Model] | None = None

    @property
    def publisher(self) -> Publisher:
        """The publisher suggestions are applied with; it records invitations for the hooks."""
        return self._publisher

    @publisher.setter
    def publisher(self, publisher: Publisher) -> None:
        # The daemon swaps in a new publisher after a server failure: watch that one too.
        watch_invitations(publisher)
        self._publisher = publisher

    def close(self) -> None:
        """Tell the plugins tmcaldav is done with them (on_shutdown)."""
        self.pm.close()

    def run(self, now: datetime | None = None) -> DispatchResult:
        """One tick: schedule due time hooks, dispatch every pending row, auto-apply."""
        started = time.perf_counter()
        now = now or utcnow()
        result = DispatchResult()
        result.due = schedule_time_hooks(
            self.store, self.pm, now, self.config.scheduling.timezone
        )
        # Time alone makes advice untrue (a session ended): withdraw it before anything
        # sees it, and before auto-apply could act on it.
        with self.store.transaction() as db:
            withdraw_due(db, now)
        tried: set[int] = set()
        auto_tried: set[int] = set()
        # Rows may be left pending only when one could not be dispatched, or when the
        # rounds ran out; otherwise the last round found none, and no count is needed.
        leftovers = False
        for _round in range(MAX_ROUNDS):
            pending = self._pending(exclude=tried)
            for row_id in pending:
                tried.add(row_id)
                if not self._dispatch(row_id, now, result):
                    leftovers = True
            applied = self._auto_apply(result, auto_tried, now)
            if not pending and not applied:
                break
        else:
            leftovers = True
        result.left_pending = len(self._pending(exclude=set())) if leftovers else 0
        result.seconds = time.perf_counter() - started
        return result

    # ---- reading the outbox ----------------------------------------------------------------

    def _pending(self, exclude: set[int]) -> list[int]:
        with self.store.scratch() as db:
            stmt = (
                select(Outbox.id)
                .where(Outbox.done_at.is_(None))
                .order_by(Outbox.created_at, Outbox.id)
                .limit(self.batch_size + len(exclude))
            )
            return [i for i in db.scalars(stmt) if i not in exclude][: self.batch_size]

    def _dispatch(self, row_id: int, now: datetime, result: DispatchResult) -> bool:
        """Run one row's hooks and store their results; False when it is left pending."""
        try:
            with self.store.scratch() as db:
                row = db.get(Outbox, row_id)
                if row is None or row.done_at is not None:
                    return True
                event_id = row.event_id
                plan = self._plan(db, row, now)
        except Exception:
            # A row we cannot read (a bug, a payload from a newer version) must not
            # block the rest of the outbox; it stays pending and is tried next run.
            log.exception("outbox event %s could not be prepared; it is left pending", row_id)
            return False
        returned: list[tuple[str, SuggestionSpec | Notice]] = []
        for call in plan.calls:
            outcome = call_each(self.pm, call.hook, call.kwargs, event_id=event_id, only=call.only)
            result.plugin_failures += len(outcome.failed)
            for plugin, value in outcome.results:
                specs = _as_specs(value)
                if specs is None:
                    log.error(
                        "plugin %s returned %r from %s for event %s; expected None, a "
                        "SuggestionSpec or Notice, or a list of them; ignored",
                        plugin,
                        value,
                        call.hook,
                        event_id,
                    )
                    result.plugin_failures += 1
                    continue
                returned += [(plugin, spec) for spec in specs]
        try:
            with self.store.transaction() as db:
                row = db.scalars(
                    select(Outbox)
                    .where(Outbox.id == row_id, Outbox.done_at.is_(None))
                    .with_for_update()
                ).one_or_none()
                if row is None:
                    return True  # done by another dispatcher meanwhile
                new = self._store_suggestions(db, returned, plan, event_id, now)
                row.done_at = utcnow()
        except StoreError:
            raise  # the store is unusable: the daemon backs off and retries
        except Exception:
            log.exception("outbox event %s could not be recorded; it is left pending", event_id)
            return False
        result.events += 1
        result.suggestions += len(new)
        return True

    def _plan(self, db: Session, row: Outbox, now: datetime) -> _Plan:
        """The hook calls for one row, with fresh views of its session."""
        if row.hook == DailyEvent.hook:
            return self._plan_daily(db, row, now)
        session = build_session_view(db, row.session_id) if row.session_id is not None else None
        if session is None:
            log.warning("outbox event %s: its session is gone; nothing to dispatch", row.event_id)
            return _Plan((), None)
        context = HookContext(
            now,
            row.event_id,
            build_later_sessions(db, session),
            self._attendance(db, session, now),
        )
        base = {"session": session, "context": context}
        try:
            event = from_row(row)
        except UnknownKind:
            log.warning("outbox event %s: unknown kind %r; marked done", row.event_id, row.hook)
            return _Plan((), session)
        if isinstance(event, ResponseEvent):
            change = _response_change(row.event_id, event)
            calls = [_Call("on_response", {**base, "change": change})]
            answer_hook = ANSWER_HOOKS.get(change.new)
            # An answer on a cancelled enrollment, or to a session cancelled by the time
            # its hooks run (a late REPLY, a decline after the CANCEL), is recorded and
            # told to on_response, but moves no seats.
            if (
                answer_hook is not None
                and change.enrollment_status != "cancelled"
                and session.status != "cancelled"
            ):
                calls.append(_Call(answer_hook, {**base, "change": change}))
            return _Plan(tuple(calls), session, change)
        if isinstance(event, NoResponseEvent):
            student = session.student(event.email)
            if student is None:
                return _Plan((), session)
            return _Plan(
                (_Call("on_no_response", {**base, "student": student}, event.plugin),), session
            )
        if isinstance(event, SessionEndedEvent):
            return _Plan((_Call("on_session_ended", base),), session)
        if isinstance(event, InvitationEvent):
            students = tuple(
                s for s in (session.student(e) for e in event.emails) if s is not None
            )
            if not students:
                return _Plan((), session)
            return _Plan((_Call("on_invitation_sent", {**base, "students": students}),), session)
        if not isinstance(event, SuggestionEvent | SuggestionWithdrawnEvent):
            return _Plan((), session)
        suggestion = next((s for s in session.suggestions if s.id == event.suggestion_id), None)
        if suggestion is None:
            return _Plan((), session)
        hook = (
            "on_suggestion_withdrawn"
            if isinstance(event, SuggestionWithdrawnEvent)
            else "on_suggestion"
        )
        return _Plan((_Call(hook, {**base, "suggestion": suggestion}),), session)

    def _attendance(self, db: Session, session: SessionView, now: datetime) -> dict[str, float]:
        """Each enrolled or waitlisted student's chance of attending an upcoming session."""
        if session.status != "scheduled" or session.start <= now:
            return {}
        if self._model is None or now - self._model[0] > MODEL_LIFETIME:
            self._model = (now, fit(past_outcomes(db, now)))
        model = self._model[1]
        return {
            s.email: model.p_attend(
                Seat(s.email, s.calendar_status, s.invited_at, s.responded_at), now, session.start
            ).p
            for s in session.students
            if s.status in ("enrolled", "waitlisted")
        }

    def _plan_daily(self, db: Session, row: Outbox, now: datetime) -> _Plan:
        """on_daily for one plugin: the overview since its previous daily event."""
        event = from_row(row)
        assert isinstance(event, DailyEvent)
        previous = db.scalar(
            select(Outbox.created_at)
            .where(
                Outbox.hook == DailyEvent.hook,
                Outbox.event_id.startswith(f"daily:{event.plugin}:", autoescape=True),
                Outbox.id != row.id,
                Outbox.created_at < row.created_at,
            )
            .order_by(Outbox.created_at.desc())
            .limit(1)
        )
        overview = build_daily_overview(
            db,
            day=event.day,
            tz=self.config.scheduling.timezone,
            since=previous or row.created_at - timedelta(days=1),
            until=row.created_at,
            days_ahead=self.pm.days_before.get(event.plugin, 3),
        )
        context = HookContext(now, row.event_id)
        call = _Call("on_daily", {"overview": overview, "context": context}, event.plugin)
        return _Plan((call,), None)

    # ---- storing what the hooks returned -------------------------------------------------

    def _store_suggestions(
        self,
        db: Session,
        returned: list[tuple[str, SuggestionSpec | Notice]],
        plan: _Plan,
        event_id: str,
        now: datetime,
    ) -> list[int]:
        from tmcaldav.notices import store_notice

        session = plan.session
        new: list[int] = []
        seen: set[str] = set()
        for plugin, spec in returned:
            if isinstance(spec, Notice):
                if store_notice(db, plugin, spec.key, spec.subject, spec.text, spec.to):
                    log.info("notice %s from %s stored (event %s)", spec.key, plugin, event_id)
                continue
            session_key = spec.session or (session.key if session is not None else None)
            if session_key is None:
                log.error(
                    "plugin %s suggested %s for %s (event %s) without a session; dropped",
                    plugin,
                    spec.kind,
                    spec.email,
                    event_id,
                )
                continue
            key = bounded(spec.key_for(session_key), DEDUPE_KEY_LENGTH)
            if key in seen:
                continue
            seen.add(key)
            if db.scalar(select(Suggestion.id).where(Suggestion.dedupe_key == key)) is not None:
                continue  # the same advice was given before
            target = _target(db, session_key, spec.email)
            problem = _check_target(db, spec, target)
            if problem:
                log.error(
                    "plugin %s suggested %s for %s in %s (event %s), dropped: %s",
                    plugin,
                    spec.kind,
                    spec.email,
                    session_key,
                    event_id,
                    problem,
                )
                continue
            assert target is not None
            session_id, enrollment_id = target
            # The premise is the session as the plugin saw it (the commit check then
            # withdraws the advice at once if the store moved on meanwhile).
            as_seen = (
                session
                if session is not None and session_id == session.id
                else build_session_view(db, session_id)
            )
            assert as_seen is not None
            other = None
            if spec.kind == "offer_other_session":
                other_id = db.scalar(
                    select(TrainingSession.id).where(
                        TrainingSession.key == str(spec.details["session"])
                    )
                )
                other = build_session_view(db, other_id) if other_id is not None else None
            premise = premise_for(
                spec.kind,
                spec.email,
                as_seen,
                now,
                change=plan.change,
                because=spec.because,
                no_seat=spec.no_seat,
                overbook=spec.overbook,
                other=other,
            )
            suggestion = record_suggestion(
                db,
                Suggestion(
                    session_id=session_id,
                    enrollment_id=enrollment_id,
                    kind=spec.kind,
                    reason=spec.reason,
                    plugin=plugin,
                    dedupe_key=key,
                    details=dict(spec.details),
                    premise=premise,
                ),
            )
            log.info(
                "suggestion %s from %s: %s %s in %s",
                suggestion.id,
                plugin,
                spec.kind,
                spec.email,
                session_key,
            )
            new.append(suggestion.id)
        return new

    # ---- time hooks ------------------------------------------------------------------------------

    # ---- auto-apply -------------------------------------------------------------------------

    def _auto_apply(self, result: DispatchResult, tried: set[int], now: datetime) -> int:
        kinds = self.config.suggestions.auto_apply
        if not kinds:
            return 0
        from tmcaldav.hooks.suggestions import StaleSuggestion, apply_suggestion

        with self.store.scratch() as db:
            open_ids = list(
                db.scalars(
                    select(Suggestion.id)
                    .where(Suggestion.state == "open", Suggestion.kind.in_(kinds))
                    .order_by(Suggestion.id)
                )
            )
        # Forget failures of suggestions decided meanwhile (by an administrator).
        still_open = set(open_ids)
        for gone in [i for i in self._auto_failures if i not in still_open]:
            del self._auto_failures[gone]
        applied = 0
        for suggestion_id in open_ids:
            if suggestion_id in tried:
                continue
            tried.add(suggestion_id)
            failure = self._auto_failures.get(suggestion_id)
            if failure is not None and now < failure.retry_at:
                continue
            try:
                message = apply_suggestion(self.store, self.publisher, suggestion_id, now=now)
            except StaleSuggestion as e:
                # Auto-apply obeys the premise check: advice that is no longer true is
                # withdrawn, never applied.
                with self.store.transaction() as db:
                    withdraw(db, suggestion_id, e.what_changed, now)
                continue
            except Exception as e:
                self._auto_failed(suggestion_id, str(e), now)
                continue
            self._auto_failures.pop(suggestion_id, None)
            log.info("auto-applied suggestion %s: %s", suggestion_id, message)
            applied += 1
        result.applied += applied
        return applied

    def _auto_failed(self, suggestion_id: int, error: str, now: datetime) -> None:
        """Remember a failed auto-apply: said once, tried again after a growing wait.

        Most failures are refusals that hold until something changes (a full session):
        retrying every tick would only repeat the warning. The suggestion stays open for
        an administrator meanwhile.
        """
        before = self._auto_failures.get(suggestion_id)
        failures = before.failures + 1 if before is not None else 1
        wait = timedelta(
            seconds=backoff(
                failures, AUTO_RETRY_BASE.total_seconds(), AUTO_RETRY_CAP.total_seconds()
            )
        )
        self._auto_failures[suggestion_id] = _AutoFailure(error, failures, now + wait)
        if before is None or before.error != error:
            log.warning(
                "auto-apply of suggestion %s failed: %s; it stays open (tried again from "
                "time to time, or apply or dismiss it: tmcaldav suggestions)",
                suggestion_id,
                error,
            )
        else:
            log.debug(
                "auto-apply of suggestion %s failed again (%d times): %s",
                suggestion_id,
                failures,
                error,
            )


def _as_specs(value: Any) -> list[SuggestionSpec | Notice] | None:
    if value is None:
        return []
    if isinstance(value, SuggestionSpec | Notice):
        return [value]
    if isinstance(value, list | tuple) and all(
        isinstance(v, SuggestionSpec | Notice) for v in value
    ):
        return list(value)
    return None


def _response_change(event_id: str, event: ResponseEvent) -> ResponseChange:
    return ResponseChange(
        event_id=event_id,
        session=event.session,
        email=event.email,
        old=event.old,
        new=event.new,
        responded_at=event.responded_at,
        sequence=event.sequence,
        source=event.source,
        enrollment_status=event.enrollment_status,
    )


def _target(db: Session, session_key: str, email: str) -> tuple[int, int] | None:
    """(session id, enrollment id) of a student in a session, or None."""
    row = db.execute(
        select(TrainingSession.id, Enrollment.id)
        .join(Enrollment, Enrollment.session_id == TrainingSession.id)
        .join(Person, Person.id == Enrollment.person_id)
        .where(TrainingSession.key == session_key, Person.email == email)
    ).one_or_none()
    return (row[0], row[1]) if row is not None else None


def _check_target(db: Session, spec: SuggestionSpec, target: tuple[int, int] | None) -> str:
    if target is None:
        return "the student is not in that session"
    if spec.kind == "offer_other_session":
        other = str(spec.details["session"])
        if db.scalar(select(TrainingSession.id).where(TrainingSession.key == other)) is None:
            return f"no session with key {other!r}"
    return ""


__all__ = [
    "DispatchResult",
    "Dispatcher",
    "build_later_sessions",
    "build_session_view",
    "record_invitations",
    "session_view",
    "watch_invitations",
]
