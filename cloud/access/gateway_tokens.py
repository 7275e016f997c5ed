"""Gateway tokens: issue, enrol, rotate, revoke and check. Only SHA-256 digests are stored.

Three ways a gateway gets its token:
- ``smaint cloud gateway add ID`` prints one (re-running it replaces the token at once);
- enrolment: an admin issues a one-time code (``smaint cloud gateway enrol ID`` or
  ``POST /api/v1/gateways/{id}/enrolment``) that expires; the gateway's first contact
  (``POST /api/v1/enrol``) exchanges it for its token, once;
- rotation: an admin asks for it (``POST /api/v1/gateways/{id}/rotation``); the next sync
  answer tells the gateway (``SyncAck.rotate_token``), which fetches a new token
  (``POST /api/v1/sync/token``). The old one stays valid for an overlap period, so an upload
  in flight with it still succeeds, and a gateway that lost the new one before saving it can
  rotate again with the old.
Every change is in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from cloud.db.pool import Conn
from cloud.exceptions import AuthError, GatewayNotFoundError
from cloud.operations import audit
from shared.topics import ID_PATTERN

log = logging.getLogger(__name__)

_GATEWAY_ID = re.compile(ID_PATTERN)
# token_urlsafe(32) is 43 characters; anything much longer is not ours and is not hashed.
_MAX_TOKEN_CHARS = 256
ENROL_PREFIX = "enr_"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_id(gateway_id: str) -> None:
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise ValueError(f"gateway id {gateway_id!r} must match {ID_PATTERN}")


def _set_token(conn: Conn, gateway_id: str) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO gateways (gateway_id, token_sha256) VALUES (%s, %s)"
        " ON CONFLICT (gateway_id) DO UPDATE"
        " SET token_sha256 = EXCLUDED.token_sha256, revoked_at = NULL,"
        " previous_token_sha256 = NULL, previous_valid_until = NULL, rotate_requested = false",
        (gateway_id, _digest(token)),
    )
    return token


def create_gateway(conn: Conn, gateway_id: str, actor: str = "cli") -> str:
    """Register ``gateway_id`` (or re-issue its token, un-revoking it); returns the new token."""
    _check_id(gateway_id)
    with conn.transaction():
        token = _set_token(conn, gateway_id)
        audit.record(conn, actor, "gateway.token_issue", "gateway", gateway_id,
                     before=None, after=None)
    log.info("issued a new token for gateway %s", gateway_id)
    return token


def revoke_gateway(conn: Conn, gateway_id: str, actor: str = "cli") -> None:
    """Revoke ``gateway_id``'s tokens; its uploads get 401 until a new token is issued."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE gateways SET revoked_at = coalesce(revoked_at, now()),"
            " previous_valid_until = NULL WHERE gateway_id = %s",
            (gateway_id,),
        )
        if cur.rowcount == 0:
            raise GatewayNotFoundError(gateway_id)
        audit.record(conn, actor, "gateway.revoke", "gateway", gateway_id, before=None, after=None)
    log.info("revoked the token of gateway %s", gateway_id)


@dataclass(frozen=True)
class GatewayIdentity:
    """Who a valid token belongs to, and whether it was the previous (rotated-out) one."""

    gateway_id: str
    previous: bool = False


def identify(conn: Conn, token: str) -> GatewayIdentity:
    """The gateway a valid, unrevoked ``token`` belongs to; AuthError otherwise."""
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise AuthError("invalid gateway token")
    digest = _digest(token)
    row = conn.execute(
        "SELECT gateway_id, token_sha256, revoked_at, false FROM gateways"
        " WHERE token_sha256 = %(d)s UNION ALL"
        " SELECT gateway_id, previous_token_sha256, revoked_at, true FROM gateways"
        " WHERE previous_token_sha256 = %(d)s AND previous_valid_until > now()",
        {"d": digest},
    ).fetchone()
    # The lookup is by digest already; the constant-time compare guards against an index or
    # collation ever matching loosely, at no cost.
    if row is None or not hmac.compare_digest(bytes(row[1]), digest):
        raise AuthError("invalid gateway token")
    if row[2] is not None:
        raise AuthError(f"the token of gateway {row[0]!r} was revoked")
    return GatewayIdentity(gateway_id=row[0], previous=bool(row[3]))


