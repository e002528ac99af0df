"""Login-checking proxies for tests, in front of a real server.

:class:`LoginProxy` is what they share: check the client's Authorization, answer 401
with a challenge, or relay the request upstream with the upstream's own login instead.
:class:`AuthProxy` demands a bearer token or HTTP Digest and logs in to Radicale with
Basic credentials: Radicale can do neither a bearer token nor Digest, and this proxy
stands in for the servers that do (Google's CalDAV wants an OAuth 2.0 bearer token;
several servers offer Digest). It counts what it refused. The Xandikos proxy of
tests/scheduling_servers.py is the other one. Both listen on 127.0.0.1 and a port the
kernel picks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import secrets
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from tmcaldav.localhost import HOST as _HOST
from tmcaldav.localhost import BodyHandler, LocalServer, ThreadedHTTPServer, relay, reply

#: Headers that say who the client is: a proxy never passes the client's own on.
_LOGIN_HEADERS = ("authorization", "x-remote-user")


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


class LoginProxy(LocalServer):
    """A proxy that relays only requests whose Authorization header :meth:`login` accepts,
    with the headers it returns (the upstream's login) instead of the client's."""

    def __init__(self, name: str) -> None:
        """Prepare (not start) a proxy; `name` names its thread."""
        self._name = name
        self._http: ThreadedHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        assert self._http is not None, "start the proxy first"
        return self._http.port

    @property
    def url(self) -> str:
        """The proxy's root URL."""
        return f"http://{_HOST}:{self.port}/"

    def login(self, authorization: str | None, method: str) -> Mapping[str, str] | None:
        """The headers that log the request in upstream, or None to refuse it."""
        raise NotImplementedError

    def challenge(self) -> str:
        """The WWW-Authenticate header of a 401."""
        raise NotImplementedError

    def upstream(self) -> http.client.HTTPConnection:
        """A new connection to the server behind the proxy."""
        raise NotImplementedError

    def start(self) -> None:
        """Listen on a free port."""
        proxy = self

        class Handler(BodyHandler):
            def answer(self, body: bytes) -> None:
                upstream_login = proxy.login(self.headers.get("Authorization"), self.command)
                if upstream_login is None:
                    headers = {"WWW-Authenticate": proxy.challenge(), "Content-Type": "text/plain"}
                    reply(self, 401, headers, b"login required\n")
                    return
                sent = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _LOGIN_HEADERS
                }
                relay(self, proxy.upstream(), body, {**sent, **upstream_login})

        self._http = ThreadedHTTPServer(Handler, self._name)
        self._http.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._http is not None:
            self._http.stop()
            self._http = None


class AuthProxy(LoginProxy):
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
        super().__init__(f"tmcaldav-{scheme}-proxy")
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

    def login(self, authorization: str | None, method: str) -> Mapping[str, str] | None:
        """Radicale's Basic login when :meth:`allowed`; counts what passes and what not."""
        self.authorizations.append(authorization or "")
        allowed = self.allowed(authorization, method)
        with self._lock:
            if not allowed:
                self.refused += 1
                return None
            self.passed += 1
        return {"Authorization": self._upstream_auth}

    def upstream(self) -> http.client.HTTPConnection:
        """A connection to Radicale."""
        return http.client.HTTPConnection(*self._upstream, timeout=30)


def start_auth_proxy(
    upstream: str, upstream_user: str, upstream_password: str, **options: str
) -> Iterator[AuthProxy]:
    """A started proxy for a fixture: yields it, stops it afterwards."""
    with AuthProxy(upstream, upstream_user, upstream_password, **options) as proxy:
        yield proxy
