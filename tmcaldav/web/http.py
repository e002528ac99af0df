"""What every page and API endpoint shares: the web state, who is calling, the guard
that checks login, role and CSRF, errors as HTTP statuses, and rendering.

A handler is written as `async def handler(call: Call) -> Response` and wrapped with
`guarded(...)`; the guard answers 401/303 to strangers, 403 to a viewer who tries to
act and to a browser form without its CSRF token, and turns a domain error into the
status a client expects (400, 404, 409, 502, 503) with the error's own message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from tmcaldav.app import App
from tmcaldav.config import ConfigError, SecretError
from tmcaldav.errors import TmcaldavError, TryLater, UsageError
from tmcaldav.store import NotFoundError, StoreError
from tmcaldav.store.model import utcnow
from tmcaldav.web.actions import Actions, StaleSuggestion
from tmcaldav.web.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    Proxies,
    csrf_ok,
    new_csrf_token,
)
from tmcaldav.web.feed import ChangeFeed
from tmcaldav.web.throttle import LinkThrottle, LoginThrottle
from tmcaldav.web.users import (
    WebIdentity,
    note_token_use,
    token_use_is_old,
    user_by_id,
    user_by_token,
)

log = logging.getLogger(__name__)

# Bodies larger than this are refused (a form of notes and addresses is far smaller).
MAX_BODY = 1024 * 1024


@dataclass
class Web:
    """The web interface's services and settings, shared by every request."""

    app: App
    actions: Actions
    feed: ChangeFeed
    templates: Jinja2Templates
    proxies: Proxies
    # Failed logins and answers per link, counted in the store (shared by every node).
    throttle: LoginThrottle
    link_throttle: LinkThrottle
    base_path: str = ""
    secure: bool = False
    # The answer links' HMAC key (tmcaldav.links.link_key of the web secret).
    link_key: bytes = b""
    # Seconds between keep-alive comments on a live stream.
    keepalive: float = 15.0

    def url(self, path: str) -> str:
        """An absolute path under base_url's path."""
        return self.base_path + path


def web_of(request: Request) -> Web:
    """The Web of the app serving `request`."""
    found: Web = request.app.state.web
    return found


@dataclass
class Call:
    """One authenticated request to a handler."""

    request: Request
    web: Web
    user: WebIdentity
    # How the caller proved who they are: cookie, token or proxy.
    via: str
    form: FormData | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> App:
        """The App whose services act."""
        return self.web.app

    def param(self, name: str) -> str:
        """A path parameter."""
        value: str = self.request.path_params[name]
        return value

    def field(self, name: str, default: str = "") -> str:
        """One form field (the first, when repeated) as text."""
        if self.form is None:
            return default
        value = self.form.get(name, default)
        return value if isinstance(value, str) else default

    def fields(self, name: str) -> list[str]:
        """Every value of a repeated form field."""
        if self.form is None:
            return []
        return [v for v in self.form.getlist(name) if isinstance(v, str)]


def client_address(web: Web, request: Request) -> str:
    """The address the request came from (X-Forwarded-For only from trusted proxies)."""
    peer = request.client.host if request.client else None
    return web.proxies.client_address(peer, request.headers.get("x-forwarded-for"))


async def authenticate(web: Web, request: Request) -> tuple[WebIdentity, str] | None:
    """The caller and how they proved it, or None."""
    peer = request.client.host if request.client else None
    if web.proxies.header and web.proxies.trusted(peer):
        name = request.headers.get(web.proxies.header)
        if name:
            from tmcaldav.web.users import find_user, identity

            def by_name() -> WebIdentity | None:
                with web.app.store.scratch() as db:
                    user = find_user(db, name)
                    return identity(user) if user is not None else None

            found = await run_in_threadpool(by_name)
            return (found, "proxy") if found is not None else None
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():

        def by_token() -> WebIdentity | None:
            with web.app.store.scratch() as db:
                found = user_by_token(db, token.strip())
            if found is None:
                return None
            user, last_used_at = found
            now = utcnow()
            if token_use_is_old(last_used_at, now):
                try:
                    with web.app.store.transaction() as db:
                        note_token_use(db, token.strip(), now)
                except StoreError as e:  # a busy store does not refuse the caller
                    log.info("could not record the use of %s's API token: %s", user.name, e)
            return user

        user = await run_in_threadpool(by_token)
        return (user, "token") if user is not None else None
    user_id = request.session.get("uid")
    if isinstance(user_id, int):

        def by_id() -> WebIdentity | None:
            with web.app.store.scratch() as db:
                return user_by_id(db, user_id)

        found = await run_in_threadpool(by_id)
        if found is not None:
            return found, "cookie"
        request.session.pop("uid", None)  # removed meanwhile: the login ends
    return None


