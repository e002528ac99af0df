"""Benchmark: the turnout forecast against what an administrator does today.

A synthetic history with a fixed seed: students with their own reliability (drawn
from a Beta), their own habit of answering calendar invitations or not, of answering
fast or late, of correcting an answer when plans change or not; several courses that
draw differently; sessions of 8-30 seats. Plans change between the invitation and the
session (a clash, a sick child), some doubtful students answer maybe, some never
answer and come anyway, some decline and still come, some are off sick on the day,
some sessions have a bad day (a strike, snow) for everyone.

The model is fit on the sessions before a split in the timeline and forecasts each
later session `--days-before` days before its start, from the calendar as it stood
then. Figures over those held-out sessions, side by side with two baselines:
"count the ✓" (accepted students come, the others do not) and "✓ plus half of ?"
(and half of those who answered maybe):

- MAE: mean absolute error of the expected turnout against the real one;
- Brier: mean squared error of each student's chance against 1 (came) / 0;
- coverage: how often the real turnout fell inside the model's 80% interval.

    .venv/bin/python bench/forecast.py [--seed 7] [--days-before 3] [--sessions 1000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tmcaldav.forecast import (
    Model,
    PastOutcome,
    Seat,
    fit,
    forecast_session,
    poisson_binomial,
)

EPOCH = datetime(2023, 1, 2, 9, 0, tzinfo=UTC)
# Course name -> how much more (>1) or less (<1) the odds of coming are than usual.
COURSES = {
    "first-aid": 1.6,  # mandatory, booked by the employer
    "fire-safety": 1.4,
    "excel-advanced": 0.9,
    "leadership": 1.0,
    "negotiation": 0.8,
    "python-intro": 0.7,  # optional, evenings
}


@dataclass
class Student:
    """One student's habits, unknown to the model."""

    email: str
    reliability: float  # chance of meaning to come when invited
    steadiness: float  # how rarely plans fall through later
    responsive: float  # chance of answering an invitation at all
    delay_days: float  # typical time to answer
    tidy: float  # chance of correcting the answer when plans change
    doubtful: float  # chance of being unsure when invited
    activity: float  # how often they enroll


@dataclass
class SeatStory:
    """What happened to one seat: answers with their times, and whether they came."""

    email: str
    invited_at: datetime
    answers: list[tuple[datetime, str]]
    attended: bool

    def status_at(self, when: datetime) -> tuple[str, datetime | None]:
        """The calendar status (and its answer time) as it stood at `when`."""
        status, at = "invited", None
        for moment, answer in self.answers:
            if moment <= when:
                status, at = answer, moment
        return status, at

    def as_seen(self, when: datetime) -> Seat:
        """The seat as the store shows it at `when`."""
        status, at = self.status_at(when)
        return Seat(self.email, status, self.invited_at, at)


@dataclass
class SessionStory:
    """A session that happened: course, start, capacity and its seats."""

    key: str
    course: str
    start: datetime
    capacity: int
    seats: list[SeatStory]


def make_students(rng: random.Random, count: int, unanswered: float) -> list[Student]:
    """`count` students with their own habits; on average they leave a share
    `unanswered` of invitations without an answer (some nearly all, most few)."""
    answering = (2.7 * (1 - unanswered), 2.7 * unanswered)
    return [
        Student(
            email=f"s{i:05d}@example.org",
            reliability=rng.betavariate(7.0, 1.4),
            steadiness=rng.betavariate(9.0, 1.0),
            responsive=rng.betavariate(*answering),
            delay_days=rng.lognormvariate(math.log(2.0), 0.9),
            tidy=rng.betavariate(2.0, 2.0),
            doubtful=rng.betavariate(1.0, 9.0),
            activity=rng.lognormvariate(0.0, 0.8),
        )
        for i in range(count)
    ]


def odds_scaled(p: float, factor: float) -> float:
    """`p` with its odds multiplied by `factor`."""
    odds = p / (1 - p) * factor if p < 1 else math.inf
    return 1.0 if math.isinf(odds) else odds / (1 + odds)


