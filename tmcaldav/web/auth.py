"""Who is asking: login cookies, bearer tokens, a trusted proxy's header; CSRF and
the slow-down after failed logins.

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
import threading
import time
from dataclasses import dataclass
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


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginThrottle:
    """Slows logins down after failures, per user name and per client address.

    Three failures are free (typos); after that each attempt must wait twice as long
    as the one before (1 s, 2 s, 4 s … up to `cap`) after the last failure, and one
    that comes early is refused without looking at the password. A success clears
    the name's and the address's count.
    """

    FREE = 3

    def __init__(self, cap: float = 60.0, clock: object = time.monotonic):
        self.cap = cap
        self._clock = clock
        self._failures: dict[tuple[str, str], _Failures] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def wait_needed(self, name: str, address: str) -> float:
        """Seconds until a login for `name` from `address` may be tried (0: now)."""
        now = self._now()
        with self._lock:
            wait = 0.0
            for key in (("user", name.lower()), ("address", address)):
                failures = self._failures.get(key)
                if failures is None or failures.count < self.FREE:
                    continue
                delay = min(self.cap, 2.0 ** (failures.count - self.FREE))
                wait = max(wait, failures.last + delay - now)
            return max(wait, 0.0)

    def failed(self, name: str, address: str) -> None:
        """Count a failed login."""
        now = self._now()
        with self._lock:
            if len(self._failures) > 10_000:
                # Forget the old ones rather than grow without end.
                horizon = now - 15 * 60
                self._failures = {k: v for k, v in self._failures.items() if v.last > horizon}
            for key in (("user", name.lower()), ("address", address)):
                failures = self._failures.setdefault(key, _Failures())
                failures.count += 1
                failures.last = now

    def succeeded(self, name: str, address: str) -> None:
        """Clear the counts after a good login."""
        with self._lock:
            self._failures.pop(("user", name.lower()), None)
            self._failures.pop(("address", address), None)
