"""SCHEDULE-STATUS (RFC 6638 §3.2.9, codes of RFC 5546 §3.6) in the product's words (pure).

A scheduling server stamps each ATTENDEE of the organizer's copy with what it did with
the invitation: ``1.2`` delivered (Cyrus), ``2.0;Success`` (Xandikos), ``1.1`` handed to
mail, ``3.7;Invalid calendar user``, ``5.x`` failed. No stamp at all right after a PUT
that should have scheduled means the server scheduled nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from tmcaldav.domain import ServerDelivery

#: The meaning of each code a server may stamp, for people.
MEANINGS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1.0": "pending: the server will deliver it later",
        "1.1": "sent: handed to another system (e-mail) for delivery",
        "1.2": "delivered to the student's calendar",
        "2.0": "delivered",
        "3.7": "invalid calendar user: the server knows no calendar user with this address",
        "3.8": "no scheduling permission for this calendar user",
        "5.1": "not delivered: the student's calendar service could not be reached",
        "5.2": "invalid calendar service: the server has no way to reach this address",
        "5.3": "no scheduling support for this calendar user",
    }
)
#: Said when a PUT that should have scheduled left no SCHEDULE-STATUS at all.
NOTHING_SCHEDULED: Final = (
    "no SCHEDULE-STATUS: the server scheduled nothing for this student; check that "
    "[scheduling] organizer_email is one of the login's calendar addresses (tmcaldav doctor)"
)

_CODE = re.compile(r"\s*(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class ScheduleResult:
    """What the server did with one invitation.

    ``schedule_status`` is the parameter exactly as stored (None: absent); ``code`` the
    status code that decided (``3.7``); ``meaning`` the code in words.
    """

    delivery: ServerDelivery
    schedule_status: str | None
    code: str | None
    meaning: str

    @property
    def delivered(self) -> bool:
        """True unless the invitation failed or was never scheduled."""
        return self.delivery != ServerDelivery.NOT_DELIVERED


def _meaning(code: str) -> str:
    if code in MEANINGS:
        return MEANINGS[code]
    family = code.split(".", 1)[0]
    return {
        "1": "in progress",
        "2": "delivered",
        "3": "the server refused the invitation",
        "5": "the invitation could not be delivered",
    }.get(family, "an unknown status")


def _delivery(code: str) -> ServerDelivery:
    if code == "1.2" or code.startswith("2."):
        return ServerDelivery.DELIVERED
    if code.startswith("1."):
        return ServerDelivery.SENT
    return ServerDelivery.NOT_DELIVERED


def read_schedule_status(raw: str | None) -> ScheduleResult:
    """Classify a SCHEDULE-STATUS parameter as stored (``"2.0;Success"``, ``"1.2"``, None).

    Several comma-separated codes (delivered by more than one means) count as delivered
    when any of them does. An absent or unreadable parameter is ``not_delivered``: call
    this only where a delivery was expected.
    """
    if raw is None or not raw.strip():
        return ScheduleResult(ServerDelivery.NOT_DELIVERED, None, None, NOTHING_SCHEDULED)
    codes = []
    for part in raw.split(","):
        match = _CODE.match(part)
        if match is not None:
            codes.append(match.group(1))
    if not codes:
        return ScheduleResult(
            ServerDelivery.NOT_DELIVERED, raw, None, f"an unreadable SCHEDULE-STATUS {raw!r}"
        )
    rank = {ServerDelivery.DELIVERED: 0, ServerDelivery.SENT: 1, ServerDelivery.NOT_DELIVERED: 2}
    best = min(codes, key=lambda code: rank[_delivery(code)])
    return ScheduleResult(_delivery(best), raw, best, _meaning(best))
