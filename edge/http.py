"""The gateway's local HTTP server: health, Prometheus metrics and a JSON status page."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from edge.metrics import GatewayMetrics


def build_app(status: Callable[[], Mapping[str, Any]], metrics: GatewayMetrics,
              healthy: Callable[[], bool]) -> Starlette:
    """The ASGI app; ``status`` and ``healthy`` are read on every request."""

    async def healthz(_: Request) -> Response:
        ok = healthy()
        return PlainTextResponse("ok" if ok else "degraded", status_code=200 if ok else 503)

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def api_status(_: Request) -> Response:
        return JSONResponse(dict(status()))

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/metrics", prometheus),
        Route("/api/status", api_status),
    ])


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside the gateway's event loop; the gateway, not uvicorn, owns the signals."""

    def capture_signals(self) -> nullcontext[None]:  # type: ignore[override]
        """Leave SIGINT/SIGTERM to the gateway's own handlers."""
        return nullcontext()


def make_server(app: Starlette, host: str, port: int) -> EmbeddedServer:
    """A quiet uvicorn server for ``app`` that does not touch logging or signal handlers."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", log_level="warning")
    return EmbeddedServer(config)
