"""Gateway configuration: one pydantic-settings object in sections, from ``SMAINT_GATEWAY_*``.

A section's setting is ``SMAINT_GATEWAY_<SECTION>__<NAME>`` in the environment (e.g.
``SMAINT_GATEWAY_MQTT__HOST``) and ``[<section>] <name>`` in the optional TOML file
(``SMAINT_GATEWAY_CONFIG=/etc/smaint/gateway.toml`` or ``--config``). Explicit arguments
override the environment, which overrides the file, which overrides the defaults. An unknown
variable or file key is an error that names it (shared/config.py): a typo never runs silently
on a default.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.config import LoggingSettings, check_environment, check_mapping
from shared.schemas import GatewayId

ENV_PREFIX = "SMAINT_GATEWAY_"
CONFIG_ENV = "SMAINT_GATEWAY_CONFIG"
# The TOML file of the settings object being built; a context variable because pydantic-settings
# asks the class, not the instance, for its sources.
_config_file: ContextVar[Path | None] = ContextVar("_config_file", default=None)


class ConfigFileError(ValueError):
    """The configured TOML file is missing or unreadable."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(_Section):
    """The broker the devices publish to."""

    host: str = Field(default="127.0.0.1", description="MQTT broker host")
    port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive")
    username: str = Field(
        default="", description="the gateway's broker account; empty: connect without one")
    password: str = Field(default="", description="the gateway account's password")
    password_file: str = Field(
        default="",
        description="file holding the gateway account's password (`smaint provision broker` "
                    "writes it); used when password is empty")
    tls_ca_file: str = Field(
        default="",
        description="CA certificate to verify the broker with over TLS; empty: plain TCP "
                    "(the loopback listener)")

    def secret(self) -> str | None:
        """The password to log in with: ``password``, else ``password_file``'s, else none."""
        if self.password:
            return self.password
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigFileError(
                    f"mqtt.password_file {self.password_file}: {exc.strerror}; "
                    "`smaint provision broker` writes it") from exc
        return None


class IngestSettings(_Section):
    """Micro-batching of incoming messages and device clock checks."""

    batch_max: int = Field(
        default=500, ge=1, le=10_000, description="most messages stored in one transaction"
    )
    batch_wait_ms: int = Field(
        default=20, ge=0, le=10_000, description="longest wait to fill a micro-batch"
    )
    queue_max: int = Field(
        default=10_000, ge=1,
        description="messages held in memory before the gateway reconnects to shed load",
    )
    skew_tolerance_ms: int = Field(
        default=120_000, ge=0,
        description="device clock further than this from the gateway's estimate: flagged, re-timed",
    )


class StorageSettings(_Section):
    """The SQLite database, its disk budget and degraded mode."""

    path: str = Field(default="var/gateway.db", description="SQLite database file")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite synchronous mode: NORMAL survives a process crash, FULL power loss too",
    )
    max_mb: float = Field(
        default=0.0, ge=0,
        description="disk budget of the database in MiB (0: none); retention keeps it under",
    )
    low_water: float = Field(
        default=0.9, gt=0, lt=1, description="retention frees space down to this share of budget"
    )
    retention_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="pause between two disk-budget checks"
    )
    degraded_retry_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="pause between two write probes while the database cannot be written",
    )


class SyncSettings(_Section):
    """Uploads to the cloud."""

    cloud_url: str = Field(default="http://127.0.0.1:8000", description="cloud API base URL")
    token: str = Field(
        default="",
        description="bearer token the cloud issued to this gateway (never rotated by the "
                    "gateway); empty: the token file, or enrol with enrol_code",
    )
    enrol_code: str = Field(
        default="",
        description="one-time code from `smaint cloud gateway enrol ID`: exchanged at first "
                    "contact for the token, which is then kept in token_file",
    )
    token_file: str = Field(
        default="",
        description="file the enrolled (and rotated) token is kept in, mode 0600; empty: "
                    "'cloud-token' next to the database",
    )
    interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="pause between uploads once the outbox is empty"
    )
    heartbeat_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="with nothing to upload for this long, an empty batch carries the "
                    "gateway's state up and the cloud's decisions down (and keeps it online)"
    )
    batch_max: int = Field(default=5000, ge=1, le=50_000, description="most readings in one upload")
    backlog_max: int = Field(
        default=5000, ge=1, le=50_000,
        description="most catch-up (backlog or backfill) readings sent per sync cycle, so that "
                    "draining an outage never starves the live batch",
    )
    catchup_after: int = Field(
        default=0, ge=0,
        description="unsent readings beyond which sync splits live (newest) and backlog "
                    "(oldest, marked replay); 0 = twice batch_max",
    )
    encoding: Literal["columnar-zstd", "json-gzip"] = Field(
        default="columnar-zstd", description="upload body: columnar JSON + zstd, or row JSON + gzip"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="HTTP timeout per upload")
    retry_attempts: int = Field(
        default=6, ge=1, description="tries per upload round before waiting a sync interval"
    )
    retry_max_s: float = Field(
        default=60.0, ge=0, description="cap of the exponential back-off between tries"
    )
    auth_backoff_s: float = Field(
        default=300.0, ge=0, description="pause after the cloud refuses the token (401/403)"
    )


