"""Drift events: devices whose recent features moved away from their model's training data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import Pool, Viewer
from cloud.api.routes.alerts import DENIED
from cloud.drift.check import DriftEvent, list_events
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["drift"])


@router.get("/drift/events", response_model=list[DriftEvent],
            summary="Drift events, newest first", responses=DENIED)
def get_drift_events(
    pool: Pool,
    _: Viewer,
    device: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    profile: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    since: Annotated[datetime | None, Query(description="only events recorded from then on")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DriftEvent]:
    """Per event: the features that moved and their scores, and the retraining's gate decision."""
    with pool.connection() as conn:
        return list_events(conn, device=device, profile=profile, since=since, limit=limit)
