"""The web interface's ASGI application: routes, templates, static files, cookies,
security headers, and the change feed that keeps open pages live.

`create_app(App(...), secret=...)` builds it for `tmcaldav web`, the demo and the tests;
it uses only the App's services, like every other front end.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tmcaldav.app import App
from tmcaldav.domain import ANSWERS, ICONS
from tmcaldav.links import link_key
from tmcaldav.web import answers, api, pages
from tmcaldav.web.actions import Actions
from tmcaldav.web.auth import Proxies
from tmcaldav.web.feed import ChangeFeed
from tmcaldav.web.http import Web
from tmcaldav.web.present import (
    CALENDAR_LABELS,
    SOURCES,
    STATUS_LABELS,
    bar_chart,
    ident,
    roster,
    tooltip,
    when,
)
from tmcaldav.web.throttle import LinkThrottle, LoginThrottle

HERE = Path(__file__).resolve().parent
COOKIE = "tmcaldav_session"
# A login lasts this long after it was made (or after the last action that changed the
# browser session, which signs the cookie anew).
LOGIN_SECONDS = 12 * 3600

# No inline script or style anywhere: the CSP says so, and the pages keep to it.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Adds the security headers to every response (pages, API, static files)."""

    def __init__(self, app: ASGIApp, *, https: bool):
        self.app = app
        self.headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if https:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += self.headers
                if not static:
                    # Pages and API answers carry personal data: never cached.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def templates(base_path: str) -> Jinja2Templates:
    """The Jinja2 environment: autoescaping on, strict undefined, the page helpers."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["q"] = lambda value: quote(str(value), safe="@")
    env.filters["ident"] = ident
    env.globals.update(
        ICONS=ICONS,
        CALENDAR_LABELS=CALENDAR_LABELS,
        STATUS_LABELS=STATUS_LABELS,
        SOURCES=SOURCES,
        tooltip=tooltip,
        bar_chart=bar_chart,
        roster=roster,
        base_path=base_path,
        ANSWERS=ANSWERS,
        static_version=_static_version(),
    )
    return Jinja2Templates(env=env)


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _web(app: App, secret: str, feed_interval: float) -> tuple[Web, bool]:
    config = app.config.web
    base = urlsplit(config.base_url) if config.base_url else None
    base_path = base.path.rstrip("/") if base else ""
    https = base is not None and base.scheme == "https"
    web = Web(
        app=app,
        actions=Actions(app),
        feed=ChangeFeed(app.store, feed_interval),
        templates=templates(base_path),
        proxies=Proxies(config),
        throttle=LoginThrottle(app.store),
        link_throttle=LinkThrottle(app.store),
        base_path=base_path,
        secure=https,
        link_key=link_key(secret),
    )
    return web, https


def create_app(app: App, *, secret: str, feed_interval: float = 0.2) -> Starlette:
    """The web interface on `app`'s services; `secret` signs the login cookies (and,
    derived from it, the answer links)."""
    web, https = _web(app, secret, feed_interval)
    base_path = web.base_path

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await web.feed.start()
        try:
            yield
        finally:
            await web.feed.stop()

    asgi = Starlette(
        routes=[
            *pages.ROUTES,
            *api.ROUTES,
            *answers.ROUTES,
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders, https=https),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie=COOKIE,
                max_age=LOGIN_SECONDS,
                path=base_path or "/",
                same_site="lax",
                https_only=https,
            ),
        ],
        exception_handlers={404: pages.not_found},
        lifespan=lifespan,
    )
    asgi.state.web = web
    return asgi


async def _plain_not_found(request: object, exc: Exception) -> Response:
    return PlainTextResponse("Not found", 404)


def create_public_app(app: App, *, secret: str, web: Web | None = None) -> Starlette:
    """Only what students open: the answer pages and the static files, no login, no
    cookies, no administrators' pages (for `[web] public_listen`)."""
    if web is None:
        web, https = _web(app, secret, 0.2)
    else:
        https = web.secure
    asgi = Starlette(
        routes=[
            *answers.ROUTES,
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders, https=https)],
        exception_handlers={404: _plain_not_found},
    )
    asgi.state.web = web
    return asgi


class ByListener:
    """One ASGI app for two listeners: requests that reach `public_port` get only the
    public app; everything else (and the lifespan) goes to the full interface."""

    def __init__(self, full: ASGIApp, public: ASGIApp, public_port: int):
        self.full = full
        self.public = public
        self.public_port = public_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server is not None and server[1] == self.public_port:
            await self.public(scope, receive, send)
        else:
            await self.full(scope, receive, send)


def create_both(app: App, *, secret: str, public_port: int) -> ByListener:
    """The full interface and, on `public_port`, only the public pages (sharing state)."""
    full = create_app(app, secret=secret)
    public = create_public_app(app, secret=secret, web=full.state.web)
    return ByListener(full, public, public_port)
