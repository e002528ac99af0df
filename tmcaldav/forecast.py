"""Turnout forecast: who is likely to come to an upcoming session, and how many in all.

Pure computation (standard library only); the store, the CLI and the `forecast` plugin
feed it plain values and print what it returns.

The model, in an administrator's words. Each enrolled student is in one *situation*:

- they accepted, answered maybe (tentative), or declined (delegated counts as declined);
- or they have not answered ("silent"; not yet invited counts as just invited), and
  then it matters how long they have been silent compared with the time from the
  invitation to the session: four bands, by the share of that time still left (over
  half, 20-50%, 5-20%, under 5%). Students still silent late often come less than
  those just invited, since many of the ones who will come have answered by then.

For each situation the organisation's rate comes from its own past sessions ("accepted
students came 92% of the time"). A student's own record in that situation ("this
student came 1 of 3 times after accepting") moves their chance away from the
organisation's rate, the more the longer the record: the rate counts as `strength`
sessions of the student's own (a Beta prior whose strength is estimated from how much
students really differ: empirical Bayes, method of moments). A student with no record
gets the organisation's rate exactly. With no history at all, neutral rates are used
and the model says so.

Turnout is the sum of the students' chances, taken as independent: its exact
distribution (Poisson-binomial) gives the expected number, an 80% interval (within the
10th to 90th percentiles, as narrow as holds at least 80%) and the chance the session is
over capacity. From that follows how many students can be invited from the waitlist
while the chance of overbooking stays under a limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tmcaldav.errors import TmcaldavError

ANSWER_KINDS = ("accepted", "tentative", "declined", "silent")

# Calendar status (the Calendar column) -> the kind of answer it is.
_KIND = {
    "accepted": "accepted",
    "tentative": "tentative",
    "declined": "declined",
    "delegated": "declined",
    "invited": "silent",
    "not_invited": "silent",
}


@dataclass(frozen=True)
class SilenceBand:
    """A band of "how much of the time from invitation to session has passed in silence".

    A silent student falls in the band holding that share (below `upto`); past seats
    count in it when the student was still silent at `checkpoint` (a share inside the
    band). `words` say it by the time left ("with 5-20% of the time to the session
    left": invited 30 days before, 1.5 to 6 days left).
    """

    key: str
    upto: float
    checkpoint: float
    words: str


SILENCE_BANDS = (
    SilenceBand("silent_recent", 0.5, 0.25, "with over half the time to the session left"),
    SilenceBand("silent_half", 0.8, 0.65, "with 20-50% of the time to the session left"),
    SilenceBand("silent_most", 0.95, 0.875, "with 5-20% of the time to the session left"),
    SilenceBand("silent_last", math.inf, 0.975, "with under 5% of the time to the session left"),
)

SITUATIONS = ("accepted", "tentative", "declined", *(b.key for b in SILENCE_BANDS))

# Used when the store has no past session for a situation: what a calendar suggests,
# held loosely (as strong as two sessions of the student's own).
NEUTRAL_RATES = {
    "accepted": 0.9,
    "tentative": 0.5,
    "declined": 0.1,
    **{b.key: 0.5 for b in SILENCE_BANDS},
}
NEUTRAL_STRENGTH = 2.0
# Prior strength when the history cannot tell how much students differ (every student
# seen once), and the bounds of an estimated one.
DEFAULT_STRENGTH = 5.0
MIN_STRENGTH = 1.0
MAX_STRENGTH = 100.0
# Below this much repeated history in a situation, its strength comes from all of them.
_MIN_REPEATS = 10.0

NO_HISTORY = "no history: neutral priors used"


class ForecastError(TmcaldavError, ValueError):
    """A forecast that cannot be made (a session that has started, an unknown status)."""


@dataclass(frozen=True)
class PastOutcome:
    """One seat of a session that is over: the student's answer and whether they came.

    `answer` is the calendar status at the session (accepted, tentative, declined,
    delegated, invited = silent, not_invited); `responded_at` the time of that answer;
    `first_responded_at` the time of the student's first answer when the store's
    answer history has it (else `responded_at` is taken). `course` is carried for
    reports; the model does not use it (in the benchmark, course differences showed
    in the answers already and a per-course factor gained nothing).
    """

    email: str
    course: str
    answer: str
    attended: bool
    invited_at: datetime | None
    responded_at: datetime | None
    start: datetime
    first_responded_at: datetime | None = None


@dataclass(frozen=True)
class Seat:
    """An enrolled student of an upcoming session, with their calendar status.

    The model reads `calendar` and `invited_at`; `responded_at` is carried for reports.
    """

    email: str
    calendar: str
    invited_at: datetime | None
    responded_at: datetime | None


@dataclass(frozen=True)
class Rate:
    """The organisation's rate in one situation, as a Beta prior.

    `came` of `times` past seats in the situation were attended; `mean` is the rate
    and `strength` how many sessions of a student's own it weighs (alpha + beta).
    """

    came: int
    times: int
    mean: float
    strength: float


@dataclass(frozen=True)
class Estimate:
    """A student's chance of attending, with the plain words behind it."""

    email: str
    p: float
    situation: str
    organisation_rate: float
    came: int
    times: int
    explanation: str


@dataclass(frozen=True)
class Turnout:
    """How many will attend: expected, the 80% interval, and the chance of too many."""

    expected: float
    low: int
    high: int
    p_over_capacity: float


@dataclass(frozen=True)
class Model:
    """Organisation rates per situation and each student's own record.

    `records` maps (email, situation) to (came, times). `note` is NO_HISTORY when fit
    had no past session (neutral rates in use), else None.
    """

    rates: Mapping[str, Rate]
    records: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    past_seats: int = 0
    note: str | None = None

    @property
    def no_history(self) -> bool:
        """True when fit had no past session and neutral priors are in use."""
        return self.note == NO_HISTORY

    def p_attend(self, seat: Seat, now: datetime, session_start: datetime) -> Estimate:
        """The chance `seat`'s student attends a session starting at `session_start`.

        Refuses (ForecastError) a session that has started or an unknown calendar status.
        """
        refuse_past(session_start, now)
        situation = situation_of(seat.calendar, seat.invited_at, now, session_start)
        rate = self.rates[situation]
        came, times = self.records.get((_person(seat.email), situation), (0, 0))
        p = shrunk(rate, came, times)
        return Estimate(
            email=seat.email,
            p=p,
            situation=situation,
            organisation_rate=rate.mean,
            came=came,
            times=times,
            explanation=self._explain(situation, rate, came, times, p),
        )

    def _explain(self, situation: str, rate: Rate, came: int, times: int, p: float) -> str:
        """The words behind an estimate, e.g. "accepted students came 92% of the time;
        this student came 1 of 3 times after accepting; estimate 85%"."""
        if self.no_history:
            first = f"{NO_HISTORY} ({_WHO[situation]}: {_pct(rate.mean)})"
        else:
            first = f"{_WHO[situation]} came {_pct(rate.mean)} of the time"
        if times:
            own = f"this student came {came} of {times} {_TIMES[times == 1]} {_WHEN[situation]}"
        else:
            own = f"no record of this student {_WHEN[situation]}"
        return f"{first}; {own}; estimate {_pct(p)}"


_WHO = {
    "accepted": "accepted students",
    "tentative": "students who answered maybe",
    "declined": "students who declined",
    **{b.key: f"students silent {b.words}" for b in SILENCE_BANDS},
}
_TIMES = {True: "time", False: "times"}
_WHEN = {
    "accepted": "after accepting",
    "tentative": "after answering maybe",
    "declined": "after declining",
    **{b.key: "when silent at that point" for b in SILENCE_BANDS},
}


def _pct(p: float) -> str:
    """0.918 -> "92%"."""
    return f"{round(100 * p)}%"


def _person(email: str) -> str:
    """The key a student's record is kept under (addresses compare case-blind)."""
    return email.strip().lower()


def answer_kind(calendar: str) -> str:
    """accepted, tentative, declined or silent, for a calendar status."""
    try:
        return _KIND[calendar]
    except KeyError:
        raise ForecastError(
            f"unknown calendar status {calendar!r} (one of {', '.join(_KIND)})"
        ) from None


def silent_share(invited_at: datetime | None, now: datetime, start: datetime) -> float:
    """The share of the time from invitation to session already passed, in [0, 1].

    Not invited yet (or invited after `start`): 0, as if just invited.
    """
    if invited_at is None or invited_at >= start:
        return 0.0
    share = (now - invited_at) / (start - invited_at)
    return min(1.0, max(0.0, share))


def silence_band(share: float) -> SilenceBand:
    """The band holding `share` of the time from invitation to session."""
    for band in SILENCE_BANDS:
        if share < band.upto:
            return band
    return SILENCE_BANDS[-1]


def situation_of(calendar: str, invited_at: datetime | None, now: datetime, start: datetime) -> str:
    """The situation of a student with calendar status `calendar` at `now`."""
    kind = answer_kind(calendar)
    if kind != "silent":
        return kind
    return silence_band(silent_share(invited_at, now, start)).key


def refuse_past(start: datetime, now: datetime) -> None:
    """ForecastError when the session starts at or before `now`."""
    if start <= now:
        raise ForecastError(
            f"the session started at {start.isoformat(timespec='minutes')} "
            f"(now is {now.isoformat(timespec='minutes')}): "
            "a forecast is for upcoming sessions; record attendance instead"
        )


def past_situations(outcome: PastOutcome) -> list[str]:
    """The situations a past seat counts in.

    Its final answer (accepted, tentative or declined), if any; and each silence band
    at whose checkpoint the student had not answered yet.
    """
    kind = answer_kind(outcome.answer)
    found = [] if kind == "silent" else [kind]
    first = outcome.first_responded_at or outcome.responded_at
    if kind == "silent" or first is None:
        first = None  # never answered
    for band in SILENCE_BANDS:
        if outcome.invited_at is None or outcome.invited_at >= outcome.start:
            silent = first is None
        else:
            checkpoint = outcome.invited_at + band.checkpoint * (outcome.start - outcome.invited_at)
            silent = first is None or first > checkpoint
        if silent:
            found.append(band.key)
    return found


def fit(history: Iterable[PastOutcome]) -> Model:
    """The model from the store's past sessions (attended or no-show seats).

    Per situation: the organisation's rate and, by empirical Bayes, how strongly it
    holds against a student's own record. A situation with no past seat gets its
    neutral rate; with no history at all the model's note says so.
    """
    records: dict[tuple[str, str], tuple[int, int]] = {}
    seats = 0
    for outcome in history:
        seats += 1
        for situation in past_situations(outcome):
            key = (_person(outcome.email), situation)
            came, times = records.get(key, (0, 0))
            records[key] = (came + int(outcome.attended), times + 1)
    if seats == 0:
        neutral = {s: Rate(0, 0, NEUTRAL_RATES[s], NEUTRAL_STRENGTH) for s in SITUATIONS}
        return Model(rates=neutral, records={}, past_seats=0, note=NO_HISTORY)
    per_situation: dict[str, list[tuple[int, int]]] = {s: [] for s in SITUATIONS}
    for (_, situation), record in records.items():
        per_situation[situation].append(record)
    spread = {s: _spread(r) for s, r in per_situation.items()}
    pooled_num = sum(num for num, _ in spread.values())
    pooled_den = sum(den for _, den in spread.values())
    pooled = _strength(pooled_num, pooled_den) if pooled_den >= _MIN_REPEATS else None
    rates: dict[str, Rate] = {}
    for situation, recs in per_situation.items():
        came = sum(c for c, _ in recs)
        times = sum(t for _, t in recs)
        if times == 0:
            rates[situation] = Rate(0, 0, NEUTRAL_RATES[situation], NEUTRAL_STRENGTH)
            continue
        num, den = spread[situation]
        if den >= _MIN_REPEATS:
            strength = _strength(num, den)
        else:
            strength = pooled if pooled is not None else DEFAULT_STRENGTH
        rates[situation] = Rate(came, times, came / times, strength)
    return Model(rates=rates, records=records, past_seats=seats, note=None)


def _spread(records: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """Method-of-moments terms for how much students' true rates differ.

    For students with (came_i, times_i), the intra-student correlation
    rho = 1 / (strength + 1) of a Beta-binomial is estimated as num / den with
    num = S / (m (1 - m)) - (I - 1) and den = N - I + 1 - sum(n_i^2) / N, where S is
    the n-weighted sum of squared deviations of the students' rates from the pooled
    rate m (Kleinman 1973). Returns (num, den); den is 0 when not estimable.
    """
    students = len(records)
    total = sum(t for _, t in records)
    if students < 2 or total == 0:
        return 0.0, 0.0
    m = sum(c for c, _ in records) / total
    den = total - students + 1 - sum(t * t for _, t in records) / total
    if m in (0.0, 1.0) or den <= 0:
        # No variation at all: nothing says students differ.
        return 0.0, max(den, 0.0)
    squares = sum(t * (c / t - m) ** 2 for c, t in records if t)
    return squares / (m * (1 - m)) - (students - 1), den


def _strength(num: float, den: float) -> float:
    """Prior strength (alpha + beta) from the estimated correlation num / den."""
    if den <= 0:
        return DEFAULT_STRENGTH
    rho = num / den
    if rho <= 1 / (MAX_STRENGTH + 1):
        return MAX_STRENGTH
    return min(MAX_STRENGTH, max(MIN_STRENGTH, 1 / rho - 1))


def shrunk(rate: Rate, came: int, times: int) -> float:
    """The posterior mean: the student's record `came` of `times` shrunk toward `rate`.

    (came + mean * strength) / (times + strength), written so that no record gives
    the organisation's rate exactly.
    """
    if times == 0:
        return rate.mean
    p = rate.mean + (came - times * rate.mean) / (times + rate.strength)
    return min(1.0, max(0.0, p))


def poisson_binomial(ps: Sequence[float]) -> list[float]:
    """The exact distribution of the number of successes of independent Bernoulli(p).

    Index k holds P(exactly k); dynamic programming, O(n^2). Refuses p outside [0, 1].
    """
    pmf = [1.0]
    for p in ps:
        pmf = poisson_binomial_add(pmf, p)
    return pmf


def percentile(pmf: Sequence[float], q: float) -> int:
    """The smallest k with P(X <= k) >= q (with a little slack for rounding)."""
    total = 0.0
    for k, mass in enumerate(pmf):
        total += mass
        if total >= q - 1e-9:
            return k
    return len(pmf) - 1


def interval80(pmf: Sequence[float]) -> tuple[int, int]:
    """The 80% interval of a distribution over 0..n: (low, high), both included.

    It starts from the 10th and 90th percentiles, which for a count of a few dozen
    hold about 90% (each end's whole point is in); then the less likely end is dropped,
    again and again, while what is left still holds at least 80%.
    """
    low, high = percentile(pmf, 0.1), percentile(pmf, 0.9)
    mass = math.fsum(pmf[low : high + 1])
    while low < high:
        end = low if pmf[low] <= pmf[high] else high
        if mass - pmf[end] < 0.8 - 1e-9:
            break
        mass -= pmf[end]
        if end == low:
            low += 1
        else:
            high -= 1
    return low, high


def turnout(ps: Sequence[float], capacity: int | None) -> Turnout:
    """Expected attendance, its 80% interval and the chance it exceeds `capacity`.

    The interval is interval80 of the exact distribution. No capacity (None): the
    chance of being over it is 0. Nobody enrolled: all 0.
    """
    pmf = poisson_binomial(ps)
    over = 0.0 if capacity is None else min(1.0, math.fsum(pmf[capacity + 1 :]))
    low, high = interval80(pmf)
    return Turnout(expected=math.fsum(ps), low=low, high=high, p_over_capacity=over)


def waitlist_invitations(
    ps_seated: Sequence[float],
    ps_waitlisted: Sequence[float],
    capacity: int,
    max_overbook_risk: float,
) -> int:
    """How many waitlisted students, in waitlist order, to invite.

    The most that keeps P(attending > capacity) <= `max_overbook_risk`, counting the
    seated students' chances and those of the invited waitlisted students.
    """
    if not 0.0 <= max_overbook_risk <= 1.0:
        raise ValueError(f"max_overbook_risk must be in [0, 1], not {max_overbook_risk!r}")
    pmf = poisson_binomial(ps_seated)
    invited = 0
    for p in ps_waitlisted:
        pmf = poisson_binomial_add(pmf, p)
        # A sum of floats may pass 1 by a rounding error: a risk of 1 allows everyone.
        if math.fsum(pmf[capacity + 1 :]) > max_overbook_risk + 1e-12:
            break
        invited += 1
    return invited


def poisson_binomial_add(pmf: Sequence[float], p: float) -> list[float]:
    """`pmf` with one more independent Bernoulli(p) added."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must be in [0, 1], not {p!r}")
    step = [0.0] * (len(pmf) + 1)
    for k, mass in enumerate(pmf):
        step[k] += mass * (1.0 - p)
        step[k + 1] += mass * p
    return step


def invitation_reason(seated: Turnout, capacity: int, invite: int, max_overbook_risk: float) -> str:
    """The reason of an `invite_waitlisted` suggestion.

    "expected turnout 9.4 of 12 seats (80%: 8–11); inviting 2 from the waitlist keeps
    the chance of overbooking under 10%"
    """
    head = (
        f"expected turnout {seated.expected:.1f} of {capacity} seats "
        f"(80%: {seated.low}–{seated.high})"
    )
    risk = (
        f"the chance of overbooking {'over' if invite <= 0 else 'under'} {_pct(max_overbook_risk)}"
    )
    if invite <= 0:
        return f"{head}; inviting from the waitlist would put {risk}"
    return f"{head}; inviting {invite} from the waitlist keeps {risk}"


def forecast_session(
    session: str,
    start: datetime,
    capacity: int | None,
    seats: Sequence[Seat],
    model: Model,
    now: datetime,
) -> dict[str, Any]:
    """One session's entry of `report forecast --json`.

    {"session", "start", "capacity", "enrolled", "expected", "low", "high",
    "p_over_capacity", "students": [{"email", "calendar", "p_attend"}]}; low/high are
    the 80% interval; students least likely to come first. Refuses a session that has
    started (ForecastError).
    """
    refuse_past(start, now)
    estimates = [(seat, model.p_attend(seat, now, start)) for seat in seats]
    result = turnout([e.p for _, e in estimates], capacity)
    estimates.sort(key=lambda pair: (pair[1].p, pair[0].email))
    return {
        "session": session,
        "start": start.isoformat(timespec="seconds"),
        "capacity": capacity,
        "enrolled": len(seats),
        "expected": round(result.expected, 2),
        "low": result.low,
        "high": result.high,
        "p_over_capacity": round(result.p_over_capacity, 3),
        "students": [
            {"email": seat.email, "calendar": seat.calendar, "p_attend": round(e.p, 3)}
            for seat, e in estimates
        ],
    }
