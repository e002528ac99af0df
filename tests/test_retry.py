"""The one backoff formula and Retry-After reader (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmcaldav.retry import RETRY_AFTER_MAX, backoff, parse_retry_after


def test_backoff() -> None:
    assert backoff(1, 60, 900, jitter=0.0) == 30
    assert backoff(1, 60, 900, jitter=0.999) == pytest.approx(60, abs=0.1)
    assert backoff(3, 60, 900, jitter=1.0) == 240
    assert backoff(10, 60, 900, jitter=1.0) == 900  # capped
    assert backoff(1, 60, 900, jitter=0.0, retry_after=600.0) == 600  # Retry-After honoured
    assert backoff(5, 60, 900, jitter=0.0, retry_after=1.0) == 450  # a short one does not shorten
    assert backoff(1, 60, 900, jitter=0.0, retry_after=10 * 86400.0) == 86400  # bounded


@given(
    failures=st.integers(min_value=0, max_value=200),
    jitter=st.floats(min_value=0, max_value=1),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e9),
)
def test_backoff_is_bounded(failures: int, jitter: float, retry_after: float | None) -> None:
    delay = backoff(failures, 5.0, 300.0, jitter=jitter, retry_after=retry_after)
    assert 2.5 <= delay <= max(300.0, min(retry_after or 0.0, RETRY_AFTER_MAX))


def test_parse_retry_after() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Tue, 01 Dec 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
