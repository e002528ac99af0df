"""The pure turnout forecast (tmcaldav.forecast): the model, the exact turnout
distribution, the waitlist advice and the `report forecast --json` entry."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmcaldav.forecast import (
    MAX_STRENGTH,
    NEUTRAL_RATES,
    NO_HISTORY,
    SILENCE_BANDS,
    ForecastError,
    Model,
    PastOutcome,
    Seat,
    Turnout,
    fit,
    forecast_session,
    invitation_reason,
    past_situations,
    percentile,
    poisson_binomial,
    situation_of,
    turnout,
    waitlist_invitations,
)

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=3)
INVITED = START - timedelta(days=30)

probability = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
small = st.lists(probability, max_size=10)


def brute_force(ps: list[float]) -> list[float]:
    """P(exactly k) by enumerating every outcome."""
    pmf = [0.0] * (len(ps) + 1)
    for outcome in itertools.product((0, 1), repeat=len(ps)):
        chance = 1.0
        for came, p in zip(outcome, ps, strict=True):
            chance *= p if came else 1 - p
        pmf[sum(outcome)] += chance
    return pmf


def past(
    email: str,
    answer: str,
    attended: bool,
    *,
    days_ago: int = 60,
    answered_after: float | None = 2.0,
    window: float = 30.0,
) -> PastOutcome:
    """A past seat: invited `window` days before the start, answered `answered_after`
    days after the invitation (None: never)."""
    start = NOW - timedelta(days=days_ago)
    invited = start - timedelta(days=window)
    answered = None if answered_after is None else invited + timedelta(days=answered_after)
    return PastOutcome(email, "first-aid", answer, attended, invited, answered, start)


def seat(email: str = "new@example.org", calendar: str = "accepted") -> Seat:
    """An upcoming seat, invited 30 days before START."""
    answered = None if calendar in ("invited", "not_invited") else INVITED + timedelta(days=1)
    invited = None if calendar == "not_invited" else INVITED
    return Seat(email, calendar, invited, answered)


def organisation(accepted_came: int = 9, accepted: int = 10) -> list[PastOutcome]:
    """Past seats of many students, one session each: `accepted_came` of `accepted`
    accepted students came; and a few declines and silences."""
    history = [past(f"a{i}@example.org", "accepted", i < accepted_came) for i in range(accepted)]
    history += [past(f"d{i}@example.org", "declined", i == 0) for i in range(5)]
    history += [past(f"s{i}@example.org", "invited", i < 2, answered_after=None) for i in range(4)]
    return history


# --- the exact turnout distribution ---------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(small)
def test_poisson_binomial_is_the_brute_force_enumeration(ps: list[float]) -> None:
    pmf = poisson_binomial(ps)
    assert len(pmf) == len(ps) + 1
    assert math.fsum(pmf) == pytest.approx(1.0, abs=1e-12)
    assert all(0.0 <= mass <= 1.0 + 1e-12 for mass in pmf)
    assert pmf == pytest.approx(brute_force(ps), abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.lists(probability, max_size=30), st.integers(min_value=0, max_value=35))
def test_turnout_interval_and_overbooking(ps: list[float], capacity: int) -> None:
    pmf = poisson_binomial(ps)
    result = turnout(ps, capacity)
    assert result.expected == pytest.approx(sum(ps))
    assert result.expected == pytest.approx(sum(k * m for k, m in enumerate(pmf)))
    # Inside the 10th-90th percentiles, holding at least 80%, and around the mean (a
    # count cannot straddle 0.95 exactly: it is 1 with 95%, so the interval is [1, 1]).
    assert percentile(pmf, 0.1) <= result.low <= result.high <= percentile(pmf, 0.9)
    assert result.low <= math.ceil(result.expected + 1e-9)
    assert result.high >= math.floor(result.expected - 1e-9)
    held = math.fsum(pmf[result.low : result.high + 1])
    assert held >= 0.8 - 1e-9
    assert 0.0 <= result.p_over_capacity <= 1.0
    assert result.p_over_capacity == pytest.approx(math.fsum(pmf[capacity + 1 :]), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(small, st.integers(min_value=0, max_value=10))
def test_over_capacity_against_enumeration(ps: list[float], capacity: int) -> None:
    assert turnout(ps, capacity).p_over_capacity == pytest.approx(
        sum(brute_force(ps)[capacity + 1 :]), abs=1e-12
    )


def test_interval_of_a_known_distribution() -> None:
    # Ten students at 50%: Binomial(10, 0.5); 3..7 holds 89%, 3..6 and 4..7 hold 78%.
    result = turnout([0.5] * 10, 8)
    assert (result.expected, result.low, result.high) == (5.0, 3, 7)
    assert result.p_over_capacity == pytest.approx(11 / 1024)
    # Binomial(20, 0.5): the 10th-90th percentiles 7..13 hold 88%, 8..13 81%, 8..12 74%.
    result = turnout([0.5] * 20, 20)
    assert (result.low, result.high) == (8, 13)


def test_empty_session() -> None:
    assert turnout([], 12) == Turnout(expected=0.0, low=0, high=0, p_over_capacity=0.0)
    assert turnout([], 0).p_over_capacity == 0.0
    assert turnout([1.0], None).p_over_capacity == 0.0  # no capacity: never over it


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_probabilities_outside_0_1_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="probability"):
        poisson_binomial([0.5, bad])


# --- the model ------------------------------------------------------------------------


def test_no_history_uses_neutral_priors_and_says_so() -> None:
    model = fit([])
    assert model.no_history and model.note == NO_HISTORY
    estimate = model.p_attend(seat(calendar="accepted"), NOW, START)
    assert estimate.p == NEUTRAL_RATES["accepted"]
    assert estimate.explanation.startswith("no history: neutral priors used (accepted")
    assert not fit(organisation()).no_history


def test_a_student_with_no_history_gets_the_organisation_rate_exactly() -> None:
    model = fit(organisation(accepted_came=9, accepted=10))
    estimate = model.p_attend(seat(calendar="accepted"), NOW, START)
    assert estimate.p == 9 / 10 == model.rates["accepted"].mean
    assert (estimate.came, estimate.times) == (0, 0)
    assert estimate.explanation == (
        "accepted students came 90% of the time; "
        "no record of this student after accepting; estimate 90%"
    )
    assert model.p_attend(seat(calendar="declined"), NOW, START).p == 1 / 5
    assert model.p_attend(seat(calendar="delegated"), NOW, START).p == 1 / 5


def test_the_explanation_quotes_the_student_record() -> None:
    history = organisation()
    history += [past("amy@example.org", "accepted", i == 0, days_ago=10 * i + 5) for i in range(3)]
    model = fit(history)
    estimate = model.p_attend(seat("Amy@Example.org", "accepted"), NOW, START)
    assert (estimate.came, estimate.times) == (1, 3)
    assert "this student came 1 of 3 times after accepting" in estimate.explanation
    assert estimate.explanation.startswith("accepted students came ")
    assert estimate.p < model.rates["accepted"].mean


def test_shrinkage_moves_toward_the_student_record_as_it_grows() -> None:
    base = organisation()
    organisation_rate = fit(base).rates["accepted"].mean
    chances = []
    for n in range(0, 12):
        history = base + [
            past("ned@example.org", "accepted", False, days_ago=5 + 7 * i) for i in range(n)
        ]
        chances.append(fit(history).p_attend(seat("ned@example.org"), NOW, START).p)
    assert chances[0] == pytest.approx(organisation_rate)
    assert all(later < earlier for earlier, later in itertools.pairwise(chances))
    assert all(0.0 <= p <= organisation_rate for p in chances)


def test_prior_strength_follows_how_much_students_differ() -> None:
    # Every student came 5 of 10 times: no sign that they differ, the rate holds fully.
    alike = [
        past(f"s{i}@example.org", "accepted", k < 5, days_ago=5 + k)
        for i in range(10)
        for k in range(10)
    ]
    assert fit(alike).rates["accepted"].strength == MAX_STRENGTH
    # Half always come, half never: students' own records say nearly everything.
    split = [
        past(f"s{i}@example.org", "accepted", i < 5, days_ago=5 + k)
        for i in range(10)
        for k in range(10)
    ]
    model = fit(split)
    assert model.rates["accepted"].strength < 2
    assert model.p_attend(seat("s0@example.org"), NOW, START).p > 0.9
    assert model.p_attend(seat("s9@example.org"), NOW, START).p < 0.1


def test_silence_bands_follow_the_share_of_time_passed() -> None:
    start = INVITED + timedelta(days=100)
    shares = {"silent_recent": 10, "silent_half": 60, "silent_most": 90, "silent_last": 99}
    for situation, day in shares.items():
        now = INVITED + timedelta(days=day)
        assert situation_of("invited", INVITED, now, start) == situation
    assert situation_of("not_invited", None, NOW, START) == "silent_recent"
    assert situation_of("tentative", INVITED, NOW, START) == "tentative"


def test_past_seats_count_as_silent_until_their_first_answer() -> None:
    # Invited 30 days before; answered after 20 days (share 0.67): silent at the
    # checkpoints 0.25 and 0.65, not at 0.875 and 0.975.
    outcome = past("x@example.org", "accepted", True, answered_after=20)
    assert past_situations(outcome) == ["accepted", "silent_recent", "silent_half"]
    never = past("x@example.org", "invited", True, answered_after=None)
    assert past_situations(never) == [band.key for band in SILENCE_BANDS]
    # The first answer counts, not the last one.
    invited = outcome.start - timedelta(days=30)
    changed = PastOutcome(
        "x@example.org",
        "first-aid",
        "declined",
        False,
        invited,
        outcome.start - timedelta(days=1),
        outcome.start,
        first_responded_at=invited + timedelta(days=1),
    )
    assert past_situations(changed) == ["declined"]


def test_long_silence_counts_against_a_student() -> None:
    # Ten students answered a third of the way (10 of 30 days) and came; those still
    # silent at the end mostly did not come.
    history = [past(f"e{i}@example.org", "accepted", True, answered_after=10) for i in range(10)]
    history += [past(f"n{i}@example.org", "invited", i < 2, answered_after=None) for i in range(10)]
    model = fit(history)
    start = INVITED + timedelta(days=30)
    early = model.p_attend(Seat("a@x.org", "invited", INVITED, None), INVITED, start)
    late = model.p_attend(Seat("a@x.org", "invited", INVITED, None), start - timedelta(1), start)
    assert (early.p, late.p) == (12 / 20, 2 / 10)
    assert late.explanation == (
        "students silent with under 5% of the time to the session left came 20% of the time; "
        "no record of this student when silent at that point; estimate 20%"
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),
            st.sampled_from(["accepted", "tentative", "declined", "delegated", "invited"]),
            st.booleans(),
            st.none() | st.floats(min_value=0, max_value=40),
        ),
        max_size=40,
    ),
    st.sampled_from(["accepted", "tentative", "declined", "delegated", "invited", "not_invited"]),
    st.integers(min_value=0, max_value=6),
    st.floats(min_value=0.01, max_value=60),
)
def test_probabilities_stay_in_0_1(
    rows: list[tuple[int, str, bool, float | None]],
    calendar: str,
    who: int,
    days_left: float,
) -> None:
    history = [
        past(f"s{n}@example.org", answer, came, days_ago=5 + i, answered_after=after)
        for i, (n, answer, came, after) in enumerate(rows)
    ]
    model = fit(history)
    for rate in model.rates.values():
        assert 0.0 <= rate.mean <= 1.0 and rate.strength > 0
    now = START - timedelta(days=days_left)
    estimate = model.p_attend(seat(f"s{who}@example.org", calendar), now, START)
    assert 0.0 <= estimate.p <= 1.0
    assert estimate.explanation


# --- bad input ------------------------------------------------------------------------


def test_a_past_session_is_refused_with_a_message() -> None:
    model = fit(organisation())
    for start in (NOW, NOW - timedelta(hours=1)):
        with pytest.raises(ForecastError, match="upcoming sessions; record attendance"):
            model.p_attend(seat(), NOW, start)
        with pytest.raises(ForecastError, match="started at"):
            forecast_session("s", start, 12, [seat()], model, NOW)
    assert issubclass(ForecastError, ValueError)


def test_an_unknown_calendar_status_is_refused() -> None:
    with pytest.raises(ForecastError, match="unknown calendar status 'maybe'"):
        fit([]).p_attend(seat(calendar="maybe"), NOW, START)


# --- waitlist advice ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(probability, max_size=15),
    st.lists(probability, max_size=8),
    st.integers(min_value=0, max_value=15),
    probability,
)
def test_waitlist_count_respects_the_risk(
    seated: list[float], waiting: list[float], capacity: int, risk: float
) -> None:
    invite = waitlist_invitations(seated, waiting, capacity, risk)
    assert 0 <= invite <= len(waiting)
    if invite:
        assert turnout(seated + waiting[:invite], capacity).p_over_capacity <= risk + 1e-12
    if invite < len(waiting):
        assert turnout(seated + waiting[: invite + 1], capacity).p_over_capacity > risk + 1e-12


def test_waitlist_example_of_the_issue() -> None:
    seated = [0.95] * 4 + [0.8] * 4 + [0.6] * 4  # 12 seats, 9.4 expected
    invite = waitlist_invitations(seated, [0.5] * 5, 12, 0.1)
    assert invite == 2
    assert invitation_reason(turnout(seated, 12), 12, invite, 0.1) == (
        "expected turnout 9.4 of 12 seats (80%: 8–11); "
        "inviting 2 from the waitlist keeps the chance of overbooking under 10%"
    )
    assert turnout(seated + [0.5] * 2, 12).p_over_capacity == pytest.approx(0.0743, abs=1e-4)
    assert turnout(seated + [0.5] * 3, 12).p_over_capacity == pytest.approx(0.1568, abs=1e-4)
    assert waitlist_invitations([1.0] * 12, [0.5], 12, 0.1) == 0  # full for sure
    with pytest.raises(ValueError, match="max_overbook_risk"):
        waitlist_invitations([], [], 1, 1.5)


def test_invitation_reason() -> None:
    seated = Turnout(expected=9.4, low=8, high=11, p_over_capacity=0.0)
    assert invitation_reason(seated, 12, 2, 0.1) == (
        "expected turnout 9.4 of 12 seats (80%: 8–11); "
        "inviting 2 from the waitlist keeps the chance of overbooking under 10%"
    )
    assert invitation_reason(seated, 12, 0, 0.05).endswith(
        "inviting from the waitlist would put the chance of overbooking over 5%"
    )


# --- report forecast --json -----------------------------------------------------------


def test_forecast_session_entry() -> None:
    model = fit(organisation())
    seats = [seat("b@example.org"), seat("a@example.org", "invited"), seat("c@x.org", "declined")]
    entry = forecast_session("first-aid-03", START, 2, seats, model, NOW)
    assert list(entry) == [
        "session",
        "start",
        "capacity",
        "enrolled",
        "expected",
        "low",
        "high",
        "p_over_capacity",
        "students",
    ]
    assert entry["start"] == "2025-03-06T09:00:00+00:00"
    assert (entry["capacity"], entry["enrolled"]) == (2, 3)
    assert [s["email"] for s in entry["students"]] == ["c@x.org", "a@example.org", "b@example.org"]
    assert entry["students"][0] == {"email": "c@x.org", "calendar": "declined", "p_attend": 0.2}
    chances = [model.p_attend(s, NOW, START).p for s in seats]
    expected = turnout(chances, 2)
    assert entry["expected"] == round(expected.expected, 2)
    assert (entry["low"], entry["high"]) == (expected.low, expected.high)
    assert entry["p_over_capacity"] == round(expected.p_over_capacity, 3)
    assert all(s["p_attend"] == round(s["p_attend"], 3) for s in entry["students"])


def test_forecast_of_an_empty_session() -> None:
    entry = forecast_session("empty", START, None, [], fit([]), NOW)
    assert entry["enrolled"] == 0 and entry["students"] == []
    assert (entry["expected"], entry["low"], entry["high"], entry["p_over_capacity"]) == (
        0.0,
        0,
        0,
        0.0,
    )


def test_model_is_plain_data() -> None:
    model = fit(organisation())
    assert isinstance(model, Model)
    assert model.past_seats == len(organisation())


def test_a_risk_of_one_invites_everyone_despite_rounding() -> None:
    # Found by Hypothesis: the chance of overbooking summed to 1.0000000000000002.
    assert waitlist_invitations([], [1.0, 0.35705815024768, 0.35705815024768], 0, 1.0) == 3