class ScoringSettings(_Section):
    """The rules every device is scored with, and the signed ONNX models combined with them."""

    warmup: int = Field(
        default=150, ge=2, le=100_000,
        description="readings a new device's feature state learns from before it is scored")
    threshold: float = Field(
        default=1.0, gt=0,
        description="score above which a reading is anomalous (scores are normalised: 1.0 is "
                    "each rule's and each model's calibrated limit; raise it to be less "
                    "sensitive)")
    models_dir: str = Field(
        default="",
        description="directory of signed model bundles <profile>.smb; empty: 'models' next to "
                    "the database",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="base64 Ed25519 public keys whose model bundles are trusted (JSON list)",
    )
    trusted_keys_file: str = Field(
        default="",
        description="file of trusted base64 public keys, one per line; must lie outside "
                    "models_dir (whoever can drop a bundle there must not drop a key too)",
    )
    model_poll_s: float = Field(
        default=2.0, gt=0, le=3600, description="how often models_dir is checked for new bundles"
    )


class RolloutSettings(_Section):
    """Model rollout over the air (edge.rollout): shadow run, alert-rate bound, retries."""

    shadow_readings: int = Field(
        default=200, ge=1, le=1_000_000,
        description="readings a new model scores in shadow (and is watched for after the swap)",
    )
    max_alert_rate: float = Field(
        default=0.2, gt=0, le=1,
        description="highest shadow alert rate accepted when a bundle's manifest sets no bound",
    )
    retry_s: float = Field(
        default=30.0, gt=0, le=3600, description="pause before retrying a failed bundle download"
    )
    max_run_failures: int = Field(
        default=2, ge=1, le=1000,
        description="batches a swapped-in model may fail to score before it is rolled back",
    )


class AlertSettings(_Section):
    """When alerts open and resolve, and whether they are published."""

    # One anomalous reading opens an alert (the detector is built to fire early, once per
    # episode); twenty normal ones in a row resolve it and re-arm the device.
    open_after: int = Field(
        default=1, ge=1, description="anomalous readings in a row that open an alert"
    )
    resolve_after: int = Field(
        default=20, ge=1, description="normal readings in a row that resolve an open alert"
    )
    publish: bool = Field(
        default=True, description="publish alert changes on smaint/v1/gw/<gateway>/alerts"
    )


class HttpSettings(_Section):
    """The local status/metrics server."""

    host: str = Field(default="127.0.0.1", description="local status/metrics server host")
    port: int = Field(default=8080, ge=0, le=65535, description="local status server port")
    api_token: str = Field(
        default="",
        description="bearer token that state-changing /api requests (alert ack) must carry; "
                    "empty: the token in api_token_file, made at first start",
    )
    api_token_file: str = Field(
        default="",
        description="file holding the local API token (mode 0600); empty: 'api-token' next "
                    "to the database",
    )


class PanelSettings(_Section):
    """The local web panel (ui/panel), served by the gateway's HTTP server when installed."""

    enabled: bool = Field(
        default=True,
        description="serve the panel at / when the ui extra (nicegui) is installed",
    )
    password_hash: str = Field(
        default="",
        description="scrypt hash of the panel password from provisioning (`smaint panel "
                    "hash-password`); empty: the hash file, or a first-start setup code",
    )
    password_file: str = Field(
        default="",
        description="file holding the password hash set on the panel; empty: "
                    "'panel-password' next to the database",
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="a login lasts this long"
    )
    refresh_s: float = Field(
        default=2.0, ge=0.2, le=60, description="how often open panel views refresh"
    )


class SimulationSettings(_Section):
    """Simulated devices (the demo, a lab): scenario requests from the panel and the cloud."""

    enabled: bool = Field(
        default=False,
        description="this site runs simulated devices: the panel offers SIMULATED scenarios "
                    "(spike, drift, stuck, noise) and cloud requests are published to them; "
                    "false on a real plant: no button, cloud requests refused",
    )


