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
