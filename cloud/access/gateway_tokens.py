"""Gateway tokens: issue, revoke and check. Only a token's SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets

from cloud.db.pool import Conn
from cloud.exceptions import AuthError, GatewayNotFoundError
from shared.topics import ID_PATTERN

log = logging.getLogger(__name__)

_GATEWAY_ID = re.compile(ID_PATTERN)
# token_urlsafe(32) is 43 characters; anything much longer is not ours and is not hashed.
_MAX_TOKEN_CHARS = 256


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_gateway(conn: Conn, gateway_id: str) -> str:
    """Register ``gateway_id`` (or re-issue its token, un-revoking it); returns the new token."""
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise ValueError(f"gateway id {gateway_id!r} must match {ID_PATTERN}")
    token = secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute(
            "INSERT INTO gateways (gateway_id, token_sha256) VALUES (%s, %s)"
            " ON CONFLICT (gateway_id) DO UPDATE"
            " SET token_sha256 = EXCLUDED.token_sha256, revoked_at = NULL",
            (gateway_id, _digest(token)),
        )
    log.info("issued a new token for gateway %s", gateway_id)
    return token


def revoke_gateway(conn: Conn, gateway_id: str) -> None:
    """Revoke ``gateway_id``'s token; its uploads get 401 until a new token is issued."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE gateways SET revoked_at = coalesce(revoked_at, now()) WHERE gateway_id = %s",
            (gateway_id,),
        )
        if cur.rowcount == 0:
            raise GatewayNotFoundError(gateway_id)
    log.info("revoked the token of gateway %s", gateway_id)


def authenticate(conn: Conn, token: str) -> str:
    """The gateway id a valid, unrevoked ``token`` belongs to; AuthError otherwise."""
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise AuthError("invalid gateway token")
    digest = _digest(token)
    row = conn.execute(
        "SELECT gateway_id, token_sha256, revoked_at FROM gateways WHERE token_sha256 = %s",
        (digest,),
    ).fetchone()
    # The lookup is by digest already; the constant-time compare guards against an index or
    # collation ever matching loosely, at no cost.
    if row is None or not hmac.compare_digest(bytes(row[1]), digest):
        raise AuthError("invalid gateway token")
    if row[2] is not None:
        raise AuthError(f"the token of gateway {row[0]!r} was revoked")
    gateway_id: str = row[0]
    return gateway_id
