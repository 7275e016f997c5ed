"""Gateway configuration: one pydantic-settings object, read from ``SMAINT_GATEWAY_*`` variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.schemas import GatewayId


class GatewaySettings(BaseSettings):
    """Everything the gateway service needs; the defaults run the local demo as is."""

    model_config = SettingsConfigDict(env_prefix="SMAINT_GATEWAY_", extra="ignore")

    gateway_id: GatewayId = Field(
        default="gw-demo", description="this gateway's id; also its fixed MQTT client id"
    )
    mqtt_host: str = Field(default="127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port")
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive")
    db_path: str = Field(default="var/gateway.db", description="SQLite database file")
    db_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite synchronous mode: NORMAL survives a process crash, FULL power loss too",
    )
    cloud_url: str = Field(default="http://127.0.0.1:8000", description="cloud API base URL")
    cloud_token: str = Field(
        default="", description="bearer token the cloud issued to this gateway; empty: no sync"
    )
    http_host: str = Field(default="127.0.0.1", description="local status/metrics server host")
    http_port: int = Field(default=8080, ge=0, le=65535, description="local status server port")
    batch_max: int = Field(
        default=500, ge=1, le=10_000, description="most messages stored in one transaction"
    )
    batch_wait_ms: int = Field(
        default=20, ge=0, le=10_000, description="longest wait to fill a micro-batch"
    )
    queue_max: int = Field(
        default=10_000,
        ge=1,
        description="messages held in memory before the gateway reconnects to shed load",
    )
    sync_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="pause between uploads once the outbox is empty"
    )
    sync_batch_max: int = Field(
        default=5000, ge=1, le=50_000, description="most readings in one upload"
    )
    sync_timeout_s: float = Field(default=30.0, gt=0, description="HTTP timeout per upload")
    sync_retry_attempts: int = Field(
        default=6, ge=1, description="tries per upload round before waiting a sync interval"
    )
    sync_retry_max_s: float = Field(
        default=60.0, ge=0, description="cap of the exponential back-off between tries"
    )
    sync_auth_backoff_s: float = Field(
        default=300.0, ge=0, description="pause after the cloud refuses the token (401/403)"
    )
    score_window: int = Field(default=120, ge=8, description="values per metric in the detector")
    score_warmup: int = Field(default=30, ge=4, description="values needed before scoring")
    score_threshold: float = Field(default=6.0, gt=0, description="robust |z| above: anomalous")
    alert_open_after: int = Field(
        default=3, ge=1, description="anomalous readings in a row that open an alert"
    )
    alert_resolve_after: int = Field(
        default=5, ge=1, description="normal readings in a row that resolve an open alert"
    )


def load_settings(**overrides: object) -> GatewaySettings:
    """Read the settings from the environment, with explicit overrides taking precedence."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return GatewaySettings(**given)  # type: ignore[arg-type]
