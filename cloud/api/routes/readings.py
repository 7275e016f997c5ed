"""Read endpoints: a device's raw readings (keyset pages), the device registry, totals."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError

from cloud.api.deps import Pool, require_role
from cloud.query.readings import (
    MAX_BUCKET_DEVICES,
    MAX_PAGE,
    BucketSeries,
    DeviceList,
    GatewayInfo,
    ReadingsPage,
    Stats,
    bucketed,
    list_devices,
    list_gateways,
    readings_page,
)
from cloud.query.readings import stats as query_stats
from shared.schemas import Origin
from shared.topics import ID_PATTERN

ID_RE = re.compile(ID_PATTERN)

# Reading fleet data needs at least a viewer's API key.
router = APIRouter(prefix="/api/v1", tags=["data"], dependencies=[Depends(require_role("viewer"))])


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
    origin: Annotated[Origin | None, Query(
        description="only readings of this origin (manual: a technician's entries)")] = None,
) -> ReadingsPage:
    """Readings ordered by (ts, boot, seq); follow ``next`` until it is null."""
    with pool.connection() as conn:
        return readings_page(conn, device, since=since, until=until, limit=limit, after=after,
                             origin=origin)


@router.get("/readings/buckets", response_model=BucketSeries,
            summary="A metric bucketed (min/max/avg) for charts, from the rollups")
def get_buckets(
    pool: Pool,
    *,
    device: Annotated[list[str], Query(
        min_length=1, max_length=MAX_BUCKET_DEVICES, description="device ids (repeatable)")],
    metric: Annotated[str, Query(pattern="^[a-z][a-z0-9_]{0,63}$", description="metric name")],
    since: Annotated[datetime | None, Query(
        description="inclusive; no zone = UTC; omitted: an hour before `until`")] = None,
    until: Annotated[datetime | None, Query(
        description="exclusive; no zone = UTC; omitted: now")] = None,
    width_s: Annotated[int | None, Query(
        ge=60, le=31_536_000, multiple_of=60,
        description="bucket width in seconds; omitted: the narrowest of 1 min, 5 min, 15 min, "
                    "1 h, 6 h, 1 d, 7 d, 30 d, 365 d giving at most 300 buckets")] = None,
) -> BucketSeries:
    """Per device and bucket starting in [since, until): min, max, mean, count of a metric."""
    for d in device:
        if not ID_RE.fullmatch(d):
            raise RequestValidationError([{"loc": ("query", "device"), "msg": "bad device id",
                                           "type": "value_error"}])
    with pool.connection() as conn:
        return bucketed(conn, device, metric, since=since, until=until, width_s=width_s)


@router.get("/gateways", response_model=list[GatewayInfo], summary="The gateway registry")
def get_gateways(pool: Pool) -> list[GatewayInfo]:
    """Every gateway with last sync, online flag and the actual state it reported."""
    with pool.connection() as conn:
        return list_gateways(conn)


@router.get("/devices", response_model=DeviceList, summary="The device registry")
def get_devices(pool: Pool) -> DeviceList:
    """Every device that has synced readings or aggregates, with last-seen time and the
    number of readings stored (a counter kept by ingest)."""
    with pool.connection() as conn:
        return list_devices(conn)


@router.get("/stats", response_model=Stats, summary="Reading and device totals")
def get_stats(pool: Pool) -> Stats:
    """Totals kept by ingest; ``readings == distinct_readings`` shows no reading was stored
    twice."""
    with pool.connection() as conn:
        return query_stats(conn)
