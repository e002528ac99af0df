"""Who is asking: login cookies, bearer tokens, a trusted proxy's header; CSRF. (The
slow-down after failed logins is in web/throttle.py, shared through the store.)

A browser logs in with a password and then carries a signed, HttpOnly, SameSite=Lax
cookie (Secure when `base_url` is https) naming the user; every state-changing
request from a browser must also carry the CSRF token kept in that cookie. Scripts
send `Authorization: Bearer TOKEN` instead (no cookie, so no CSRF). Behind a single
sign-on proxy, `trusted_user_header` names the user, believed only when the request
comes from an address in `trusted_proxies`. Every request looks the user up again, so
`tmcaldav user remove` ends their logins at once.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from tmcaldav.config import WebConfig
from tmcaldav.errors import UsageError

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SecretFileError(UsageError):
    """The cookie key file cannot be read or created safely."""


def load_secret(path: Path) -> str:
    """The cookie signing key: read it, or create it (mode 600) when it is missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise SecretFileError(
            f"cannot create the web secret {path} ({e.strerror}); "
            "set [web] secret_file to a writable place, e.g. /var/lib/tmcaldav/web.secret"
        ) from e
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretFileError(
                f"the web secret {path} is readable by group or others "
                f"(mode {stat.filemode(mode)}); run: chmod 600 {path}"
            )
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise SecretFileError(f"cannot read the web secret {path}: {e.strerror}") from e
    if len(secret) < 32:
        raise SecretFileError(
            f"the web secret {path} is too short (at least 32 characters); "
            "delete it and a new one is made"
        )
    return secret


def new_csrf_token() -> str:
    """A fresh CSRF token for a browser session."""
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """True when the request carries the session's CSRF token."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class Proxies:
    """The reverse proxies whose user header and X-Forwarded-For are believed."""

    def __init__(self, config: WebConfig):
        self.header = (config.trusted_user_header or "").lower() or None
        self.networks = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]

    def trusted(self, peer: str | None) -> bool:
        """True when the TCP peer is one of the trusted proxies."""
        if peer is None or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The address a request came from: behind trusted proxies, the last hop of
        X-Forwarded-For that is not one of them."""
        if not self.trusted(peer) or not forwarded_for:
            return peer or "?"
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else (peer or "?")
