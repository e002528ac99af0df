"""The CalDAV adapter: the only package that talks to the calendar server.

It stores, reads and deletes events with ETag preconditions, reports what changed since
a sync token (RFC 6578) or a listing, and turns every failure into a typed error
(`errors`) whose message names the server and the user. Its public face is
`CalendarService`.
"""

from tmcaldav.caldav.errors import (
    AuthFailed,
    CalendarError,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    ServerError,
    Unreachable,
)
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
    "AuthFailed",
    "CalendarError",
    "CalendarService",
    "CalendarSettings",
    "Changes",
    "Fetched",
    "InvalidSyncToken",
    "NotFound",
    "PreconditionFailed",
    "ServerError",
    "StoredEvent",
    "Unreachable",
    "Unreadable",
    "resource_name",
]
