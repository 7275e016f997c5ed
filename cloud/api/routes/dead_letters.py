"""``GET /api/v1/dead-letters``: readings the cloud refused to store (implausible timestamps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import Operator, Pool
from cloud.api.routes.alerts import DENIED
from cloud.ingest.plausibility import IngestDeadLetter, listing
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["sync"])


@router.get("/dead-letters", response_model=list[IngestDeadLetter],
            summary="Readings not stored, newest first", responses=DENIED)
def get_dead_letters(
    pool: Pool,
    _: Operator,
    gateway: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[IngestDeadLetter]:
    """Readings dead-lettered at ingest (timestamp outside the plausible window), with why."""
    with pool.connection() as conn:
        return listing(conn, gateway=gateway, limit=limit)
