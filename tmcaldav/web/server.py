"""`tmcaldav web`: serve the web interface with uvicorn, in the foreground.

The socket is bound here (so "address in use" is one clear error, not a traceback),
the cookie key is read or created before the first request, and systemd hears READY=1
once uvicorn accepts connections (Type=notify). Proxy headers are not taken from
anyone by uvicorn: `[web] trusted_proxies` decides whom to believe (web/auth.py).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from tmcaldav.app import App
from tmcaldav.config import parse_listen
from tmcaldav.errors import UsageError

log = logging.getLogger(__name__)


class ListenError(UsageError):
    """The address to listen on is taken or not ours."""


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for host:port."""
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise ListenError(f"[web] listen: {e}") from e
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said out loud: asyncio sets TCP_NODELAY on accepted connections only
    # for such sockets, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ListenError(
            f"cannot listen on {listen}: {e.strerror}; is another `tmcaldav web` running? "
            "Choose another address with [web] listen or --listen"
        ) from e
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def build(app: App, public_port: int | None = None) -> Any:
    """The ASGI app for `app`'s config: the store checked, the cookie key in place;
    with `public_port`, requests to that port see only the students' answer pages."""
    from tmcaldav.web.app import create_app, create_both
    from tmcaldav.web.auth import load_secret

    app.store  # noqa: B018 - a store without the current schema stops us here
    secret = load_secret(app.config.web.secret_path(app.config.path))
    if public_port is not None:
        return create_both(app, secret=secret, public_port=public_port)
    return create_app(app, secret=secret)


def serve(app: App, *, listen: str | None = None) -> None:
    """Run until SIGTERM/SIGINT."""
    import uvicorn

    from tmcaldav.systemd import Notifier

    address = listen or app.config.web.listen
    public = app.config.web.public_listen
    sock = bind(address)
    sockets = [sock]
    if public and parse_listen(public)[1] == parse_listen(address)[1]:
        sock.close()
        raise ListenError(
            f"[web] public_listen {public} uses the same port as {address}; "
            "give the students' pages a port of their own"
        )
    if public:
        # One server, two sockets: the public one answers only /a/... and /static/.
        try:
            sockets.append(bind(public))
        except ListenError:
            sock.close()
            raise
    try:
        asgi = build(app, sockets[1].getsockname()[1] if public else None)
    except BaseException:
        for s in sockets:
            s.close()
        raise

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                notifier.ready(f"serving on {address}")
                log.info("the web interface is at http://%s/", address)
                if public:
                    log.info("the students' answer pages are at http://%s/a/...", public)

    notifier = Notifier()
    config = uvicorn.Config(
        asgi,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        # Open live pages would hold a stop up; they reconnect to the next process.
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    try:
        Server(config).run(sockets=sockets)
    finally:
        notifier.stopping()
        notifier.close()
        for s in sockets:
            s.close()
