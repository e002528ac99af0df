"""The recorded client replies (tests/data/imip) turned into the other iTIP methods a
student's mail program sends: REFRESH (send me the invitation again) and COUNTER
(I propose another time)."""

from __future__ import annotations

from tests.imip_support import reply_bytes


def as_method(name: str, method: str, replace: dict[str, str] | None = None) -> bytes:
    """Reply file `name` with its method (in the calendar and in the part's Content-Type)
    changed from REPLY to `method`, and the other `replace`ments made."""
    methods = {"METHOD:REPLY": f"METHOD:{method}", "method=REPLY": f"method={method}"}
    return reply_bytes(name, {**methods, **(replace or {})})


def next_day_counter() -> bytes:
    """Thunderbird's tentative reply as a COUNTER that proposes the next day, same hours."""
    return as_method(
        "thunderbird_tentative.eml",
        "COUNTER",
        {
            "Berlin:20261201T090000": "Berlin:20261202T090000",
            "Berlin:20261201T170000": "Berlin:20261202T170000",
        },
    )
