"""Alerts for operators: list and filter, acknowledge, resolve with a decision, export CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from cloud.api.deps import Operator, Pool, Viewer
from cloud.operations import audit
from cloud.operations.alert_review import (
    MAX_COMMENT,
    MAX_PAGE,
    AlertPage,
    AlertView,
    Decision,
    ReviewState,
    acknowledge,
    decisions_csv,
    get_alert,
    list_alerts,
    resolve,
)
from shared.schemas import Severity
from shared.times import as_utc
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

GatewayPath = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", description="gateway id")]
AlertIdPath = Annotated[
    str, Path(pattern="^[0-9a-f-]{8,64}$", description="the alert's id on its gateway")
]
Since = Annotated[datetime | None, Query(description="inclusive; no zone = UTC")]
Until = Annotated[datetime | None, Query(description="exclusive; no zone = UTC")]
DENIED: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key"},
    403: {"description": "the key's role is too low"},
    429: {"description": "rate limit exceeded; see Retry-After"},
}


class Acknowledgement(BaseModel):
    """An operator takes an alert on."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"comment": "looking at it"}]}}

    comment: str = Field(default="", max_length=MAX_COMMENT)


class Resolution(BaseModel):
    """An operator's verdict on an alert."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"decision": "confirmed_failure", "comment": "outer race worn; bearing replaced"}]}}

    decision: Decision = Field(description="confirmed_failure, false_positive, needs_inspection")
    comment: str = Field(default="", max_length=MAX_COMMENT)


@router.get("", response_model=AlertPage, summary="Alerts, newest first", responses=DENIED)
def get_alerts(
    pool: Pool,
    _: Viewer,
    *,
    device: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    state: Annotated[ReviewState | None, Query(description="operator review state")] = None,
    severity: Severity | None = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: Annotated[str | None, Query(max_length=300, description="previous `next`")] = None,
) -> AlertPage:
    """Filter by device, review state, severity and opening time; follow ``next``."""
    with pool.connection() as conn:
        return list_alerts(
            conn, device=device, state=state, severity=severity, since=as_utc(since),
            until=as_utc(until), limit=limit, after=after,
        )


@router.get(
    "/decisions.csv",
    summary="Operator decisions as CSV",
    response_class=Response,
    responses={**DENIED, 200: {"content": {"text/csv": {"example": "gateway,alert_id,...\r\n"}}}},
)
def get_decisions_csv(pool: Pool, _: Viewer, since: Since = None, until: Until = None) -> Response:
    """Every resolved alert with its decision, resolved in [since, until)."""
    with pool.connection() as conn:
        text = decisions_csv(conn, as_utc(since), as_utc(until))
    return Response(
        text, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="alert-decisions.csv"'},
    )


@router.get(
    "/{gateway}/{alert_id}", response_model=AlertView, summary="One alert",
    responses={**DENIED, 404: {"description": "no such alert"}},
)
def get_one(pool: Pool, _: Viewer, gateway: GatewayPath, alert_id: AlertIdPath) -> AlertView:
    """The alert with its review."""
    with pool.connection() as conn:
        return get_alert(conn, gateway, alert_id)


@router.post(
    "/{gateway}/{alert_id}/acknowledge", response_model=AlertView, summary="Acknowledge",
    responses={**DENIED, 404: {"description": "no such alert"},
               409: {"description": "already acknowledged or resolved"}},
)
def post_acknowledge(
    pool: Pool, who: Operator, gateway: GatewayPath, alert_id: AlertIdPath,
    body: Acknowledgement,
) -> AlertView:
    """open → acknowledged (operator or admin); audited."""
    with pool.connection() as conn:
        return acknowledge(conn, who, gateway, alert_id, body.comment)


@router.post(
    "/{gateway}/{alert_id}/resolve", response_model=AlertView, summary="Resolve with a decision",
    responses={**DENIED, 404: {"description": "no such alert"},
               409: {"description": "already resolved"}},
)
def post_resolve(
    pool: Pool, who: Operator, gateway: GatewayPath, alert_id: AlertIdPath, body: Resolution
) -> AlertView:
    """open or acknowledged → resolved with a decision (operator or admin); audited."""
    with pool.connection() as conn:
        return resolve(
            conn, who, gateway, alert_id, decision=body.decision, comment=body.comment
        )


@router.get(
    "/{gateway}/{alert_id}/audit", response_model=list[audit.AuditEntry],
    summary="The alert's audit trail", responses=DENIED,
)
def get_audit(
    pool: Pool, _: Viewer, gateway: GatewayPath, alert_id: AlertIdPath
) -> list[audit.AuditEntry]:
    """Every review change of the alert, oldest first."""
    with pool.connection() as conn:
        return audit.entries(conn, entity="alert", entity_id=f"{gateway}/{alert_id}")