def seat_story(
    rng: random.Random,
    student: Student,
    course_pull: float,
    invited_at: datetime,
    start: datetime,
    bad_day: float,
) -> SeatStory:
    """Simulate one student's answers and attendance for one session."""
    window = (start - invited_at).total_seconds()

    def moment() -> datetime:
        return invited_at + timedelta(seconds=rng.uniform(0, window))

    # Intention when invited: come, unsure or not; and later changes of plan.
    if rng.random() < student.doubtful:
        state = "unsure"
    elif rng.random() < odds_scaled(student.reliability, course_pull):
        state = "come"
    else:
        state = "not"
    changes: list[tuple[datetime, str]] = []
    if state == "come" and rng.random() > student.steadiness:
        changes.append((moment(), "not"))
    elif state == "unsure":
        changes.append((moment(), "come" if rng.random() < 0.55 else "not"))
    elif state == "not" and rng.random() < 0.12:
        changes.append((moment(), "come"))  # the clash went away
    changes.sort()

    answer_of = {"come": "accepted", "unsure": "tentative", "not": "declined"}
    answers: list[tuple[datetime, str]] = []
    answering = rng.random() < student.responsive
    if answering:
        # Those who mean to come answer sooner; doubt and bad news wait.
        typical = student.delay_days * {"come": 1.0, "unsure": 2.5, "not": 3.0}[state]
        first = invited_at + timedelta(days=rng.lognormvariate(math.log(typical), 0.9))
        if first < start:
            plan = state
            for when, new in changes:
                if when <= first:
                    plan = new
            if plan == "not" and rng.random() < 0.35:
                pass  # not coming, and not saying so
            else:
                answers.append((first, answer_of[plan]))
    # A change of plan after the answer: corrected (or, for silent students, a
    # decline sent) only by tidy students.
    for when, new in changes:
        said = answers[-1][0] if answers else None
        if said is not None and when <= said:
            continue  # already reflected in the answer
        if said is None and not (new == "not" and rng.random() < 0.5 * student.tidy):
            continue
        if said is not None and rng.random() > student.tidy:
            continue
        answers.append((when, answer_of[new]))
    final = changes[-1][1] if changes else state
    sick = rng.random() < bad_day + 0.04 * (1 - student.reliability)
    return SeatStory(student.email, invited_at, answers, attended=final == "come" and not sick)


def make_history(rng: random.Random, students: list[Student], sessions: int) -> list[SessionStory]:
    """`sessions` sessions over three years, seats filled from the students."""
    weights = [s.activity for s in students]
    stories = []
    for i in range(sessions):
        course = rng.choice(list(COURSES))
        start = EPOCH + timedelta(days=rng.uniform(0, 3 * 365))
        capacity = rng.randint(8, 30)
        enrolled = max(1, capacity - rng.choice([0, 0, 0, 1, 2, 3, 5]))
        chosen: dict[str, Student] = {}
        while len(chosen) < enrolled:
            pick = rng.choices(students, weights)[0]
            chosen[pick.email] = pick
        invited_at = start - timedelta(days=rng.uniform(14, 42))
        bad_day = rng.betavariate(1.0, 30.0)
        seats = []
        for student in chosen.values():
            # Late enrollments are invited later.
            when = invited_at
            if rng.random() < 0.15:
                when = start - timedelta(days=rng.uniform(1, (start - invited_at).days))
            seats.append(seat_story(rng, student, COURSES[course], when, start, bad_day))
        stories.append(SessionStory(f"{course}-{i:04d}", course, start, capacity, seats))
    stories.sort(key=lambda s: s.start)
    return stories


def past_outcomes(stories: list[SessionStory]) -> list[PastOutcome]:
    """What the store holds about sessions that are over."""
    outcomes = []
    for story in stories:
        for seat in story.seats:
            answer, at = seat.status_at(story.start)
            first = next((m for m, _ in seat.answers if m <= story.start), None)
            outcomes.append(
                PastOutcome(
                    email=seat.email,
                    course=story.course,
                    answer=answer,
                    attended=seat.attended,
                    invited_at=seat.invited_at,
                    responded_at=at,
                    start=story.start,
                    first_responded_at=first,
                )
            )
    return outcomes


BASELINES = {
    "count ✓": {"accepted": 1.0},
    "✓ + ½ ?": {"accepted": 1.0, "tentative": 0.5},
}
METHODS = ("model", *BASELINES)


@dataclass
class Scores:
    """Errors over held-out sessions, per method, and the interval's record."""

    sessions: int = 0
    seats: int = 0
    abs_error: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METHODS, 0.0))
    squared: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METHODS, 0.0))
    covered: int = 0
    held: float = 0.0  # the model's own chance of its intervals, summed
    chance: float = 0.0  # the model's own expected absolute error, summed

    def add(self, other: Scores) -> None:
        """Pool `other` into these scores."""
        self.sessions += other.sessions
        self.seats += other.seats
        for name in METHODS:
            self.abs_error[name] += other.abs_error[name]
            self.squared[name] += other.squared[name]
        self.covered += other.covered
        self.held += other.held
        self.chance += other.chance

    def mae(self, name: str) -> float:
        """Mean absolute error of the expected turnout."""
        return self.abs_error[name] / self.sessions

    def brier(self, name: str) -> float:
        """Mean squared error of the students' chances."""
        return self.squared[name] / self.seats

    def ratio(self) -> float:
        """Model MAE over the better baseline's MAE."""
        return self.mae("model") / min(self.mae(name) for name in BASELINES)


