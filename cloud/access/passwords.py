"""Console passwords: argon2id hashes, sign-in that issues a short-lived session key.

A password is optional (``smaint cloud user passwd NAME``, or ``user add --password``); API
keys stay what scripts use. Signing in with name and password issues an API key that expires
after the console's session length (``api_keys.expires_at``): the console calls the API with
it exactly as with any key, and signing out revokes it. Failed sign-ins count per user name
and per client address (cloud.access.ratelimit, the API's throttle).
"""

from __future__ import annotations

import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cloud.access import users
from cloud.access.users import IssuedKey
from cloud.db.pool import Conn
from cloud.exceptions import AuthError
from cloud.operations import audit

log = logging.getLogger(__name__)

MIN_PASSWORD = 10
MAX_PASSWORD = 256
_hasher = PasswordHasher()  # argon2id, RFC 9106's low-memory profile (64 MiB, t=3, p=4)
# Verified against when the user does not exist, so an unknown name costs as long as a
# wrong password and the answer's timing does not tell which names exist.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``; ValueError if it is too short or too long."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"choose a password of {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def set_password(conn: Conn, name: str, password: str, actor: str = "cli") -> None:
    """Give user ``name`` a console password (replacing any); NotFoundError if no such user."""
    encoded = hash_password(password)
    with conn.transaction():
        users.user_id_of(conn, name)
        conn.execute("UPDATE users SET password_hash = %s WHERE name = %s", (encoded, name))
        audit.record(conn, actor, "user.password_set", "user", name, before=None, after=None)
    log.info("console password set for user %s", name)


def check_password(conn: Conn, name: str, password: str) -> bool:
    """True if ``password`` is user ``name``'s console password (constant work either way)."""
    row = conn.execute("SELECT password_hash FROM users WHERE name = %s", (name,)).fetchone()
    encoded = row[0] if row is not None and row[0] else None
    try:
        ok = _hasher.verify(encoded or _DUMMY, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and encoded is not None


def sign_in(conn: Conn, name: str, password: str, lifetime_s: float) -> IssuedKey:
    """A session key for user ``name`` valid ``lifetime_s``; AuthError if the password is wrong."""
    if not check_password(conn, name, password):
        raise AuthError("wrong user name or password")
    issued = users.issue_key(conn, name, actor=name, expires_in_s=lifetime_s)
    log.info("user %s signed in with a password (session key %d)", name, issued.key_id)
    return issued
