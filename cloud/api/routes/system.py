"""``GET /api/v1/system``: where the cloud runs (environment, versions) and the state of each
connection it depends on; the console's "where it runs" bar shows it on every page."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from cloud import connections
from cloud.api.deps import AppState, Viewer, get_state
from cloud.api.routes.alerts import DENIED
from cloud.api.routes.models import get_artifacts
from cloud.artifacts import ArtifactNotFoundError

router = APIRouter(prefix="/api/v1", tags=["operations"])

# A key no bundle ever has: asking for it proves the bucket answers without reading anything.
_PROBE_KEY = "smaint-connection-check/absent"
_STARTED = datetime.now(UTC)


class Versions(BaseModel):
    """Versions of what serves this request."""

    smart_maintenance: str
    python: str
    fastapi: str
    mlflow: str | None = Field(description="the installed MLflow client (None: not installed)")


class SystemInfo(BaseModel):
    """Where this cloud process runs and whether its connections answer."""

    environment: Literal["development", "production"]
    started_at: datetime = Field(description="when this process started")
    versions: Versions
    connections: list[connections.Connection]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _checks(request: Request, state: AppState) -> connections.CachedChecks:
    cached = getattr(request.app.state, "connection_checks", None)
    if cached is None:
        settings = state.settings

        def probe() -> None:
            try:
                get_artifacts(request).head(_PROBE_KEY)
            except ArtifactNotFoundError:
                return  # the store answered that the key is absent: it works

        def run() -> list[connections.Connection]:
            return [
                connections.database(state.db(), settings.db.dsn),
                connections.mlflow(settings.training),
                connections.artifact_store(settings.artifacts, probe),
            ]

        cached = connections.CachedChecks(run)
        request.app.state.connection_checks = cached
    return cached


@router.get("/system", response_model=SystemInfo, summary="Where the cloud runs",
            responses=DENIED)
def get_system(request: Request, _: Viewer) -> SystemInfo:
    """Environment, versions, and each connection (database, MLflow, artifact store) with its
    state, checked at most every few seconds."""
    state = get_state(request)
    return SystemInfo(
        environment=state.settings.env,
        started_at=_STARTED,
        versions=Versions(
            smart_maintenance=_version("smart-maintenance") or "unknown",
            python=platform.python_version(),
            fastapi=_version("fastapi") or "unknown",
            mlflow=_version("mlflow"),
        ),
        connections=_checks(request, state).get(),
    )
