"""The local API token: what scripts send to change state on the gateway over HTTP.

Reading endpoints (/healthz, /metrics, /api/status, /api/devices) stay open on the local
network; every state-changing one (POST /api/alerts/<id>/ack) needs
``Authorization: Bearer <token>`` and a JSON body (``Content-Type: application/json``), which
no cross-site form or ``text/plain`` POST can send. The token comes from provisioning
(``SMAINT_GATEWAY_HTTP__API_TOKEN``) or is made at first start into a file beside the database
(mode 0600): only someone who can read the gateway's disk can use it. The panel acts through
its own signed-in session instead.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from edge.private_file import read_secret, write_private
from edge.settings import GatewaySettings

log = logging.getLogger(__name__)
# token_urlsafe(32) is 43 characters; a header much longer than that is not ours.
_MAX_TOKEN_CHARS = 256


def resolve_api_token(settings: GatewaySettings) -> str:
    """The provisioned token, else the one in the token file (made now if there is none)."""
    if settings.http.api_token:
        return settings.http.api_token
    path = settings.api_token_path
    token = read_secret(path)
    if token is None:
        token = secrets.token_urlsafe(32)
        write_private(path, token)
        log.info("made the local API token for state-changing requests: %s", path)
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """True if an ``Authorization`` header carries ``Bearer <token>`` (constant-time)."""
    if not header or not token or len(header) > _MAX_TOKEN_CHARS:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())
