"""The CalDAV adapter: the only package that talks to the calendar server.

It stores, reads and deletes events with ETag preconditions, reports what changed since
a sync token (RFC 6578) or a listing, and turns every failure into a typed error
(`errors`) whose message names the server and the user. Its public face is
`CalendarService`.
"""

from typing import TYPE_CHECKING, Any

# Every typed error is part of the adapter's face (``errors.__all__``).
from tmcaldav.caldav import errors
from tmcaldav.caldav.errors import *  # noqa: F403

if TYPE_CHECKING:
    from tmcaldav.caldav.service import (
        CalendarService,
        CalendarSettings,
        Changes,
        Fetched,
        StoredEvent,
        Unreadable,
        resource_name,
    )

__all__ = [
    "CalendarService",
    "CalendarSettings",
    "Changes",
    "Fetched",
    "StoredEvent",
    "Unreadable",
    "resource_name",
]
# The service pulls in the CalDAV client library (a fifth of a second): it is loaded on
# first use, so that reading the config (which checks server profile names) or the
# errors stays cheap for every command.
_SERVICE_NAMES = frozenset(__all__)
__all__ += errors.__all__


def __getattr__(name: str) -> Any:
    if name in _SERVICE_NAMES:
        from tmcaldav.caldav import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
