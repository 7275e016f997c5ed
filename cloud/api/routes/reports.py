"""The fleet health report for a time range, as JSON, CSV or HTML with SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response

from cloud.api.deps import Pool, Viewer
from cloud.api.routes.alerts import DENIED, Since, Until
from cloud.query.reports import MAX_DAYS, FleetReport, fleet_health, to_csv, to_html
from shared.times import as_utc

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

_DEFAULT_DAYS = 7


@router.get(
    "/fleet-health",
    summary="Fleet health report",
    response_model=FleetReport,
    responses={
        **DENIED,
        200: {"content": {"text/csv": {"example": "device,readings,...\r\n"},
                          "text/html": {"example": "<!doctype html>..."}}},
        422: {"description": "until before since, or a range over 366 days"},
    },
)
def get_fleet_health(
    pool: Pool,
    _: Viewer,
    since: Since = None,
    until: Until = None,
    fmt: Annotated[
        Literal["json", "csv", "html"], Query(alias="format", description="json, csv or html")
    ] = "json",
) -> Response | FleetReport:
    """Per device: readings, anomalous share, alerts, open orders; default the last 7 days."""
    end = as_utc(until) or datetime.now(UTC)
    start = as_utc(since) or end - timedelta(days=_DEFAULT_DAYS)
    if not timedelta(0) < end - start <= timedelta(days=MAX_DAYS):
        raise HTTPException(422, f"need since < until, at most {MAX_DAYS} days apart")
    with pool.connection() as conn:
        report = fleet_health(conn, start, end)
    stamp = f"{start:%Y%m%d}-{end:%Y%m%d}"
    if fmt == "csv":
        return Response(to_csv(report), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="fleet-health-{stamp}.csv"'})
    if fmt == "html":
        return Response(to_html(report), media_type="text/html; charset=utf-8", headers={
            "Content-Disposition": f'inline; filename="fleet-health-{stamp}.html"'})
    return report
