"""Users with roles and their API keys: create, list, issue, revoke, authenticate.

Keys look like ``smk_<43 url-safe characters>``; only their SHA-256 is stored, as for gateway
tokens, so a database leak leaks no usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field

from cloud.db.pool import Conn
from cloud.exceptions import AuthError, ConflictError, NotFoundError
from cloud.operations import audit

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
# Each role may do everything the roles before it may.
_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

USER_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_USER_NAME = re.compile(USER_NAME_PATTERN)
KEY_PREFIX = "smk_"
_MAX_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the user behind the API key it carried."""

    user_id: int
    name: str
    role: Role
    key_id: int

    def has_role(self, required: Role) -> bool:
        """Whether this user's role is ``required`` or above it."""
        return _RANK[self.role] >= _RANK[required]


class ApiKeyInfo(BaseModel):
    """An API key as listings show it (never the key itself)."""

    key_id: int = Field(description="id to revoke the key by")
    prefix: str = Field(description="the key's first characters")
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = Field(
        default=None, description="a console sign-in's key ends then; others never")
    last_used_at: datetime | None = Field(default=None, description="to the minute")


class User(BaseModel):
    """A user, its role and its keys."""

    name: str = Field(pattern=USER_NAME_PATTERN, examples=["alice"])
    role: Role = Field(description="viewer < operator < admin")
    created_at: datetime
    keys: list[ApiKeyInfo] = Field(default_factory=list)


class IssuedKey(BaseModel):
    """A newly issued key: shown once, store it now."""

    user: str
    role: Role
    key_id: int
    key: str = Field(description="the API key; send as `Authorization: Bearer <key>`")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _new_key(conn: Conn, user_id: int, expires_in_s: float | None = None) -> tuple[int, str]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO api_keys (user_id, key_sha256, prefix, expires_at) VALUES (%s, %s, %s,"
        " now() + make_interval(secs => %s)) RETURNING key_id",
        (user_id, _digest(key), key[: len(KEY_PREFIX) + 4], expires_in_s),
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
    return int(row[0]), key


def create_user(conn: Conn, name: str, role: Role, actor: str = "cli") -> IssuedKey:
    """Create user ``name`` with ``role`` and its first API key (ConflictError if it exists)."""
    if not _USER_NAME.fullmatch(name):
        raise ValueError(f"user name {name!r} must match {USER_NAME_PATTERN}")
    if role not in _RANK:
        raise ValueError(f"role {role!r} must be one of {', '.join(ROLES)}")
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO users (name, role) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
            " RETURNING user_id",
            (name, role),
        ).fetchone()
        if row is None:
            raise ConflictError(f"user {name!r} already exists")
        key_id, key = _new_key(conn, int(row[0]))
        audit.record(conn, actor, "user.create", "user", name, before=None, after={"role": role})
    log.info("created user %s with role %s", name, role)
    return IssuedKey(user=name, role=role, key_id=key_id, key=key)


def _user_row(conn: Conn, name: str) -> tuple[int, Role]:
    row = conn.execute("SELECT user_id, role FROM users WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"user {name!r} does not exist")
    return int(row[0]), row[1]


def user_id_of(conn: Conn, name: str) -> int:
    """User ``name``'s id; NotFoundError if there is none."""
    return _user_row(conn, name)[0]


def issue_key(conn: Conn, name: str, actor: str = "cli", expires_in_s: float | None = None
              ) -> IssuedKey:
    """Give user ``name`` one more API key (rotation: issue, switch, revoke the old one).

    ``expires_in_s``: a key that ends by itself (a console sign-in's); None: until revoked.
    """
    with conn.transaction():
        user_id, role = _user_row(conn, name)
        key_id, key = _new_key(conn, user_id, expires_in_s)
        after: dict[str, object] = {"key_id": key_id}
        if expires_in_s is not None:
            after["expires_in_s"] = expires_in_s
        audit.record(conn, actor, "user.sign_in" if expires_in_s is not None else
                     "user.key_issue", "user", name, before=None, after=after)
    log.info("issued API key %d to user %s", key_id, name)
    return IssuedKey(user=name, role=role, key_id=key_id, key=key)


def revoke_key(conn: Conn, name: str, key_id: int, actor: str = "cli") -> None:
    """Revoke key ``key_id`` of user ``name``; requests with it get 401 from now on."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()) FROM users u"
            " WHERE k.user_id = u.user_id AND u.name = %s AND k.key_id = %s",
            (name, key_id),
        )
        if cur.rowcount == 0:
            raise NotFoundError(f"user {name!r} has no key {key_id}")
        audit.record(conn, actor, "user.key_revoke", "user", name,
                     before=None, after={"key_id": key_id})
    log.info("revoked API key %d of user %s", key_id, name)


def set_role(conn: Conn, name: str, role: Role, actor: str = "cli") -> None:
    """Change user ``name``'s role (takes effect on its next request)."""
    with conn.transaction():
        _, before = _user_row(conn, name)
        conn.execute("UPDATE users SET role = %s WHERE name = %s", (role, name))
        audit.record(conn, actor, "user.role", "user", name,
                     before={"role": before}, after={"role": role})
    log.info("user %s is now %s (was %s)", name, role, before)


def list_users(conn: Conn) -> list[User]:
    """Every user with its keys, by name."""
    users: dict[int, User] = {}
    for user_id, name, role, created in conn.execute(
        "SELECT user_id, name, role, created_at FROM users ORDER BY name"
    ):
        users[user_id] = User(name=name, role=role, created_at=created)
    for user_id, key_id, prefix, created, revoked, used, expires in conn.execute(
        "SELECT user_id, key_id, prefix, created_at, revoked_at, last_used_at, expires_at"
        " FROM api_keys ORDER BY key_id"
    ):
        users[user_id].keys.append(ApiKeyInfo(
            key_id=key_id, prefix=prefix, created_at=created, revoked_at=revoked,
            last_used_at=used, expires_at=expires,
        ))
    return list(users.values())


def authenticate_key(conn: Conn, key: str) -> Principal:
    """The user a valid, unrevoked API ``key`` belongs to; AuthError otherwise."""
    if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_CHARS:
        raise AuthError("invalid API key")
    digest = _digest(key)
    row = conn.execute(
        "SELECT k.key_id, k.key_sha256, k.revoked_at, u.user_id, u.name, u.role,"
        " k.expires_at < now() FROM api_keys k JOIN users u USING (user_id)"
        " WHERE k.key_sha256 = %s",
        (digest,),
    ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[1]), digest):
        raise AuthError("invalid API key")
    if row[2] is not None:
        raise AuthError(f"this API key of user {row[4]!r} was revoked")
    if row[6]:
        raise AuthError(f"this session of user {row[4]!r} expired; sign in again")
    # Written at most once a minute per key: a write per request would cost more than the
    # request, for a field people read to spot unused keys.
    conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE key_id = %s"
        " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (row[0],),
    )
    return Principal(user_id=int(row[3]), name=row[4], role=row[5], key_id=int(row[0]))
