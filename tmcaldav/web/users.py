"""Who may use the web interface: users with a role, their passwords and API tokens.

Passwords are kept as scrypt hashes (the standard library's `hashlib.scrypt`, a
memory-hard function, with OWASP's recommended cost: N=2^15, r=8, p=3, 32 MiB and a
few hundred milliseconds a check, which is what makes guessing slow). API tokens are
256 random bits, shown once; the store keeps only their SHA-256, which is enough for a secret that
cannot be guessed. Nothing here imports the web framework: the CLI's `user`
commands use it too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tmcaldav.errors import TmcaldavError, UsageError
from tmcaldav.store.model import WEB_ROLES, ApiToken, WebUser

# scrypt's cost: 2^15 × 128 × r bytes of memory (32 MiB), done p times over.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 3
_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 8
TOKEN_PREFIX = "tmc_"
# A token's last use is recorded to this precision (one write a minute at most).
TOKEN_USE_EVERY = timedelta(minutes=1)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


class UserError(TmcaldavError):
    """A user that cannot be added, found or changed; nothing was changed."""


@dataclass(frozen=True)
class WebIdentity:
    """A logged-in user, detached from the store."""

    id: int
    name: str
    role: str

    @property
    def may_act(self) -> bool:
        """Admins act; viewers only read."""
        return self.role == "admin"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The scrypt hash of a password, with its parameters: scrypt$N$r$p$salt$hash."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_MAXMEM,
        dklen=32,
    )
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def check_password(password: str, stored: str) -> bool:
    """True when `password` matches the stored hash (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# A hash of nothing anyone types: a login for an unknown name costs as much as one for
# a known name, so timing does not tell which names exist.
_DUMMY_HASH: str | None = None


def dummy_check(password: str) -> None:
    """Spend the time a password check takes."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    check_password(password, _DUMMY_HASH)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a token is kept."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """A user name: letters, digits and . _ @ + -, up to 100 characters."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"not a user name: {name!r} (letters, digits and . _ @ + -, "
            "starting with a letter or digit, at most 100 characters)"
        )
    return name


def check_role(role: str) -> str:
    """admin or viewer."""
    if role not in WEB_ROLES:
        raise UsageError(f"unknown role {role!r}; use one of: {', '.join(WEB_ROLES)}")
    return role


def add_user(db: Session, name: str, password: str, role: str = "viewer") -> WebUser:
    """Add a user; UserError when the name is taken, UsageError for a short password."""
    check_name(name)
    check_role(role)
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short (at least {MIN_PASSWORD} characters)")
    if find_user(db, name) is not None:
        raise UserError(f"user {name!r} exists already; remove it first: tmcaldav user remove")
    user = WebUser(name=name, role=role, password_hash=hash_password(password))
    db.add(user)
    db.flush()
    return user


def find_user(db: Session, name: str) -> WebUser | None:
    """The user with this name, or None."""
    return db.scalars(select(WebUser).where(WebUser.name == name)).one_or_none()


def get_user(db: Session, name: str) -> WebUser:
    """The user with this name; UserError naming the command that lists them."""
    user = find_user(db, name)
    if user is None:
        raise UserError(f"no user {name!r}; see: tmcaldav user list")
    return user


def list_users(db: Session) -> list[dict[str, object]]:
    """Every user as JSON rows: name, role, created_at, tokens (how many),
    tokens_last_used_at (the newest use of any of their tokens, to the minute, or null)."""
    users = db.scalars(select(WebUser).order_by(WebUser.name)).all()
    return [
        {
            "name": u.name,
            "role": u.role,
            "created_at": u.created_at.isoformat(timespec="seconds"),
            "tokens": len(u.tokens),
            "tokens_last_used_at": _newest_use(u.tokens),
        }
        for u in users
    ]


def _newest_use(tokens: list[ApiToken]) -> str | None:
    used = [t.last_used_at for t in tokens if t.last_used_at is not None]
    return max(used).isoformat(timespec="seconds") if used else None


def remove_user(db: Session, name: str) -> None:
    """Remove a user and their tokens (their open logins end at their next request)."""
    db.delete(get_user(db, name))
    db.flush()


def new_token(db: Session, name: str) -> str:
    """A new API token for a user: returned once, only its hash is kept."""
    user = get_user(db, name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user.tokens.append(ApiToken(token_hash=token_hash(token)))
    db.flush()
    return token


def identity(user: WebUser) -> WebIdentity:
    """The user as a detached identity."""
    return WebIdentity(user.id, user.name, user.role)


def login(db: Session, name: str, password: str) -> WebIdentity | None:
    """The user when the password is theirs, else None (in about the same time)."""
    user = find_user(db, name)
    if user is None:
        dummy_check(password)
        return None
    if not check_password(password, user.password_hash):
        return None
    return identity(user)


def user_by_id(db: Session, user_id: int) -> WebIdentity | None:
    """The user a login cookie names, if they still exist."""
    user = db.get(WebUser, user_id)
    return identity(user) if user is not None else None


def user_by_token(db: Session, token: str) -> tuple[WebIdentity, datetime | None] | None:
    """The user a bearer token belongs to and when the token was last used, or None."""
    row = db.execute(
        select(ApiToken.last_used_at, WebUser)
        .join(WebUser, WebUser.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash(token))
    ).one_or_none()
    if row is None:
        return None
    return identity(row.WebUser), row.last_used_at


def token_use_is_old(last_used_at: datetime | None, now: datetime) -> bool:
    """True when a token's recorded last use should be moved to `now`: it is written at
    most once per TOKEN_USE_EVERY, so a script's requests do not each write the store."""
    return last_used_at is None or now - last_used_at >= TOKEN_USE_EVERY


def note_token_use(db: Session, token: str, now: datetime) -> None:
    """Record that `token` was used at `now` (unless a node recorded a use meanwhile)."""
    db.execute(
        update(ApiToken)
        .where(
            ApiToken.token_hash == token_hash(token),
            (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - TOKEN_USE_EVERY),
        )
        .values(last_used_at=now)
    )
