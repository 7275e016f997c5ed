"""Probes and metrics: ``/healthz`` (process), ``/readyz`` (database), ``/metrics``."""

from __future__ import annotations

import logging

import psycopg
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout

from cloud.api.deps import State

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    """Always 200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers", responses={503: {"description": "not"}})
def readyz(state: State) -> JSONResponse:
    """200 when a pooled connection runs ``SELECT 1``, 503 otherwise."""
    # A probe must answer before the orchestrator's own timeout, whatever the pool's is.
    timeout = min(2.0, state.settings.db.pool_timeout_s)
    try:
        with state.db().connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("not ready: %s", exc)
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: State) -> Response:
    """The app's metrics in Prometheus text format, with the shared job queue's state."""
    try:
        with state.db().connection(timeout=min(2.0, state.settings.db.pool_timeout_s)) as conn:
            state.metrics.refresh_queues(conn)
    except (psycopg.Error, PoolTimeout) as exc:
        # The process's own counters are still worth serving when the database is away.
        log.warning("metrics without queue state: %s", exc)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
