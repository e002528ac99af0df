"""Plain words for people: counts with the right plural, and durations.

Every message an administrator reads goes through these, so none says "1 student(s)".
"""

from __future__ import annotations

from datetime import timedelta


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """"1 session", "2 sessions" ("1 reply", "3 replies" with `nouns`)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def duration(span: timedelta) -> str:
    """A length of time as people say it: "40 seconds", "3 minutes", "2 hours 5 minutes"."""
    seconds = int(span.total_seconds())
    if seconds < 60:
        return plural(seconds, "second")
    minutes = seconds // 60
    if minutes < 60:
        return plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return plural(hours, "hour") + (f" {plural(minutes, 'minute')}" if minutes else "")
    return plural(hours // 24, "day")
