"""Refuse cross-site requests that could act as a signed-in user: only the server's own Origin.

Used by the gateway's own HTTP server (with or without its panel) and by both screens. Both
screens (the gateway panel, the cloud console) carry their actions over NiceGUI's
Socket.IO connection (a WebSocket, or POSTs when it falls back to long polling), whose server
accepts any origin: a page on another site could open one with the user's cookie, or POST to
an API route. Browsers send ``Origin`` with every WebSocket handshake and every non-GET
request, so those are checked here, in front of the whole HTTP server; a request without an
Origin that a browser marks ``Sec-Fetch-Site: cross-site`` is refused too. Requests without
either (curl, gateways, scripts) carry no browser cookie and pass: API routes authenticate
by bearer token.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)
_SAFE = {"GET", "HEAD", "OPTIONS"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def same_origin(origin: str, host: str) -> bool:
    """True if ``origin`` (scheme://host[:port]) names the host the request was sent to."""
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme in {"http", "https"} and parts.netloc.lower() == host.lower()


class SameOriginOnly:
    """ASGI middleware: 403 for a cross-origin WebSocket or state-changing HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on unless a browser sent it from another origin."""
        kind = scope["type"]
        if kind == "websocket" or (kind == "http" and scope["method"] not in _SAFE):
            origin = _header(scope, b"origin")
            host = _header(scope, b"host") or ""
            fetch_site = _header(scope, b"sec-fetch-site")
            if (origin is not None and not same_origin(origin, host)) or (
                    origin is None and fetch_site == "cross-site"):
                log.warning("refused a cross-origin %s %s from %s", kind,
                            scope.get("path", ""), origin or "a cross-site page")
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body",
                            "body": b"cross-origin request refused"})
                return
        await self.app(scope, receive, send)
