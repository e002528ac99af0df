"""Frozen views from the store: what the dispatcher hands to plugins (never ORM objects)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tmcaldav.hooks.views import (
    AnswerView,
    DailyOverview,
    NoteView,
    SessionView,
    StudentView,
    SuggestionView,
)
from tmcaldav.store import page_order, waitlist_positions
from tmcaldav.store.facts import session_facts
from tmcaldav.store.model import Enrollment, Person, Response, Suggestion, TrainingSession

# The view fields that are stored columns of the same name, by the row they are read from.
_PERSON_COLUMNS = ("email", "name", "phone")
_ENROLLMENT_COLUMNS = ("status", "calendar_status", "calendar_reason", "responded_at", "invited_at")
_SUGGESTION_COLUMNS = (
    "id", "kind", "reason", "plugin", "state", "dedupe_key",
    "created_at", "decided_at", "premise", "withdrawn_reason",
)
_RESPONSE_COLUMNS = ("calendar_status", "responded_at", "observed_at", "source")


def _columns(row: object, names: Iterable[str]) -> dict[str, Any]:
    """The row's `names`, as keyword arguments for the view fields of the same names."""
    return {name: getattr(row, name) for name in names}


def student_view(enrollment: Enrollment, position: int | None) -> StudentView:
    """Freeze one enrollment."""
    return StudentView(
        enrollment_id=enrollment.id,
        **_columns(enrollment.person, _PERSON_COLUMNS),
        **_columns(enrollment, _ENROLLMENT_COLUMNS),
        waitlist_position=position,
        notes=tuple(NoteView(n.text, n.created_at) for n in enrollment.notes),
    )


def suggestion_view(suggestion: Suggestion, session_key: str, email: str | None) -> SuggestionView:
    """Freeze one stored suggestion."""
    return SuggestionView(
        session=session_key,
        email=email,
        details=suggestion.details or {},
        **_columns(suggestion, _SUGGESTION_COLUMNS),
    )


def session_view(session: TrainingSession, suggestions: Iterable[Suggestion] = ()) -> SessionView:
    """Freeze a session loaded with its enrollments (and the given suggestions)."""
    positions = waitlist_positions(session)
    emails = {e.id: e.person.email for e in session.enrollments}
    return SessionView(
        **session_facts(session, "id", "capacity", "status", "calendar_state", "sequence"),
        students=tuple(
            student_view(e, positions.get(e.id)) for e in page_order(session, positions)
        ),
        suggestions=tuple(
            suggestion_view(s, session.key, emails.get(s.enrollment_id or -1)) for s in suggestions
        ),
    )


def _with_enrollments() -> Any:
    return selectinload(TrainingSession.enrollments).selectinload(Enrollment.notes)


def build_session_view(db: Session, session_id: int) -> SessionView | None:
    """The view of one session with its suggestions; None when it no longer exists."""
    session = db.scalars(
        select(TrainingSession).where(TrainingSession.id == session_id).options(_with_enrollments())
    ).one_or_none()
    if session is None:
        return None
    suggestions = db.scalars(
        select(Suggestion).where(Suggestion.session_id == session_id).order_by(Suggestion.id)
    ).all()
    return session_view(session, suggestions)


def build_later_sessions(db: Session, view: SessionView) -> tuple[SessionView, ...]:
    """Scheduled sessions of the same course that start after `view`, soonest first."""
    if view.course is None:
        return ()
    sessions = db.scalars(
        select(TrainingSession)
        .where(
            TrainingSession.course == view.course,
            TrainingSession.status == "scheduled",
            TrainingSession.start_at > view.start,
            TrainingSession.id != view.id,
        )
        .options(_with_enrollments())
        .order_by(TrainingSession.start_at, TrainingSession.key)
    ).all()
    return tuple(session_view(s) for s in sessions)


def build_daily_overview(
    db: Session, *, day: str, tz: str, since: datetime, until: datetime, days_ahead: int
) -> DailyOverview:
    """The day's news for `on_daily`: answers observed in (since, until], every open
    suggestion, and the scheduled sessions starting within `days_ahead` days of `until`."""
    answers = db.execute(
        select(Response, Person.email, Person.name, TrainingSession.key, TrainingSession.title)
        .join(Enrollment, Enrollment.id == Response.enrollment_id)
        .join(Person, Person.id == Enrollment.person_id)
        .join(TrainingSession, TrainingSession.id == Enrollment.session_id)
        .where(
            Response.observed_at > since,
            Response.observed_at <= until,
            # A reschedule's reset is the organizer's doing, not an answer.
            Response.reason.is_(None),
        )
        .order_by(Response.observed_at, Response.id)
    ).all()
    open_suggestions = db.execute(
        select(Suggestion, TrainingSession.key, Person.email)
        .join(TrainingSession, TrainingSession.id == Suggestion.session_id)
        .outerjoin(Enrollment, Enrollment.id == Suggestion.enrollment_id)
        .outerjoin(Person, Person.id == Enrollment.person_id)
        .where(Suggestion.state == "open")
        .order_by(Suggestion.created_at, Suggestion.id)
    ).all()
    upcoming = db.scalars(
        select(TrainingSession)
        .where(
            TrainingSession.status == "scheduled",
            TrainingSession.start_at > until,
            TrainingSession.start_at <= until + timedelta(days=days_ahead),
        )
        .options(_with_enrollments())
        .order_by(TrainingSession.start_at, TrainingSession.key)
    ).all()
    return DailyOverview(
        day=day,
        since=since,
        tz=tz,
        answers=tuple(
            AnswerView(
                session=key, title=title, email=email, name=name, **_columns(r, _RESPONSE_COLUMNS)
            )
            for r, email, name, key, title in answers
        ),
        suggestions=tuple(suggestion_view(s, key, email) for s, key, email in open_suggestions),
        upcoming=tuple(session_view(s) for s in upcoming),
    )
