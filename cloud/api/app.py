"""The FastAPI application: lifespan (migrate, open the pool), middleware, routes, errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from psycopg_pool import PoolTimeout

from cloud.access.client_address import parse_networks
from cloud.api.correlation import RequestContextMiddleware
from cloud.api.deps import AppState
from cloud.api.metrics import CloudMetrics
from cloud.api.routes import (
    alerts,
    backfill,
    dead_letters,
    drift,
    gateway_access,
    gateway_config,
    health,
    models,
    notifications,
    orders,
    readings,
    reports,
    scenarios,
    sessions,
    sync,
    system,
)
from cloud.api.routes import training as training_routes
from cloud.api.routes import users as user_routes
from cloud.api.security_headers import SecurityHeaders
from cloud.background.jobs import Worker
from cloud.background.notify import handlers as notify_handlers
from cloud.db.migrate import migrate
from cloud.db.pool import open_pool
from cloud.drift.jobs import handlers as drift_handlers
from cloud.drift.jobs import start_checks
from cloud.exceptions import CloudError, RateLimitedError
from cloud.ingest.rollup import RollupFolder
from cloud.settings import CloudSettings
from cloud.training.jobs import handlers as training_handlers

log = logging.getLogger(__name__)

# Retryable database trouble: tell clients (the gateway's sync loop) when to come back.
_RETRY_AFTER_S = "5"
# Where /docs loads Swagger UI's script and stylesheet from (files of the fastapi-offline wheel).
DOCS_ASSETS = "/docs-assets"
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


async def _cloud_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudError)  # noqa: S101 - registered for CloudError only
    status = exc.http_status
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=status)
    log.info("%s %s refused (%d): %s", request.method, request.url.path, status, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimitedError)  # noqa: S101 - registered for it only
    return JSONResponse(
        {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
    )


async def _db_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "database unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": _RETRY_AFTER_S},
    )


async def _db_data_error(request: Request, exc: Exception) -> JSONResponse:
    # Class 22 (data exception): a value the schema let through but PostgreSQL cannot store.
    log.info("%s %s: value refused by the database: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"value out of range: {exc}"}, status_code=422)


def _fastapi(settings: CloudSettings, lifespan: Lifespan) -> FastAPI:
    """The bare app; in development with /docs, whose Swagger UI scripts and styles are served
    from the fastapi-offline package (FastAPI's own /docs loads them from a CDN, which leaves
    a blank page on a machine without internet)."""
    meta: dict[str, Any] = {"title": "Smart Maintenance cloud", "version": "1",
                            "lifespan": lifespan, "redoc_url": None}
    if settings.env != "development":
        # The interactive docs are a development aid; production serves only the API.
        return FastAPI(docs_url=None, openapi_url=None, **meta)
    return FastAPIOffline(docs_url="/docs", static_url=DOCS_ASSETS, **meta)


def create_app(settings: CloudSettings, *, run_migrations: bool = True) -> FastAPI:
    """The cloud API; start-up migrates the schema (unless told not to) and opens the pool."""
    state = AppState(settings=settings, metrics=CloudMetrics(),
                     trusted_proxies=parse_networks(settings.api.trusted_proxies))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            applied = await run_in_threadpool(migrate, settings.db.dsn)
            log.info("schema up to date (%d migrations applied now)", len(applied))
        state.pool = await run_in_threadpool(open_pool, settings)
        # Every process runs a job worker: replicas share the job table, none is special.
        worker = Worker(state.pool, settings,
                        {**notify_handlers(settings), **drift_handlers(settings),
                         **training_handlers(settings)})
        if settings.jobs.worker_enabled:
            worker.start()
        if settings.drift.enabled:
            await run_in_threadpool(start_checks, state.pool, settings.drift.check_every_s)
        # Not optional like the job worker: ingest relies on someone folding its deltas.
        folder = RollupFolder(state.pool, settings.jobs.rollup_fold_s)
        folder.start()
        log.info("cloud API ready (env=%s)", settings.env)
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)
            await run_in_threadpool(folder.stop)
            pool, state.pool = state.pool, None
            await run_in_threadpool(pool.close)

    app = _fastapi(settings, lifespan)
    app.state.cloud = state
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)
    if settings.api.cors_origins:
        # Closed by default (no CORS headers: browsers keep other sites' pages out); opened
        # only to the origins named, for bearer-key calls (no cookies).
        app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Correlation-ID"],
                           allow_credentials=False, max_age=600)
    # Outermost: every response, the console's pages and errors included, gets the headers.
    app.add_middleware(SecurityHeaders, hsts=settings.served_over_https)
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(RateLimitedError, _rate_limited)
    app.add_exception_handler(psycopg.OperationalError, _db_unavailable)
    app.add_exception_handler(PoolTimeout, _db_unavailable)
    app.add_exception_handler(psycopg.DataError, _db_data_error)
    app.include_router(sync.router)
    app.include_router(readings.router)
    app.include_router(health.router)
    app.include_router(training_routes.router)
    for module in (alerts, orders, user_routes, notifications, reports, backfill, models,
                   drift, gateway_config, system, scenarios, dead_letters, sessions,
                   gateway_access):
        app.include_router(module.router)
    return app
