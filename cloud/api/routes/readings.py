"""Read endpoints: a device's raw readings (keyset pages), the device registry, totals."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import Pool
from cloud.query import MAX_PAGE, DeviceList, ReadingsPage, Stats, list_devices, readings_page
from cloud.query import stats as query_stats
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["data"])


@router.get("/readings", response_model=ReadingsPage, summary="One device's raw readings")
def get_readings(
    pool: Pool,
    *,
    device: Annotated[str, Query(pattern=f"^{ID_PATTERN}$", description="device id")],
    since: Annotated[datetime | None, Query(description="inclusive; no zone = UTC")] = None,
    until: Annotated[datetime | None, Query(description="exclusive; no zone = UTC")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = 1000,
    after: Annotated[
        str | None, Query(max_length=100, description="the `next` cursor of the previous page")
    ] = None,
) -> ReadingsPage:
    """Readings ordered by (ts, boot, seq); follow ``next`` until it is null."""
    with pool.connection() as conn:
        return readings_page(conn, device, since=since, until=until, limit=limit, after=after)


@router.get("/devices", response_model=DeviceList, summary="The device registry")
def get_devices(pool: Pool) -> DeviceList:
    """Every device that has synced readings, with last-seen time and reading count."""
    with pool.connection() as conn:
        return list_devices(conn)


@router.get("/stats", response_model=Stats, summary="Reading and device totals")
def get_stats(pool: Pool) -> Stats:
    """Totals; ``readings == distinct_readings`` shows no reading was stored twice."""
    with pool.connection() as conn:
        return query_stats(conn)