def authenticate(conn: Conn, token: str) -> str:
    """The gateway id a valid, unrevoked ``token`` belongs to; AuthError otherwise."""
    return identify(conn, token).gateway_id


def request_rotation(conn: Conn, gateway_id: str, actor: str) -> None:
    """Ask ``gateway_id`` to fetch a new token at its next upload."""
    with conn.transaction():
        cur = conn.execute("UPDATE gateways SET rotate_requested = true WHERE gateway_id = %s"
                           " AND revoked_at IS NULL", (gateway_id,))
        if cur.rowcount == 0:
            raise GatewayNotFoundError(gateway_id)
        audit.record(conn, actor, "gateway.rotate_request", "gateway", gateway_id,
                     before=None, after=None)
    log.info("token rotation requested for gateway %s by %s", gateway_id, actor)


def rotation_requested(conn: Conn, gateway_id: str) -> bool:
    """Whether ``gateway_id`` should fetch a new token now."""
    row = conn.execute("SELECT rotate_requested FROM gateways WHERE gateway_id = %s",
                       (gateway_id,)).fetchone()
    return bool(row and row[0])


def rotate(conn: Conn, who: GatewayIdentity, overlap_s: float) -> str:
    """A new token for the gateway ``who`` authenticated as; the token it used stays valid
    for ``overlap_s`` (if it used the previous one, that one stays the previous)."""
    token = secrets.token_urlsafe(32)
    with conn.transaction():
        if who.previous:
            # It never saved the current one: replace that, keep the one it holds.
            conn.execute("UPDATE gateways SET token_sha256 = %s, rotate_requested = false,"
                         " previous_valid_until = now() + make_interval(secs => %s)"
                         " WHERE gateway_id = %s", (_digest(token), overlap_s, who.gateway_id))
        else:
            conn.execute("UPDATE gateways SET previous_token_sha256 = token_sha256,"
                         " previous_valid_until = now() + make_interval(secs => %s),"
                         " token_sha256 = %s, rotate_requested = false WHERE gateway_id = %s",
                         (overlap_s, _digest(token), who.gateway_id))
        audit.record(conn, f"gateway:{who.gateway_id}", "gateway.token_rotate", "gateway",
                     who.gateway_id, before=None, after={"overlap_s": overlap_s})
    log.info("gateway %s rotated its token (old one valid %g s more)", who.gateway_id,
             overlap_s)
    return token


def issue_enrolment(conn: Conn, gateway_id: str, ttl_s: float, actor: str) -> str:
    """A one-time code that ``gateway_id`` exchanges for its token within ``ttl_s``."""
    _check_id(gateway_id)
    code = ENROL_PREFIX + secrets.token_urlsafe(24)
    with conn.transaction():
        conn.execute(
            "INSERT INTO gateway_enrolments (code_sha256, gateway_id, created_by, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
            (_digest(code), gateway_id, actor, ttl_s))
        audit.record(conn, actor, "gateway.enrolment_issue", "gateway", gateway_id,
                     before=None, after={"ttl_s": ttl_s})
    log.info("enrolment code issued for gateway %s by %s (valid %g s)", gateway_id, actor, ttl_s)
    return code


def enrol(conn: Conn, gateway_id: str, code: str) -> str:
    """Exchange a one-time enrolment ``code`` of ``gateway_id`` for its token; AuthError if the
    code is unknown, for another gateway, used or expired."""
    if not code.startswith(ENROL_PREFIX) or len(code) > _MAX_TOKEN_CHARS:
        raise AuthError("invalid enrolment code")
    with conn.transaction():
        row = conn.execute(
            "UPDATE gateway_enrolments SET used_at = now() WHERE code_sha256 = %s"
            " AND gateway_id = %s AND used_at IS NULL AND expires_at > now()"
            " RETURNING gateway_id", (_digest(code), gateway_id)).fetchone()
        if row is None:
            raise AuthError("invalid, used or expired enrolment code; ask an admin for a new "
                            "one (smaint cloud gateway enrol ID)")
        token = _set_token(conn, gateway_id)
        audit.record(conn, f"gateway:{gateway_id}", "gateway.enrol", "gateway", gateway_id,
                     before=None, after=None)
    log.info("gateway %s enrolled", gateway_id)
    return token
