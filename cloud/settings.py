"""Cloud service settings in sections, from ``SMAINT_CLOUD_*`` environment variables.

A section's setting is ``SMAINT_CLOUD_<SECTION>__<NAME>`` (e.g. ``SMAINT_CLOUD_DB__DSN``).
An unknown ``SMAINT_CLOUD_*`` variable is an error that names it (shared/config.py), so a typo
never runs silently on a default.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cloud.access.client_address import parse_networks
from cloud.artifacts.config import ArtifactStoreConfig
from cloud.drift.config import DriftConfig
from cloud.ingest.limits import EARLIEST, IngestLimits
from cloud.training.config import TrainingConfig
from shared.config import LoggingSettings, check_environment

ENV_PREFIX = "SMAINT_CLOUD_"
# The zero-config DSN the demo uses: trust auth on loopback, fine on a laptop, not in production.
DEMO_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=smaint"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DbSettings(_Section):
    """PostgreSQL and the connection pool."""

    dsn: str = Field(default=DEMO_DSN, description="libpq connection string of PostgreSQL")
    pool_min: int = Field(default=1, ge=0, le=100, description="connections kept open")
    pool_max: int = Field(default=10, ge=1, le=200, description="most connections at once")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="wait for a free connection, then answer 503"
    )


class ApiSettings(_Section):
    """The HTTP API."""

    host: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port of the HTTP API")
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024,
        description="largest sync body accepted, before and after gzip decompression",
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=0,
        description="requests per user key and minute; 0 = off",
    )
    auth_failures_per_minute: int = Field(
        default=20, ge=0,
        description="failed authentications (gateway token, API key, console password) per "
                    "client address and minute, then 429; 0 = off",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of reverse proxies whose X-Forwarded-For is "
                    "believed; from anyone else it is ignored",
    )
    token_overlap_s: float = Field(
        default=86_400.0, ge=60, le=30 * 86_400,
        description="after a gateway rotates its token the old one stays valid this long")
    enrolment_ttl_s: float = Field(
        default=86_400.0, ge=60, le=30 * 86_400,
        description="how long a gateway enrolment code may be exchanged for a token")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins (https://host[:port]) whose pages may call the API from a "
                    "browser; empty: none (CORS closed)",
    )


class IngestSettings(_Section):
    """What the cloud stores from sync batches: the plausible time window, partition budget."""

    earliest: date = Field(
        default=EARLIEST,
        description="readings stamped before this day (UTC) are dead-lettered, not stored")
    max_future_s: float = Field(
        default=600.0, ge=0, le=7 * 86_400,
        description="readings stamped more than this ahead of the cloud clock are dead-lettered")
    max_new_partitions: int = Field(
        default=4, ge=1, le=1000,
        description="daily partitions one upload may create; past it the upload is refused "
                    "with 429 after making that many, and its retry makes the next ones")

    def limits(self) -> IngestLimits:
        """These settings as ingest uses them."""
        return IngestLimits(earliest=self.earliest, max_future_s=self.max_future_s,
                            max_new_partitions=self.max_new_partitions)


class JobSettings(_Section):
    """Background work: the job worker and the rollup folder."""

    worker_enabled: bool = Field(
        default=True, description="run the background job worker inside this process"
    )
    worker_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="idle worker's wait between looks at the job table"
    )
    lease_s: float = Field(
        default=120.0, gt=0, description="a claimed job is re-run by another worker after this"
    )
    max_attempts: int = Field(default=6, ge=1, le=100, description="then a job is failed")
    backoff_s: float = Field(
        default=5.0, gt=0, description="first retry delay; doubles per attempt, with jitter"
    )
    backoff_cap_s: float = Field(default=900.0, gt=0, description="longest retry delay")
    rollup_fold_s: float = Field(
        default=1.0, gt=0, le=60,
        description="how often pending rollup deltas are folded into readings_1m/readings_1h",
    )


class NotifySettings(_Section):
    """Alert notifications by email and webhook."""

    smtp_host: str | None = Field(default=None, description="SMTP server; unset = no email")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP server port")
    smtp_starttls: bool = Field(default=False, description="upgrade with STARTTLS before sending")
    smtp_username: str | None = Field(default=None, description="SMTP login, if required")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password")
    smtp_from: str = Field(default="smaint@localhost", description="sender of alert emails")
    smtp_to: list[str] = Field(default_factory=list, description="recipients of alert emails")
    webhook_urls: list[str] = Field(
        default_factory=list, description="URLs that get a signed POST per high-severity alert"
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key signing webhook bodies (required with URLs)"
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="per delivery attempt (SMTP session or POST)"
    )


class ConsoleSettings(_Section):
    """The web console (ui/console) that ``smaint cloud serve`` adds when NiceGUI is installed."""

    enabled: bool = Field(
        default=True, description="serve the console at / (needs the ui extra: nicegui)")
    session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30,
        description="a console sign-in lasts this long, then the API key is asked for again")
    refresh_s: float = Field(
        default=5.0, ge=0.5, le=300, description="how often open console views refresh")


class SimulationSettings(_Section):
    """Simulated devices (the demo, a lab): scenario requests from the console and the API."""

    enabled: bool = Field(
        default=False,
        description="the fleet is simulated: operators may ask a device's gateway to play a "
                    "SIMULATED scenario (spike, drift, stuck, noise); false: refused with 409 "
                    "and no console button",
    )


class CloudSettings(BaseSettings):
    """Everything the cloud service needs to start; defaults run the local demo."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    env: Literal["development", "production"] = Field(
        default="development", description="production refuses demo defaults"
    )
    public_url: str = Field(
        default="",
        description="the address users and gateways reach the cloud at (https://… behind a "
                    "TLS-terminating reverse proxy); production requires https",
    )
    db: DbSettings = Field(default_factory=DbSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    artifacts: ArtifactStoreConfig = Field(default_factory=ArtifactStoreConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    simulation: SimulationSettings = Field(default_factory=SimulationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``SMAINT_CLOUD_*`` variables (every one of them known)."""
        check_environment(settings_cls, ENV_PREFIX, os.environ)
        return (init_settings, env_settings)

    @property
    def served_over_https(self) -> bool:
        """True when the cloud says TLS terminates in front of it (public_url is https)."""
        return self.public_url.lower().startswith("https://")

    @model_validator(mode="after")
    def _check(self) -> CloudSettings:
        parse_networks(self.api.trusted_proxies)  # a typo stops the start, naming the entry
        if self.db.pool_max < self.db.pool_min:
            raise ValueError(
                f"db.pool_max ({self.db.pool_max}) is below db.pool_min ({self.db.pool_min})")
        if self.env == "production":
            problems = production_problems(self)
            if problems:
                raise ValueError("production mode refuses to start: " + "; ".join(problems))
        if self.notify.webhook_urls and self.notify.webhook_secret is None:
            raise ValueError("SMAINT_CLOUD_NOTIFY__WEBHOOK_SECRET must be set to send webhooks")
        if self.notify.smtp_host and not self.notify.smtp_to:
            raise ValueError("SMAINT_CLOUD_NOTIFY__SMTP_TO must name at least one recipient")
        return self


# Values that mean "nobody chose a secret here" (compared lower-case).
PLACEHOLDERS = frozenset({
    "changeme", "change-me", "change_me", "secret", "password", "passwd", "admin", "test",
    "demo", "example", "placeholder", "postgres", "minioadmin", "todo", "xxx", "default"})
MIN_SECRET_CHARS = 12


def _dsn_password(dsn: str) -> str | None:
    for part in dsn.split():
        key, _, value = part.partition("=")
        if key == "password":
            return value.strip("'")
    return None


def production_problems(s: CloudSettings) -> list[str]:
    """Why these settings must not run in production (empty: nothing found)."""
    problems: list[str] = []
    if s.db.dsn == DEMO_DSN:
        problems.append("SMAINT_CLOUD_DB__DSN must be set explicitly")
    password = _dsn_password(s.db.dsn)
    if password is not None and password.lower() in PLACEHOLDERS:
        problems.append("the database password in SMAINT_CLOUD_DB__DSN is a placeholder")
    if not s.served_over_https:
        problems.append("SMAINT_CLOUD_PUBLIC_URL must be the https:// address of the TLS-"
                        "terminating reverse proxy in front of the cloud (see "
                        "docs/security.md, 'Production behind a reverse proxy')")
    secrets = {"SMAINT_CLOUD_NOTIFY__WEBHOOK_SECRET": s.notify.webhook_secret,
               "SMAINT_CLOUD_NOTIFY__SMTP_PASSWORD": s.notify.smtp_password,
               "SMAINT_CLOUD_ARTIFACTS__S3_SECRET_ACCESS_KEY": s.artifacts.s3_secret_access_key}
    for name, secret in secrets.items():
        if secret is None:
            continue
        value = secret.get_secret_value()
        if value.lower() in PLACEHOLDERS or len(value) < MIN_SECRET_CHARS:
            problems.append(f"{name} is a placeholder or shorter than {MIN_SECRET_CHARS} "
                            "characters")
    if "*" in s.api.cors_origins:
        problems.append("SMAINT_CLOUD_API__CORS_ORIGINS must name origins, not '*'")
    return problems


def load_settings(**overrides: object) -> CloudSettings:
    """Read settings from the environment now; keyword overrides (CLI flags) win.

    ``overrides`` use the settings' shape (``api={"port": 9000}``).
    """
    return CloudSettings(**overrides)  # type: ignore[arg-type]
