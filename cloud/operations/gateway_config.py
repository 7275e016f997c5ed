"""Desired gateway config: set by an admin (audited), carried to the gateway by every sync
answer, and shown beside what the gateway reports it applied.

The names and ranges allowed are shared.schemas.GATEWAY_CONFIG_KEYS, the list the gateway
checks against as well.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from cloud.access.users import Principal
from cloud.db.pool import Conn
from cloud.exceptions import CloudError, GatewayNotFoundError
from cloud.operations import audit
from shared.schemas import GATEWAY_CONFIG_KEYS, ConfigValue, check_gateway_config


class InvalidConfigError(CloudError):
    """A desired config names an unknown setting or an out-of-range value (HTTP 422)."""

    http_status = 422

    def __init__(self, refused: dict[str, str]) -> None:
        super().__init__("config refused: " + "; ".join(
            f"{name!r}: {reason}" for name, reason in sorted(refused.items())))
        self.refused = refused


class GatewayConfig(BaseModel):
    """A gateway's desired config beside the one it last reported applying."""

    gateway_id: str
    config_version: int = Field(description="version of the desired config")
    desired: dict[str, ConfigValue] = Field(description="settings the gateway should run")
    reported_version: int | None = Field(
        description="config version the gateway last reported applying (None: never)")
    applied: dict[str, ConfigValue] | None = Field(
        description="values the gateway reported applying (None: not reported)")
    refused: dict[str, str] = Field(description="values the gateway refused, name -> reason")
    in_sync: bool = Field(description="the gateway runs the desired version")


def get_config(conn: Conn, gateway_id: str) -> GatewayConfig:
    """The desired and reported config of ``gateway_id``; 404 if it is not registered."""
    row = conn.execute(
        "SELECT config_version, desired_config, reported_state FROM gateways"
        " WHERE gateway_id = %s", (gateway_id,)).fetchone()
    if row is None:
        raise GatewayNotFoundError(gateway_id)
    version, desired, reported = row[0], row[1], row[2] or {}
    reported_version = reported.get("config_version")
    return GatewayConfig(
        gateway_id=gateway_id, config_version=version, desired=desired,
        reported_version=reported_version, applied=reported.get("config"),
        refused=reported.get("config_refused") or {},
        in_sync=reported_version == version)


def set_config(conn: Conn, who: Principal, gateway_id: str,
               changes: dict[str, Any]) -> GatewayConfig:
    """Merge ``changes`` into the desired config (None removes a setting), bump its version."""
    good, refused = check_gateway_config({k: v for k, v in changes.items() if v is not None})
    refused.update(check_gateway_config({k: 0 for k, v in changes.items()
                                         if v is None and k not in GATEWAY_CONFIG_KEYS})[1])
    if refused:
        raise InvalidConfigError(refused)
    with conn.transaction():
        row = conn.execute(
            "SELECT config_version, desired_config FROM gateways WHERE gateway_id = %s"
            " FOR UPDATE", (gateway_id,)).fetchone()
        if row is None:
            raise GatewayNotFoundError(gateway_id)
        before = {"config_version": row[0], "config": row[1]}
        removed = {k for k, v in changes.items() if v is None}
        config = {k: v for k, v in {**row[1], **good}.items() if k not in removed}
        version = row[0] + 1
        conn.execute("UPDATE gateways SET desired_config = %s, config_version = %s"
                     " WHERE gateway_id = %s", (Jsonb(config), version, gateway_id))
        audit.record(conn, who.name, "gateway.config", "gateway", gateway_id, before=before,
                     after={"config_version": version, "config": config})
    return get_config(conn, gateway_id)

