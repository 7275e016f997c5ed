"""Desired gateway config: admins set it, viewers see it beside what the gateway applied."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from cloud.api.deps import Admin, Pool, Viewer
from cloud.api.routes.alerts import DENIED, GatewayPath
from cloud.operations.gateway_config import GatewayConfig, get_config, set_config
from shared.schemas import GATEWAY_CONFIG_KEYS

router = APIRouter(prefix="/api/v1", tags=["gateways"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such gateway"}}

ConfigChanges = Annotated[
    dict[str, Any],
    Body(max_length=len(GATEWAY_CONFIG_KEYS) * 2,
         description="setting -> value (null removes it); known settings: "
                     + ", ".join(sorted(GATEWAY_CONFIG_KEYS)),
         examples=[{"scoring.threshold": 9.0, "alerts.open_after": 5}]),
]


@router.get("/gateways/{gateway_id}/config", response_model=GatewayConfig,
            summary="A gateway's desired and applied config",
            responses={**DENIED, **_NOT_FOUND})
def get_gateway_config(pool: Pool, _: Viewer, gateway_id: GatewayPath) -> GatewayConfig:
    """Desired version and values, and what the gateway last reported applying."""
    with pool.connection() as conn:
        return get_config(conn, gateway_id)


@router.put("/gateways/{gateway_id}/config", response_model=GatewayConfig,
            summary="Change a gateway's desired config",
            responses={**DENIED, **_NOT_FOUND,
                       422: {"description": "unknown setting or value out of range"}})
def put_gateway_config(pool: Pool, who: Admin, gateway_id: GatewayPath,
                       body: ConfigChanges) -> GatewayConfig:
    """Merge the changes, bump config_version (the next sync answer carries it); audited."""
    with pool.connection() as conn:
        return set_config(conn, who, gateway_id, body)
