"""What the web pages show, read from the store in one go per page.

The session page starts from the contract's read model (`store.pages.session_page`, the
object `session show --json` prints) and adds what only a browser shows: how each
answer came (for the tooltip), the open suggestions beside the list, and the change id
the page is as new as (for the live channel). The sessions page reads one page of
sessions and counts for just those, so its cost follows what it shows, not the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tmcaldav.domain import CalendarStatus, values
from tmcaldav.hooks.suggestions import suggestion_row
from tmcaldav.store import get_session
from tmcaldav.store.changes import latest_change
from tmcaldav.store.model import (
    Enrollment,
    Person,
    Response,
    Suggestion,
    TrainingSession,
    utcnow,
)
from tmcaldav.store.outcomes import session_forecast
from tmcaldav.store.pages import iso, session_page

CALENDAR_STATUSES = values(CalendarStatus)
SESSIONS_PER_PAGE = 25


@dataclass(frozen=True)
class SessionView:
    """The session page's data: the contract's page plus the browser's extras."""

    page: dict[str, Any]
    # email → how the answer shown came: poll, imip, manual, link, import (None: no answer).
    sources: dict[str, str | None]
    suggestions: list[dict[str, Any]]
    change: int


def session_view(db: Session, key: str) -> SessionView:
    """The session page of `key` (NotFoundError when there is none)."""
    # The change id first: the data read after it is at least that new, so a change
    # committed meanwhile is pushed to the page again rather than missed.
    change = latest_change(db)
    session = get_session(db, key)
    page = session_page(session)
    page["forecast"] = session_forecast(db, session, utcnow())
    return SessionView(
        page=page,
        sources=answer_sources(db, session),
        suggestions=open_suggestions(db, session),
        change=change,
    )


def answer_sources(db: Session, session: TrainingSession) -> dict[str, str | None]:
    """For each student, the source of the answer the Calendar column shows."""
    by_id = {e.id: e for e in session.enrollments}
    if not by_id:
        return {}
    found: dict[int, str] = {}
    rows = db.execute(
        select(
            Response.enrollment_id, Response.source, Response.calendar_status, Response.responded_at
        )
        .where(Response.enrollment_id.in_(by_id))
        .order_by(Response.id)
    )
    for row in rows:
        enrollment = by_id[row.enrollment_id]
        # The shown answer is the first row with the enrollment's status and time (the
        # same answer seen again later, by mail and then by poll, keeps its source).
        if row.calendar_status == enrollment.calendar_status and (
            enrollment.responded_at is None or row.responded_at == enrollment.responded_at
        ):
            found.setdefault(row.enrollment_id, row.source)
    return {e.person.email: found.get(e.id) for e in session.enrollments}


def open_suggestions(db: Session, session: TrainingSession) -> list[dict[str, Any]]:
    """The session's open suggestions, oldest first, as `suggestions --json` rows."""
    rows = db.execute(
        select(Suggestion, Person.email)
        .outerjoin(Enrollment, Enrollment.id == Suggestion.enrollment_id)
        .outerjoin(Person, Person.id == Enrollment.person_id)
        .where(Suggestion.session_id == session.id, Suggestion.state == "open")
        .order_by(Suggestion.created_at, Suggestion.id)
    )
    return [suggestion_row(s, session.key, email) for s, email in rows]


@dataclass(frozen=True)
class SessionsPage:
    """One page of the sessions list."""

    rows: list[dict[str, Any]]
    past: bool
    page: int
    has_more: bool
    upcoming_count: int
    past_count: int


def sessions_overview(
    db: Session,
    *,
    past: bool = False,
    page: int = 0,
    per_page: int = SESSIONS_PER_PAGE,
    now: datetime | None = None,
) -> SessionsPage:
    """Upcoming sessions soonest first (or past ones, latest first), one page of them,
    each with seats, waitlist, counts per calendar status and open suggestions."""
    now = now or utcnow()
    # Plain columns, not ORM objects: a page of rows, cheaply.
    ts = TrainingSession
    stmt = select(
        ts.id, ts.key, ts.title, ts.course, ts.start_at, ts.end_at, ts.tz, ts.location, ts.capacity,
        ts.status, ts.calendar_state,
    )
    if past:
        stmt = stmt.where(ts.end_at < now).order_by(ts.start_at.desc(), ts.key)
    else:
        stmt = stmt.where(ts.end_at >= now).order_by(ts.start_at, ts.key)
    found = db.execute(stmt.limit(per_page + 1).offset(page * per_page)).all()
    has_more = len(found) > per_page
    sessions = found[:per_page]
    ids = [s.id for s in sessions]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    seats: dict[int, int] = dict.fromkeys(ids, 0)
    waiting: dict[int, int] = dict.fromkeys(ids, 0)
    suggestions: dict[int, int] = dict.fromkeys(ids, 0)
    if ids:
        for row in db.execute(
            select(
                Enrollment.session_id,
                Enrollment.status,
                Enrollment.calendar_status,
                func.count(),
            )
            .where(Enrollment.session_id.in_(ids))
            .group_by(Enrollment.session_id, Enrollment.status, Enrollment.calendar_status)
        ):
            session_id, status, calendar, n = row
            if status in ("enrolled", "attended", "no_show"):
                seats[session_id] += n
            elif status == "waitlisted":
                waiting[session_id] += n
            if status != "cancelled":
                by = counts[session_id]
                by[calendar] = by.get(calendar, 0) + n
        for session_id, n in db.execute(
            select(Suggestion.session_id, func.count())
            .where(Suggestion.session_id.in_(ids), Suggestion.state == "open")
            .group_by(Suggestion.session_id)
        ):
            suggestions[session_id] = n
    ended = ts.end_at < now
    totals = {
        bool(over): int(n) for over, n in db.execute(select(ended, func.count()).group_by(ended))
    }
    rows = [
        {
            "key": s.key,
            "title": s.title,
            "course": s.course,
            "start": iso(s.start_at, s.tz),
            "end": iso(s.end_at, s.tz),
            "tz": s.tz,
            "location": s.location,
            "capacity": s.capacity,
            "status": s.status,
            "calendar_state": s.calendar_state,
            "seats_taken": seats[s.id],
            "waitlisted": waiting[s.id],
            "calendar": {c: counts[s.id].get(c, 0) for c in CALENDAR_STATUSES},
            "open_suggestions": suggestions[s.id],
        }
        for s in sessions
    ]
    return SessionsPage(
        rows=rows,
        past=past,
        page=page,
        has_more=has_more,
        upcoming_count=int(totals.get(False, 0)),
        past_count=int(totals.get(True, 0)),
    )


def all_suggestions(db: Session, *, include_decided: bool = False) -> list[dict[str, Any]]:
    """Suggestions across every session, newest first, as `suggestions --json` rows."""
    from tmcaldav.hooks.suggestions import list_suggestions

    return list(reversed(list_suggestions(db, include_decided=include_decided)))
