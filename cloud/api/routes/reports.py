"""Reports for a time range: the fleet health report (JSON, CSV, HTML), and the range report
of one device or the fleet (JSON, CSV, HTML, PDF; with charts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response

from cloud.api.deps import Pool, Viewer
from cloud.api.routes.alerts import DENIED, Since, Until
from cloud.query import range_report
from cloud.query.range_report import RangeError, RangeReport
from cloud.query.report_formats import RENDERERS, filename
from cloud.query.reports import MAX_DAYS, FleetReport, fleet_health, to_csv, to_html
from shared.times import as_utc
from shared.topics import ID_PATTERN

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


@router.get(
    "/devices",
    summary="Range report of one device or the fleet",
    response_model=RangeReport,
    responses={
        **DENIED,
        200: {"content": {"text/csv": {"example": "device,type,gateway,metric,...\r\n"},
                          "text/html": {"example": "<!doctype html>..."},
                          "application/pdf": {"example": "%PDF-1.3 ..."}}},
        404: {"description": "no such device"},
        422: {"description": "an empty range, one over 31 days, or a fleet over 200 devices"},
    },
)
def get_range_report(
    pool: Pool,
    _: Viewer,
    since: Since = None,
    until: Until = None,
    device: Annotated[str | None, Query(
        pattern=f"^{ID_PATTERN}$", description="one device; omit for the whole fleet")] = None,
    fmt: Annotated[
        Literal["json", "csv", "html", "pdf"],
        Query(alias="format", description="json, csv, html or pdf"),
    ] = "json",
) -> Response | RangeReport:
    """Per device: min/mean/max per metric, data completeness, alerts with their decisions,
    maintenance orders and a chart per metric; default the last 7 days, at most 31."""
    end = as_utc(until) or datetime.now(UTC)
    start = as_utc(since) or end - timedelta(days=_DEFAULT_DAYS)
    try:
        start, end = range_report.bounds(start, end)
        with pool.connection() as conn:
            report = range_report.build(conn, start, end, device)
    except RangeError as exc:
        raise HTTPException(422, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    if fmt == "json":
        return report
    media_type, render = RENDERERS[fmt]
    disposition = "inline" if fmt == "html" else "attachment"
    return Response(render(report), media_type=media_type, headers={
        "Content-Disposition": f'{disposition}; filename="{filename(report, fmt)}"'})