def csrf_token(request: Request) -> str:
    """The browser session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = new_csrf_token()
    return token


def status_for(error: Exception) -> int:
    """The HTTP status a client expects for a domain error."""
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, StaleSuggestion):
        return 409
    if isinstance(error, ConfigError | SecretError):
        return 503
    if isinstance(error, StoreError | TryLater):
        return 503
    from tmcaldav.caldav.errors import CalendarError
    from tmcaldav.publish import PublishError

    if isinstance(error, CalendarError | PublishError):
        return 502
    if isinstance(error, UsageError | TmcaldavError):
        return 400
    return 500


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An API error: {"error": message, "status": status}."""
    return JSONResponse({"error": message, "status": status}, status, headers=headers)


async def render(
    call_or_request: Call | Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    """A page from its template, with what every page shows (user, CSRF token, flash)."""
    if isinstance(call_or_request, Call):
        request, user = call_or_request.request, call_or_request.user
    else:
        request, user = call_or_request, None
    web = web_of(request)
    base = {
        "request": request,
        "user": user,
        "csrf": csrf_token(request),
        "flash": request.session.pop("flash", None),
        "u": web.url,
        "mode": web.app.config.scheduling.mode,
    }
    base.update(context)
    page = web.templates.get_template(template)
    html = await run_in_threadpool(page.render, base)
    return HTMLResponse(html, status)


def flash_and_go(call: Call, message: str, path: str) -> RedirectResponse:
    """Keep a message for the next page and go there (303: the browser GETs it)."""
    call.request.session["flash"] = message
    return RedirectResponse(call.web.url(path), 303)


def back_path(request: Request) -> str:
    """Where an error page links back to: the session the request was about."""
    key = request.path_params.get("key")
    return f"/sessions/{quote(key, safe='')}" if key else "/sessions"


Handler = Callable[[Call], Awaitable[Response]]


def guarded(*, act: bool = False, api: bool = False) -> Callable[[Handler], Any]:
    """Wrap a handler: login (cookie, bearer token or trusted proxy), the admin role for
    `act`, the CSRF token on every POST from a browser, and errors as statuses."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            web = web_of(request)
            caller = await authenticate(web, request)
            if caller is None:
                if api or request.url.path.endswith("/live"):
                    return json_error(
                        401,
                        "log in first: send Authorization: Bearer TOKEN "
                        "(tmcaldav user token NAME)",
                        {"WWW-Authenticate": 'Bearer realm="tmcaldav"'},
                    )
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(
                    web.url("/login") + "?next=" + quote(target, safe=""), 303
                )
            user, via = caller
            call = Call(request, web, user, via)
            if request.method == "POST":
                refused = await _read_post(call, api)
                if refused is not None:
                    return refused
                if act and not user.may_act:
                    return await _refuse(
                        call, api, 403, f"{user.name} is a viewer: viewers read, admins act"
                    )
            try:
                return await handler(call)
            except TmcaldavError as error:
                status = status_for(error)
                if status >= 500:
                    log.warning("%s %s: %s", request.method, request.url.path, error)
                return await _refuse(call, api, status, error.report())

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


async def _read_post(call: Call, api: bool) -> Response | None:
    """Read a POST's body; a refusal when it is too big, malformed or lacks CSRF."""
    request = call.request
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        return await _refuse(call, api, 413, "the request is too large")
    given: str | None = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        call.form = await request.form(max_files=0, max_fields=5000)
        token = call.form.get(CSRF_FIELD)
        given = token if isinstance(token, str) else given
    elif api:
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return json_error(400, "the body is not JSON")
            if not isinstance(body, dict):
                return json_error(400, "the body must be a JSON object")
            call.body = body
    if call.via != "token" and not csrf_ok(request.session.get("csrf"), given):
        # A browser's login cookie rides along on any site's forms; only our pages
        # know the token.
        return await _refuse(
            call,
            api,
            403,
            "this request did not come from a tmcaldav page (no valid CSRF token); "
            "reload the page and try again",
        )
    return None


async def _refuse(call: Call, api: bool, status: int, message: str) -> Response:
    if api:
        return json_error(status, message)
    return await render(
        call,
        "error.html",
        {"status": status, "message": message, "back": back_path(call.request)},
        status,
    )
