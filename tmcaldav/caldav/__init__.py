"""The CalDAV adapter: the only package that talks to the calendar server.

It stores, reads and deletes events with ETag preconditions, reports what changed since
a sync token (RFC 6578) or a listing, and turns every failure into a typed error
(`errors`) whose message names the server and the user. Its public face is
`CalendarService`.
"""

from typing import TYPE_CHECKING, Any

from tmcaldav.caldav.errors import (
    AuthFailed,
    CalendarError,
    InvalidSyncToken,
    NotFound,
    OrganizerChangeRefused,
    PreconditionFailed,
    ServerError,
    Unreachable,
)

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

# The service pulls in the CalDAV client library (a fifth of a second): it is loaded on
# first use, so that reading the config (which checks server profile names) or the
# errors stays cheap for every command.
_SERVICE_NAMES = frozenset(
    {
        "CalendarService",
        "CalendarSettings",
        "Changes",
        "Fetched",
        "StoredEvent",
        "Unreadable",
        "resource_name",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SERVICE_NAMES:
        from tmcaldav.caldav import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AuthFailed",
    "CalendarError",
    "CalendarService",
    "CalendarSettings",
    "Changes",
    "Fetched",
    "InvalidSyncToken",
    "NotFound",
    "OrganizerChangeRefused",
    "PreconditionFailed",
    "ServerError",
    "StoredEvent",
    "Unreachable",
    "Unreadable",
    "resource_name",
]