class BrokerSettings(_Section):
    """The broker's accounts and TLS files, kept by the gateway (`smaint provision`)."""

    dir: str = Field(
        default="",
        description="directory the broker reads its password files, ACLs and TLS files from; "
                    "empty: 'broker' next to the database")
    ca_dir: str = Field(
        default="", description="directory of the site CA; empty: 'site-ca' next to the database")
    pid_file: str = Field(
        default="",
        description="the broker's pid file, signalled to reload accounts; empty: "
                    "mosquitto.pid in the broker directory")
    reload: Literal["signal", "watcher"] = Field(
        default="signal",
        description="how account changes reach the broker: 'signal' sends it SIGHUP (same "
                    "machine or pid namespace); 'watcher': the broker's container reloads "
                    "itself when the account files change (deploy/mosquitto/run.sh)")
    device_host: str = Field(
        default="",
        description="host name or address devices reach the broker at (provisioning files, "
                    "broker certificate); empty: this machine's host name")
    device_port: int = Field(default=8883, ge=1, le=65535,
                             description="the broker's TLS listener for devices")
    cert_names: list[str] = Field(
        default_factory=list,
        description="more names/addresses the broker certificate is valid for (JSON list)")


class GatewaySettings(BaseSettings):
    """Everything the gateway service needs; the defaults run the local demo as is."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    gateway_id: GatewayId = Field(
        default="gw-demo", description="this gateway's id; also its fixed MQTT client id"
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    panel: PanelSettings = Field(default_factory=PanelSettings)
    simulation: SimulationSettings = Field(default_factory=SimulationSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @property
    def models_path(self) -> Path:
        """Where model bundles are read from (models_dir, or 'models' beside the database)."""
        if self.scoring.models_dir:
            return Path(self.scoring.models_dir)
        return Path(self.storage.path).resolve().parent / "models"

    @model_validator(mode="after")
    def _keys_apart_from_bundles(self) -> GatewaySettings:
        keys = self.scoring.trusted_keys_file
        if keys:
            models = self.models_path.resolve()
            if Path(keys).resolve().is_relative_to(models):
                raise ValueError(
                    f"scoring.trusted_keys_file ({keys}) lies inside the models directory "
                    f"({models}), which holds the bundles it verifies: keep it elsewhere, "
                    "writable by the operator only")
        return self

    @property
    def cloud_token_path(self) -> Path:
        """Where an enrolled cloud token is kept (sync.token_file or beside the db)."""
        if self.sync.token_file:
            return Path(self.sync.token_file)
        return Path(self.storage.path).resolve().parent / "cloud-token"

    @property
    def api_token_path(self) -> Path:
        """Where the local API token is kept (api_token_file or 'api-token' beside the db)."""
        if self.http.api_token_file:
            return Path(self.http.api_token_file)
        return Path(self.storage.path).resolve().parent / "api-token"

    @property
    def panel_password_path(self) -> Path:
        """Where the panel keeps the password hash set on it (password_file or beside the db)."""
        if self.panel.password_file:
            return Path(self.panel.password_file)
        return Path(self.storage.path).resolve().parent / "panel-password"

    def _beside_db(self, name: str) -> Path:
        return Path(self.storage.path).resolve().parent / name

    @property
    def broker_dir(self) -> Path:
        """Where the broker's accounts, ACLs and TLS files are kept."""
        return Path(self.broker.dir) if self.broker.dir else self._beside_db("broker")

    @property
    def ca_dir(self) -> Path:
        """Where the site CA is kept."""
        return Path(self.broker.ca_dir) if self.broker.ca_dir else self._beside_db("site-ca")

    @property
    def broker_pid_file(self) -> Path:
        """The broker's pid file (signalled to reload accounts)."""
        return Path(self.broker.pid_file) if self.broker.pid_file else (
            self.broker_dir / "mosquitto.pid")

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
        check_environment(settings_cls, ENV_PREFIX, os.environ, allowed={CONFIG_ENV})
        named = os.environ.get(CONFIG_ENV)
        path = _config_file.get() or (Path(named) if named else None)
        if path is None:
            return (init_settings, env_settings)
        toml = TomlConfigSettingsSource(settings_cls, path)
        check_mapping(settings_cls, toml.toml_data, f"in {path}")
        return (init_settings, env_settings, toml)


def load_settings(config: str | Path | None = None, **overrides: object) -> GatewaySettings:
    """Read the settings: explicit overrides, then the environment, then the TOML file if any.

    ``config`` (or ``SMAINT_GATEWAY_CONFIG``) names the TOML file; a missing file is an error
    rather than silently running on defaults. ``overrides`` use the settings' shape
    (``mqtt={"port": 1884}``); None values are left out.
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
