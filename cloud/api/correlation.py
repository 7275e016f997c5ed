"""Correlation ids: one per request, echoed in ``X-Correlation-ID`` and put on every log line.

Written as plain ASGI middleware rather than BaseHTTPMiddleware so request bodies stream
through untouched and the context variable is visible to the endpoint and its threads.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.api.metrics import CloudMetrics

log = logging.getLogger(__name__)

HEADER = "X-Correlation-ID"
_HEADER_KEY = HEADER.lower().encode()
# A caller's id is reused only if it is short and plain: it is written into our logs.
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="-")


class CorrelationIdFilter(logging.Filter):
    """Adds ``record.correlation_id`` so formats can use ``%(correlation_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record with the current request's id ("-" outside a request)."""
        record.correlation_id = correlation_id.get()
        return True


class RequestContextMiddleware:
    """Assigns the correlation id, logs one line per request and records its metrics."""

    def __init__(self, app: ASGIApp, metrics: CloudMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap one HTTP request; other scopes (lifespan) pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(_HEADER_KEY, b"")
        cid = given.decode() if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = correlation_id.set(cid)
        status = 500  # what the client sees if the app dies before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_HEADER_KEY, cid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            # The route template, never the raw path: raw paths would explode label cardinality.
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            log.info("%s %s -> %d in %.1f ms", method, scope["path"], status, elapsed * 1000)
            correlation_id.reset(token)
