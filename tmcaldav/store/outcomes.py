"""What the forecast reads from the store: past sessions' outcomes and upcoming seats.

The model itself (`tmcaldav.forecast`) is pure; this module turns the store's
enrollments and answer history into its plain inputs, and its answers into the
`report forecast` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tmcaldav.domain import ANSWERS, EnrollmentStatus, SessionStatus
from tmcaldav.forecast import ForecastError, Model, PastOutcome, Seat, fit, forecast_session
from tmcaldav.store.model import Enrollment, Person, Response, TrainingSession
from tmcaldav.store.queries import get_session


def past_outcomes(db: Session, now: datetime) -> list[PastOutcome]:
    """Every seat of an ended session whose outcome was recorded (attended or no-show),
    with the answer the student had given and when they first answered."""
    first_answer = (
        select(Response.enrollment_id, func.min(Response.responded_at).label("first"))
        .where(Response.calendar_status.in_(list(ANSWERS)))
        .group_by(Response.enrollment_id)
        .subquery()
    )
    rows = db.execute(
        select(
            Person.email,
            TrainingSession.course,
            Enrollment.calendar_status,
            Enrollment.status,
            Enrollment.invited_at,
            Enrollment.responded_at,
            TrainingSession.start_at,
            first_answer.c.first,
        )
        .join(Enrollment, Enrollment.person_id == Person.id)
        .join(TrainingSession, TrainingSession.id == Enrollment.session_id)
        .outerjoin(first_answer, first_answer.c.enrollment_id == Enrollment.id)
        .where(
            TrainingSession.end_at <= now,
            Enrollment.status.in_([EnrollmentStatus.ATTENDED, EnrollmentStatus.NO_SHOW]),
        )
    )
    return [
        PastOutcome(
            email=email,
            course=course or "",
            answer=calendar,
            attended=status == EnrollmentStatus.ATTENDED,
            invited_at=invited_at,
            responded_at=responded_at,
            start=start,
            first_responded_at=first,
        )
        for email, course, calendar, status, invited_at, responded_at, start, first in rows
    ]


def seats(session: TrainingSession) -> list[Seat]:
    """The enrolled students of a session, as the model reads them."""
    return [
        Seat(e.person.email, e.calendar_status, e.invited_at, e.responded_at)
        for e in session.enrollments
        if e.status == EnrollmentStatus.ENROLLED
    ]


@dataclass(frozen=True)
class ForecastReport:
    """`report forecast`: one row per upcoming session, and the model's own note."""

    rows: list[dict[str, Any]]
    model: Model


def forecast_report(db: Session, now: datetime, key: str | None = None) -> ForecastReport:
    """The forecast for session `key`, or for every scheduled session that has not
    started, soonest first. ForecastError for a session that has started or is
    cancelled."""
    model = fit(past_outcomes(db, now))
    sessions: Sequence[TrainingSession]
    if key is not None:
        session = get_session(db, key, notes=False)
        if session.status == SessionStatus.CANCELLED:
            raise ForecastError(f"session {key} is cancelled; nobody will attend")
        sessions = [session]
    else:
        sessions = db.scalars(
            select(TrainingSession)
            .where(
                TrainingSession.status == SessionStatus.SCHEDULED,
                TrainingSession.start_at > now,
            )
            .order_by(TrainingSession.start_at, TrainingSession.key)
        ).all()
    rows = [forecast_session(s.key, s.start_at, s.capacity, seats(s), model, now) for s in sessions]
    return ForecastReport(rows, model)


# Fitted models by store URL, with when they were fitted: a page view must not refit
# over the whole history (the history changes only when attendance is recorded).
_MODELS: dict[str, tuple[datetime, Model]] = {}
MODEL_LIFETIME = timedelta(minutes=5)


def cached_model(db: Session, now: datetime) -> Model:
    """The model fitted on the store's history, refitted after MODEL_LIFETIME."""
    key = str(db.get_bind().engine.url)
    fitted = _MODELS.get(key)
    if fitted is None or not timedelta(0) <= now - fitted[0] < MODEL_LIFETIME:
        fitted = (now, fit(past_outcomes(db, now)))
        _MODELS[key] = fitted
    return fitted[1]


def session_forecast(db: Session, session: TrainingSession, now: datetime) -> dict[str, Any] | None:
    """The forecast line of a session page: expected, the 80% interval, the chance of
    overbooking; None for a session that has started or is cancelled."""
    if session.status != SessionStatus.SCHEDULED or session.start_at <= now:
        return None
    row = forecast_session(
        session.key,
        session.start_at,
        session.capacity,
        seats(session),
        cached_model(db, now),
        now,
    )
    return {k: row[k] for k in ("expected", "low", "high", "p_over_capacity")}


def session_page_with_forecast(db: Session, key: str, now: datetime) -> dict[str, Any]:
    """The session page of `session show --json` and the API: the page, and its
    `forecast` (None for a session that has started or is cancelled)."""
    from tmcaldav.store.pages import session_page

    session = get_session(db, key)
    page = session_page(session)
    page["forecast"] = session_forecast(db, session, now)
    return page