def evaluate(seed: int, args: argparse.Namespace) -> tuple[Scores, Model]:
    """One synthetic history: fit on the past, forecast the held-out sessions."""
    rng = random.Random(seed)
    students = make_students(rng, args.students, args.unanswered)
    stories = make_history(rng, students, args.sessions)
    split = stories[0].start + args.split * (stories[-1].start - stories[0].start)
    lead = timedelta(days=args.days_before)
    model = fit(past_outcomes([s for s in stories if s.start < split]))
    scores = Scores()
    for story in stories:
        now = story.start - lead
        if now < split:
            continue  # fit on, or too close to the split to be forecast after it
        seats = [seat.as_seen(now) for seat in story.seats]
        entry = forecast_session(story.key, story.start, story.capacity, seats, model, now)
        chances = {"model": [model.p_attend(seat, now, story.start).p for seat in seats]}
        for name, weights in BASELINES.items():
            chances[name] = [weights.get(seat.calendar, 0.0) for seat in seats]
        came = [seat.attended for seat in story.seats]
        actual = sum(came)
        for name, ps in chances.items():
            scores.abs_error[name] += abs(math.fsum(ps) - actual)
            scores.squared[name] += sum((p - c) ** 2 for p, c in zip(ps, came, strict=True))
        scores.sessions += 1
        scores.seats += len(seats)
        scores.covered += entry["low"] <= actual <= entry["high"]
        pmf = poisson_binomial(chances["model"])
        scores.held += math.fsum(pmf[entry["low"] : entry["high"] + 1])
        mean = math.fsum(chances["model"])
        scores.chance += math.fsum(mass * abs(k - mean) for k, mass in enumerate(pmf))
    return scores, model


def line(label: str, scores: Scores) -> str:
    """One row of the table."""
    maes = "".join(f"{scores.mae(name):9.2f}" for name in METHODS)
    briers = "".join(f"{scores.brier(name):9.3f}" for name in METHODS)
    coverage = scores.covered / scores.sessions
    return f"{label:>5} {scores.sessions:8} {maes}  {briers}  {scores.ratio():6.2f} {coverage:9.1%}"


def main() -> None:
    """Generate, fit, forecast, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7, help="the first history's seed")
    parser.add_argument("--runs", type=int, default=5, help="histories, seeds from --seed on")
    parser.add_argument("--students", type=int, default=1500)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--days-before", type=float, default=3.0)
    parser.add_argument("--split", type=float, default=0.6, help="share of the timeline fit on")
    parser.add_argument(
        "--unanswered",
        type=float,
        default=0.26,
        help="share of invitations students leave unanswered, on average",
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    seeds = range(args.seed, args.seed + args.runs)
    print(
        f"forecast: {args.runs} synthetic histories (seeds {seeds[0]}-{seeds[-1]}) of "
        f"{args.sessions} sessions (8-30 seats) and {args.students} students over three "
        f"years, {args.unanswered:.0%} of invitations unanswered;\n"
        f"fit on the first {args.split:.0%} of the timeline, the later sessions "
        f"forecast {args.days_before:g} days before their start\n"
    )
    head = "".join(f"{name:>9}" for name in METHODS)
    print(f"{'':5} {'':8} {'MAE of expected turnout':^27}  {'Brier (per student)':^27}")
    print(f"{'seed':>5} {'sessions':>8} {head}  {head}  {'ratio':>6} {'coverage':>9}")
    total = Scores()
    first: Model | None = None
    for seed in seeds:
        scores, model = evaluate(seed, args)
        first = first or model
        total.add(scores)
        print(line(str(seed), scores))
    print(line("all", total))
    print(
        f"\nmodel MAE / best baseline MAE: {total.ratio():.2f} (target <= 0.60); "
        f"chance alone, by the model's odds, makes {total.chance / total.sessions:.2f}\n"
        f"80% interval coverage: {total.covered / total.sessions:.1%} (target 75-85%); "
        f"by the model's own odds the intervals hold {total.held / total.sessions:.1%}"
    )
    assert first is not None
    print(f"\norganisation rates fit on seed {seeds[0]}'s history (came/times, prior strength):")
    for situation, rate in first.rates.items():
        print(
            f"  {situation:14} {rate.mean:6.1%} ({rate.came}/{rate.times}, "
            f"strength {rate.strength:.1f})"
        )
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
