"""Waiting after failures: one backoff formula and one Retry-After reader for everyone.

The daemon backing off from a failing server, iMIP deliveries, auto-applied suggestions
and the webhook plugin all wait the same way: exponential from a base, capped, spread
by jitter so many processes do not retry in step, and never shorter than a server's
Retry-After (up to a day: a longer one is a misconfigured proxy, not believed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A Retry-After longer than this is not believed (a misconfigured proxy).
RETRY_AFTER_MAX = 24 * 3600.0


def backoff(
    failures: int,
    base: float,
    cap: float,
    *,
    jitter: float = 1.0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after `failures` failures in a row (pure).

    Exponential from `base`, capped at `cap`, with "equal jitter": `jitter` in [0, 1]
    places the wait in the upper half of that (1: the whole of it). A server's
    Retry-After is honoured when it asks for longer.
    """
    exponential = min(cap, base * 2.0 ** max(failures - 1, 0))
    delay = exponential * (0.5 + max(0.0, min(jitter, 1.0)) / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date).

    None when the header is missing or unreadable; a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
