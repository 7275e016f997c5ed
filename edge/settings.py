"""Gateway configuration: one pydantic-settings object, read from ``SMAINT_GATEWAY_*`` variables.

An optional TOML file (``SMAINT_GATEWAY_CONFIG=/etc/smaint/gateway.toml`` or ``--config``) holds
the same keys as the variables, lower-cased and without the prefix; explicit arguments override
the environment, which overrides the file, which overrides the defaults.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.schemas import GatewayId

CONFIG_ENV = "SMAINT_GATEWAY_CONFIG"
# The TOML file of the settings object being built; a context variable because pydantic-settings
# asks the class, not the instance, for its sources.
_config_file: ContextVar[Path | None] = ContextVar("_config_file", default=None)


class ConfigFileError(ValueError):
    """The configured TOML file is missing or unreadable."""


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
    sync_backlog_max: int = Field(
        default=5000, ge=1, le=50_000,
        description="most catch-up (backlog or backfill) readings sent per sync cycle, so that "
                    "draining an outage never starves the live batch",
    )
    sync_catchup_after: int = Field(
        default=0, ge=0,
        description="unsent readings beyond which sync splits live (newest) and backlog "
                    "(oldest, marked replay); 0 = twice sync_batch_max",
    )
    sync_encoding: Literal["columnar-zstd", "json-gzip"] = Field(
        default="columnar-zstd", description="upload body: columnar JSON + zstd, or row JSON + gzip"
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
    models_dir: str = Field(
        default="",
        description="directory of signed model bundles <profile>.smb; empty: 'models' next to "
                    "the database",
    )
    model_trusted_keys: list[str] = Field(
        default_factory=list,
        description="base64 Ed25519 public keys whose model bundles are trusted (JSON list)",
    )
    model_trusted_keys_file: str = Field(
        default="", description="file of trusted base64 public keys, one per line"
    )
    model_poll_s: float = Field(
        default=2.0, gt=0, le=3600, description="how often models_dir is checked for new bundles"
    )
    alert_publish: bool = Field(
        default=True, description="publish alert changes on smaint/v1/gw/<gateway>/alerts"
    )

    @property
    def models_path(self) -> Path:
        """Where model bundles are read from (models_dir, or 'models' beside the database)."""
        if self.models_dir:
            return Path(self.models_dir)
        return Path(self.db_path).resolve().parent / "models"
    skew_tolerance_ms: int = Field(
        default=120_000, ge=0,
        description="device clock further than this from the gateway's estimate: flagged, re-timed",
    )
    db_max_mb: float = Field(
        default=0.0, ge=0,
        description="disk budget of the database in MiB (0: none); retention keeps it under",
    )
    retention_low_water: float = Field(
        default=0.9, gt=0, lt=1, description="retention frees space down to this share of budget"
    )
    retention_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="pause between two disk-budget checks"
    )
    degraded_retry_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="pause between two write probes while the database cannot be written",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="root log level of `run`"
    )
    log_json: bool = Field(default=False, description="log JSON lines instead of text")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``SMAINT_GATEWAY_*`` variables, then the TOML file if one is set."""
        named = os.environ.get(CONFIG_ENV)
        path = _config_file.get() or (Path(named) if named else None)
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))


def load_settings(config: str | Path | None = None, **overrides: object) -> GatewaySettings:
    """Read the settings: explicit overrides, then the environment, then the TOML file if any.

    ``config`` (or ``SMAINT_GATEWAY_CONFIG``) names the TOML file; a missing file is an error
    rather than silently running on defaults.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    named = config or os.environ.get(CONFIG_ENV) or None
    path = Path(named) if named else None
    if path is not None and not path.is_file():
        raise ConfigFileError(f"gateway config file {path} does not exist")
    token = _config_file.set(path)
    try:
        return GatewaySettings(**given)  # type: ignore[arg-type]
    finally:
        _config_file.reset(token)
