"""The gateway's local HTTP server: health, Prometheus metrics, a JSON status page, alert acks.

State-changing routes need the local API token and a JSON body (edge.api_token); the whole
app refuses cross-origin browser requests (shared.origin), with or without the panel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from edge.alert_lifecycle import AlertNotFoundError, AlertResolvedError
from edge.api_token import bearer_matches
from edge.metrics import GatewayMetrics
from shared.origin import SameOriginOnly
from shared.schemas import MAX_ACTOR, MAX_ALERT_COMMENT, TEXT_PATTERN, Alert, anchored


class AckRequest(BaseModel):
    """The optional body of ``POST /api/alerts/<id>/ack``: who acknowledges, and why."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(default="api", min_length=1, max_length=MAX_ACTOR,
                    pattern=anchored(TEXT_PATTERN))
    comment: str = Field(default="", max_length=MAX_ALERT_COMMENT,
                         pattern=anchored(TEXT_PATTERN))


class GatewayApp(Starlette):
    """The gateway's own routes; served as :attr:`asgi` (behind the origin check) when alone."""

    @property
    def asgi(self) -> ASGIApp:
        """This app behind the same-origin check, as served without the panel."""
        return SameOriginOnly(self)


def refuse_unless_authorized(request: Request, api_token: str) -> Response | None:
    """401 without the API token, 415 unless the body is declared JSON; None when allowed."""
    if not bearer_matches(request.headers.get("authorization"), api_token):
        return JSONResponse(
            {"detail": "send 'Authorization: Bearer <token>' with the gateway's local API "
                       "token (SMAINT_GATEWAY_HTTP__API_TOKEN, or the api-token file beside "
                       "its database)"},
            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return JSONResponse({"detail": "send the request as Content-Type: application/json"},
                            status_code=415)
    return None


def build_app(status: Callable[[], Mapping[str, Any]], metrics: GatewayMetrics,
              healthy: Callable[[], bool],
              ack_alert: Callable[[str, str, str], Alert] | None = None, *, api_token: str,
              degraded: Callable[[], str | None] = lambda: None,
              devices: Callable[[], list[dict[str, Any]]] = list) -> GatewayApp:
    """The ASGI app; ``status``, ``healthy``, ``degraded`` and ``devices`` are read per request.

    ``api_token`` is what state-changing requests must carry as a bearer token.

    ``degraded`` gives the reason the gateway runs degraded (e.g. its disk refuses writes), or
    None; /healthz then answers 503 with that reason.
    """

    async def healthz(_: Request) -> Response:
        reason = degraded()
        if reason is not None:
            return PlainTextResponse(f"degraded: {reason}", status_code=503)
        ok = healthy()
        return PlainTextResponse("ok" if ok else "degraded", status_code=200 if ok else 503)

    async def api_devices(_: Request) -> Response:
        return JSONResponse({"devices": devices()})

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def api_status(_: Request) -> Response:
        return JSONResponse(dict(status()))

    async def api_ack_alert(request: Request) -> Response:
        refused = refuse_unless_authorized(request, api_token)
        if refused is not None:
            return refused
        if ack_alert is None:
            return JSONResponse({"detail": "alerts are not handled here"}, status_code=404)
        raw = await request.body()
        try:
            ask = AckRequest.model_validate_json(raw) if raw.strip() else AckRequest()
        except ValidationError as exc:
            return JSONResponse({"detail": exc.errors(include_url=False, include_input=False,
                                                      include_context=False)},
                                status_code=422)
        try:
            alert = ack_alert(str(request.path_params["alert_id"]), ask.by, ask.comment)
        except AlertNotFoundError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        except AlertResolvedError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)
        return JSONResponse(alert.model_dump(mode="json"))

    return GatewayApp(routes=[
        Route("/healthz", healthz),
        Route("/metrics", prometheus),
        Route("/api/status", api_status),
        Route("/api/devices", api_devices),
        Route("/api/alerts/{alert_id}/ack", api_ack_alert, methods=["POST"]),
    ])


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside the gateway's event loop; the gateway, not uvicorn, owns the signals."""

    def capture_signals(self) -> nullcontext[None]:  # type: ignore[override]
        """Leave SIGINT/SIGTERM to the gateway's own handlers."""
        return nullcontext()


def make_server(app: ASGIApp, host: str, port: int, *, lifespan: bool = False
                ) -> EmbeddedServer:
    """A quiet uvicorn server for ``app`` that does not touch logging or signal handlers.

    ``lifespan``: run the app's startup and shutdown (an app composed around this one, such as
    the web panel, may need them; the gateway's own app has none).
    """
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on" if lifespan else "off", log_level="warning")
    return EmbeddedServer(config)
