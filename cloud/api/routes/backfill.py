"""Backfill: an admin asks a gateway to upload a time range again (after a cloud restore)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field, model_validator

from cloud.api.deps import Admin, Pool
from cloud.ingest.batch import request_backfill
from cloud.operations import audit
from shared.times import as_utc
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["sync"])

GatewayId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", description="gateway id")]


class BackfillCreate(BaseModel):
    """The time range to upload again (reading time, [since, until))."""

    since: datetime = Field(description="inclusive start (ISO 8601; no zone means UTC)",
                            examples=["2026-11-20T00:00:00Z"])
    until: datetime = Field(description="exclusive end", examples=["2026-11-21T00:00:00Z"])

    @model_validator(mode="after")
    def _ordered(self) -> BackfillCreate:
        for name in ("since", "until"):
            value = getattr(self, name)
            setattr(self, name, as_utc(value))
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class BackfillQueued(BaseModel):
    """The queued request; the gateway picks it up with its next sync answer."""

    id: int
    gateway: str


@router.post(
    "/gateways/{gateway}/backfill", response_model=BackfillQueued, status_code=202,
    summary="Ask a gateway to upload a time range again",
    responses={404: {"description": "no such gateway"}},
)
def post_backfill(pool: Pool, who: Admin, gateway: GatewayId,
                  body: BackfillCreate) -> BackfillQueued:
    """Queue a backfill; re-sent readings are idempotent, so asking twice is harmless."""
    with pool.connection() as conn:
        try:
            req = request_backfill(conn, gateway, body.since, body.until)
        except ValueError as exc:  # a datetime PostgreSQL cannot hold
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        with conn.transaction():
            audit.record(conn, who.name, "backfill.request", "gateway", gateway, before=None,
                         after={"id": req, "since": body.since.isoformat(),
                                "until": body.until.isoformat()})
    return BackfillQueued(id=req, gateway=gateway)
