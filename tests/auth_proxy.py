"""A login-checking proxy for tests: demands a bearer token or HTTP Digest, then forwards to
a real server (Radicale) with that server's own Basic credentials.

Radicale can do neither a bearer token nor Digest; this proxy stands in for the servers
that do (Google's CalDAV wants an OAuth 2.0 bearer token; several servers offer Digest).
It listens on 127.0.0.1 and a port the kernel picks, and counts what it refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import http.server
import secrets
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from tests.relay import HOP_BY_HOP as _HOP_BY_HOP
from tests.relay import relay, reply

_HOST = "127.0.0.1"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # MD5 is what Digest (RFC 7616) uses


def _digest_fields(header: str) -> dict[str, str]:
    """The name=value pairs of a Digest Authorization header (values may be quoted)."""
    fields: dict[str, str] = {}
    rest = header.strip()[len("digest") :].strip()
    while rest:
        name, _, rest = rest.partition("=")
        rest = rest.lstrip()
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('"')
        else:
            value, _, rest = rest.partition(",")
            value = value.strip()
        fields[name.strip().lower()] = value
        rest = rest.lstrip(", ")
    return fields


class AuthProxy:
    """Checks ``Authorization`` (``scheme`` "bearer" or "digest"), then forwards upstream.

    Bearer: only ``token`` is accepted; :meth:`rotate` replaces it (the old one is then
    refused with 401, as an expired OAuth token is). Digest: ``username``/``password``
    with MD5 and ``qop=auth`` (RFC 7616), nonces issued by this proxy only.
    """

    def __init__(
        self,
        upstream: str,
        upstream_user: str,
        upstream_password: str,
        *,
        scheme: str,
        username: str = "organizer",
        password: str = "",
    ) -> None:
        """Prepare (not start) a proxy in front of ``upstream`` (an http URL)."""
        if scheme not in ("bearer", "digest"):
            raise ValueError(f"unknown scheme {scheme!r}")
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or _HOST, parts.port or 80)
        basic = f"{upstream_user}:{upstream_password}".encode()
        self._upstream_auth = "Basic " + base64.b64encode(basic).decode("ascii")
        self.scheme = scheme
        self.username = username
        self.password = password
        self.realm = f"tmcaldav-test-{secrets.token_hex(4)}"
        self.token = secrets.token_urlsafe(24)
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        #: Requests refused with 401, and requests let through.
        self.refused = 0
        self.passed = 0
        #: Every Authorization header seen (to check what a client sends).
        self.authorizations: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The proxy's root URL."""
        assert self._server is not None, "start the proxy first"
        return f"http://{_HOST}:{self._server.server_address[1]}/"

    def rotate(self) -> str:
        """Invalidate the bearer token and return the new one (what a token service issues)."""
        with self._lock:
            self.token = secrets.token_urlsafe(24)
            return self.token

    def allowed(self, authorization: str | None, method: str) -> bool:
        """Does this Authorization header log in (for a request with ``method``)?"""
        if not authorization:
            return False
        if self.scheme == "bearer":
            scheme, _, token = authorization.partition(" ")
            with self._lock:
                return scheme.lower() == "bearer" and hmac.compare_digest(token, self.token)
        if not authorization.lower().startswith("digest "):
            return False
        fields = _digest_fields(authorization)
        with self._lock:
            known = fields.get("nonce") in self._nonces
        if (
            not known
            or fields.get("username") != self.username
            or fields.get("realm") != self.realm
        ):
            return False
        ha1 = _md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = _md5(f"{method}:{fields.get('uri', '')}")
        expected = _md5(
            ":".join(
                [ha1, fields["nonce"], fields.get("nc", ""), fields.get("cnonce", ""), "auth", ha2]
            )
        )
        return fields.get("qop") == "auth" and hmac.compare_digest(
            expected, fields.get("response", "")
        )

    def challenge(self) -> str:
        """The WWW-Authenticate header of a 401."""
        if self.scheme == "bearer":
            return f'Bearer realm="{self.realm}", error="invalid_token"'
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces.add(nonce)
        return f'Digest realm="{self.realm}", qop="auth", algorithm=MD5, nonce="{nonce}"'

    def start(self) -> None:
        """Listen on a free port."""
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorization = self.headers.get("Authorization")
                proxy.authorizations.append(authorization or "")
                if not proxy.allowed(authorization, self.command):
                    with proxy._lock:
                        proxy.refused += 1
                    self._reply(
                        401,
                        {"WWW-Authenticate": proxy.challenge(), "Content-Type": "text/plain"},
                        b"login required\n",
                    )
                    return
                with proxy._lock:
                    proxy.passed += 1
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "authorization"
                }
                headers["Authorization"] = proxy._upstream_auth
                relay(self, http.client.HTTPConnection(*proxy._upstream, timeout=30), body, headers)

            def _reply(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
                reply(self, status, headers, body)

            do_GET = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = do_POST = _handle
            do_PROPFIND = do_PROPPATCH = do_REPORT = do_MKCALENDAR = do_MKCOL = _handle

        self._server = http.server.ThreadingHTTPServer((_HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tmcaldav-{self.scheme}-proxy",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def start_auth_proxy(
    upstream: str, upstream_user: str, upstream_password: str, **options: str
) -> Iterator[AuthProxy]:
    """A started proxy for a fixture: yields it, stops it afterwards."""
    proxy = AuthProxy(upstream, upstream_user, upstream_password, **options)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
