"""The CalDAV adapter's typed errors; each message names the server and the user, never
the password."""

from __future__ import annotations

from tmcaldav.errors import TmcaldavError


class CalendarError(TmcaldavError):
    """Something went wrong talking to the CalDAV server.

    ``str()`` says what is wrong and what to do, and names the URL and the user but never
    the password. ``url`` and ``user`` are kept as attributes for structured logging.
    """

    def __init__(self, message: str, *, url: str | None = None, user: str | None = None):
        if user and repr(user) not in message and f"user {user}" not in message:
            # Every message names who tried, not only where: a wrong account is a
            # common cause, and the administrator must see which one was used.
            message = f"{message} [user {user}]"
        super().__init__(message)
        self.url = url
        self.user = user


class AuthFailed(CalendarError):
    """The server refused the login (401) or the access (403)."""


class NotFound(CalendarError):
    """The event (or calendar) does not exist on the server."""


class PreconditionFailed(CalendarError):
    """A conditional write was refused: the ETag no longer matches, the event already
    exists, or (Radicale) the item is too large. Re-read, merge, and try again."""


class ServerError(CalendarError):
    """The server failed (5xx), is rate-limiting (429/503) or answered nonsense.

    ``status`` is the HTTP status (None for an unreadable answer); ``retry_after`` is the
    server's Retry-After in seconds, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        user: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, url=url, user=user)
        self.status = status
        self.retry_after = retry_after


class OrganizerChangeRefused(CalendarError):
    """The server refuses to change the ORGANIZER of an event it holds (RFC 6638
    ``allowed-organizer-scheduling-object-change``; Cyrus): organizer_email changed since
    the event was published."""


class Unreachable(CalendarError):
    """No answer: connection refused, DNS failure, TLS failure or timeout."""


class InvalidSyncToken(CalendarError):
    """The server no longer knows the sync token: call ``changes_since(None)``."""


__all__ = [
    "AuthFailed",
    "CalendarError",
    "InvalidSyncToken",
    "NotFound",
    "OrganizerChangeRefused",
    "PreconditionFailed",
    "ServerError",
    "Unreachable",
]
