"""Login methods for the CalDAV server: Basic, Digest, and a bearer token that renews.

Basic and Digest are the HTTP library's own. A bearer token (OAuth 2.0, as Google's
CalDAV needs) comes from a command the administrator names (``token_command``); when the
server answers 401 the token has expired or been revoked, so the command is run once
more and the request sent again with the new token. The token never reaches a log line
or an error message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from caldav.lib.http_sync import AuthBase
from caldav.lib.http_sync import requests as http

log = logging.getLogger(__name__)

#: The login methods `[caldav] auth` accepts.
AUTH_METHODS = ("basic", "digest", "bearer")


class RenewingBearerAuth(AuthBase):
    """``Authorization: Bearer TOKEN``, with the token fetched again after a 401.

    ``fetch_token`` returns a fresh token (it runs the administrator's command). It is
    called on the first request and again at most once per request that is answered
    401; ``fetches`` counts the calls, for tests and diagnostics.
    """

    def __init__(self, fetch_token: Callable[[], str]) -> None:
        """Keep the token source; the first token is fetched on the first request."""
        self._fetch_token = fetch_token
        self._token: str | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return "RenewingBearerAuth(token=<hidden>)"

    def _current(self, stale: str | None = None) -> str:
        with self._lock:
            # Another request may have renewed it already while we waited.
            if self._token is None or self._token == stale:
                self._token = self._fetch_token()
                self.fetches += 1
            return self._token

    def __call__(self, request: Any) -> Any:
        token = self._current()
        request.headers["Authorization"] = f"Bearer {token}"
        request.register_hook("response", self._renew_on_401)
        return request

    def _renew_on_401(self, response: Any, **kwargs: Any) -> Any:
        if response.status_code != 401 or getattr(response.request, "_tmcaldav_renewed", False):
            return response
        sent = str(response.request.headers.get("Authorization", ""))
        stale = sent.removeprefix("Bearer ") if sent.startswith("Bearer ") else None
        log.info("the CalDAV server refused the bearer token (401); fetching a new one")
        token = self._current(stale)
        # Release the refused answer's connection so the retry may reuse it.
        _ = response.content
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry._tmcaldav_renewed = True  # one renewal per request: a new token that is
        # refused too is a wrong command or account, not an expired token
        answer = response.connection.send(retry, **kwargs)
        answer.history.append(response)
        answer.request = retry
        return answer


def build_auth(
    method: str, username: str, password: str, fetch_token: Callable[[], str] | None
) -> Any:
    """The HTTP library's auth object for ``method`` (one of :data:`AUTH_METHODS`)."""
    if method == "basic":
        return http.auth.HTTPBasicAuth(username, password)
    if method == "digest":
        return http.auth.HTTPDigestAuth(username, password)
    if method == "bearer":
        if fetch_token is None:
            raise ValueError("bearer auth needs a token source (token_command)")
        return RenewingBearerAuth(fetch_token)
    raise ValueError(f"unknown auth method {method!r} (known: {', '.join(AUTH_METHODS)})")
