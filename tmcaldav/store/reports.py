"""Reports over the store's history: who accepts and does not come.

`no_show_report` counts, per student, the sessions they held a seat in that are over,
how many of those they had accepted in their calendar, how many they missed
(`no_show`), and how many they missed after accepting: the figure a training office
acts on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tmcaldav.store.model import Enrollment, Person, TrainingSession, utcnow

# Statuses that mean the student held a seat (attendance recorded or not).
_SEATED = ("enrolled", "attended", "no_show")


def no_show_report(db: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Students with at least one no-show, most no-shows first.

    Each row: email, name, sessions (ended sessions they held a seat in, or with
    attendance recorded), accepted (of those, answered accepted), no_shows, and
    accepted_no_shows.
    """
    now = now or utcnow()
    rows = db.execute(
        select(
            Person.email,
            Person.name,
            Enrollment.status,
            Enrollment.calendar_status,
            TrainingSession.end_at,
        )
        .join(Enrollment, Enrollment.person_id == Person.id)
        .join(TrainingSession, TrainingSession.id == Enrollment.session_id)
        .where(TrainingSession.status == "scheduled", Enrollment.status.in_(_SEATED))
    )
    people: dict[str, dict[str, Any]] = {}
    for row in rows:
        recorded = row.status in ("attended", "no_show")
        if not recorded and row.end_at > now:
            continue  # not over yet
        entry = people.setdefault(
            row.email,
            {
                "email": row.email,
                "name": row.name,
                "sessions": 0,
                "accepted": 0,
                "no_shows": 0,
                "accepted_no_shows": 0,
            },
        )
        accepted = row.calendar_status == "accepted"
        entry["sessions"] += 1
        entry["accepted"] += accepted
        if row.status == "no_show":
            entry["no_shows"] += 1
            entry["accepted_no_shows"] += accepted
    report = [p for p in people.values() if p["no_shows"]]
    return sorted(report, key=lambda p: (-p["no_shows"], -p["accepted_no_shows"], p["email"]))


# How long after the invitation students answer: the buckets of `answer_timing`.
TIMING_BUCKETS: tuple[tuple[str, float], ...] = (
    ("within an hour", 3600.0),
    ("within a day", 86400.0),
    ("within 3 days", 3 * 86400.0),
    ("within a week", 7 * 86400.0),
    ("later", float("inf")),
)


def answer_timing(db: Session) -> dict[str, Any]:
    """How long after their invitation students answer (their first answer).

    Returns {"answered", "unanswered", "median_hours", "buckets": [{"label", "count"}]}
    over every invited enrollment that is not cancelled; an answer recorded before the
    invitation (an import) is left out.
    """
    from sqlalchemy import func

    from tmcaldav.domain import ANSWERS
    from tmcaldav.store.model import Response

    first = (
        select(Response.enrollment_id, func.min(Response.responded_at).label("first_answer"))
        .where(Response.calendar_status.in_([str(a) for a in ANSWERS]))
        .group_by(Response.enrollment_id)
        .subquery()
    )
    rows = db.execute(
        select(Enrollment.invited_at, first.c.first_answer)
        .outerjoin(first, first.c.enrollment_id == Enrollment.id)
        .where(Enrollment.invited_at.is_not(None), Enrollment.status != "cancelled")
    )
    delays: list[float] = []
    unanswered = 0
    for invited_at, answered_at in rows:
        if answered_at is None:
            unanswered += 1
            continue
        if answered_at.tzinfo is None:  # a bare MIN() on SQLite loses the column type
            answered_at = answered_at.replace(tzinfo=invited_at.tzinfo)
        delay = (answered_at - invited_at).total_seconds()
        if delay >= 0:
            delays.append(delay)
    counts = [0] * len(TIMING_BUCKETS)
    for delay in delays:
        for i, (_, limit) in enumerate(TIMING_BUCKETS):
            if delay < limit:
                counts[i] += 1
                break
    delays.sort()
    median = None
    if delays:
        middle = len(delays) // 2
        median = (
            delays[middle]
            if len(delays) % 2
            else (delays[middle - 1] + delays[middle]) / 2
        )
    return {
        "answered": len(delays),
        "unanswered": unanswered,
        "median_hours": None if median is None else round(median / 3600, 2),
        "buckets": [
            {"label": label, "count": n}
            for (label, _), n in zip(TIMING_BUCKETS, counts, strict=True)
        ],
    }
