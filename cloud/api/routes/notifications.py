"""Notification delivery attempts and the background job table, for operators."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cloud.api.deps import Admin, Pool, Viewer
from cloud.api.routes.alerts import DENIED
from cloud.background.jobs import JobInfo, list_jobs
from cloud.background.notify import Delivery, list_deliveries
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications", response_model=list[Delivery],
            summary="Notification delivery attempts, newest first", responses=DENIED)
def get_deliveries(
    pool: Pool,
    _: Viewer,
    gateway: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    alert_id: Annotated[str | None, Query(pattern="^[0-9a-f-]{8,64}$")] = None,
    ok: Annotated[bool | None, Query(description="only successes (true) or failures")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Delivery]:
    """Every attempt to email or post an alert: when, by which worker, and how it went."""
    with pool.connection() as conn:
        return list_deliveries(conn, gateway=gateway, alert_id=alert_id, ok=ok, limit=limit)


@router.get("/jobs", response_model=list[JobInfo], summary="Background jobs, newest first",
            responses=DENIED)
def get_jobs(
    pool: Pool,
    _: Admin,
    status: Literal["queued", "running", "done", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobInfo]:
    """Jobs with their attempts, lease holder and last error."""
    with pool.connection() as conn:
        return list_jobs(conn, status=status, limit=limit)
