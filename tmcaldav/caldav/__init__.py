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
    OrganizerChangeRefused,
    PreconditionFailed,
    ServerError,
    Unreachable,
)
from tmcaldav.caldav.service import (
    CalendarService,
    CalendarSettings,
    Changes,
    StoredEvent,
    resource_name,
)

__all__ = [
    "AuthFailed",
    "CalendarError",
    "CalendarService",
    "CalendarSettings",
    "Changes",
    "InvalidSyncToken",
    "NotFound",
    "OrganizerChangeRefused",
    "PreconditionFailed",
    "ServerError",
    "StoredEvent",
    "Unreachable",
    "resource_name",
]
