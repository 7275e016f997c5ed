"""Gateway enrolment and token rotation (cloud.access.gateway_tokens).

``POST /api/v1/enrol`` is the gateway's first contact: a one-time code for a token.
``POST /api/v1/sync/token`` is a gateway fetching its rotated token. An admin issues codes
(``POST /api/v1/gateways/{id}/enrolment``) and asks for rotations
(``POST /api/v1/gateways/{id}/rotation``); every step is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from cloud.access import gateway_tokens
from cloud.api.deps import (
    Admin,
    GatewayIdentityAuth,
    Pool,
    State,
    client_address_of,
    count_failure,
    get_state,
    refuse_if_throttled,
)
from cloud.api.routes.alerts import DENIED
from cloud.exceptions import AuthError
from shared.schemas import GatewayId
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["sync"])
GatewayPath = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", description="gateway id")]


class Enrolment(BaseModel):
    """A gateway's first contact: its id and the one-time code an admin gave it."""

    model_config = {"extra": "forbid"}

    gateway: GatewayId
    code: str = Field(max_length=256)


class GatewayToken(BaseModel):
    """A gateway's token: keep it private (the gateway stores it mode 0600)."""

    gateway: str
    token: str = Field(description="send as `Authorization: Bearer <token>`")


class EnrolmentCode(BaseModel):
    """A one-time code to give the gateway (SMAINT_GATEWAY_SYNC__ENROL_CODE)."""

    gateway: str
    code: str
    expires_in_s: float


@router.post("/enrol", response_model=GatewayToken, summary="Exchange an enrolment code",
             responses={401: {"description": "unknown, used or expired code"},
                        429: {"description": "too many failed attempts from this address"}})
def post_enrol(request: Request, body: Enrolment) -> GatewayToken:
    """The gateway's token for its one-time enrolment code (valid once, until it expires)."""
    state, address = get_state(request), client_address_of(request)
    refuse_if_throttled(state, address)
    try:
        with state.db().connection() as conn:
            token = gateway_tokens.enrol(conn, body.gateway, body.code)
    except AuthError:
        count_failure(state, address)
        raise
    return GatewayToken(gateway=body.gateway, token=token)


@router.post("/sync/token", response_model=GatewayToken, summary="Rotate this gateway's token",
             responses={401: {"description": "missing, unknown or revoked gateway token"}})
def post_rotate(pool: Pool, state: State, who: GatewayIdentityAuth) -> GatewayToken:
    """A new token; the one this request carried stays valid for api.token_overlap_s."""
    with pool.connection() as conn:
        token = gateway_tokens.rotate(conn, who, state.settings.api.token_overlap_s)
    return GatewayToken(gateway=who.gateway_id, token=token)


@router.post("/gateways/{gateway_id}/enrolment", response_model=EnrolmentCode, status_code=201,
             summary="Issue a one-time enrolment code", responses=DENIED)
def post_enrolment(pool: Pool, state: State, who: Admin, gateway_id: GatewayPath
                   ) -> EnrolmentCode:
    """A code the gateway exchanges for its token at first contact (audited)."""
    ttl = state.settings.api.enrolment_ttl_s
    with pool.connection() as conn:
        code = gateway_tokens.issue_enrolment(conn, gateway_id, ttl, actor=who.name)
    return EnrolmentCode(gateway=gateway_id, code=code, expires_in_s=ttl)


@router.post("/gateways/{gateway_id}/rotation", status_code=202, response_class=Response,
             summary="Ask a gateway to rotate its token",
             responses={**DENIED, 404: {"description": "no such (unrevoked) gateway"}})
def post_rotation(pool: Pool, who: Admin, gateway_id: GatewayPath) -> Response:
    """The gateway's next sync answer tells it to fetch a new token (audited)."""
    with pool.connection() as conn:
        gateway_tokens.request_rotation(conn, gateway_id, actor=who.name)
    return Response(status_code=202)
