"""Cloud service settings, from ``SMAINT_CLOUD_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The zero-config DSN the demo uses: trust auth on loopback, fine on a laptop, not in production.
DEMO_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=smaint"


class CloudSettings(BaseSettings):
    """Everything the cloud service needs to start; defaults run the local demo."""

    model_config = SettingsConfigDict(env_prefix="SMAINT_CLOUD_", extra="ignore")

    db_dsn: str = Field(default=DEMO_DSN, description="libpq connection string of PostgreSQL")
    host: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port of the HTTP API")
    pool_min: int = Field(default=1, ge=0, le=100, description="connections kept open")
    pool_max: int = Field(default=10, ge=1, le=200, description="most connections at once")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="wait for a free connection, then answer 503"
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="largest sync body accepted, before and after gzip decompression",
    )
    env: Literal["development", "production"] = Field(
        default="development", description="production refuses demo defaults"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="root log level set by `serve`"
    )
    log_json: bool = Field(default=False, description="log JSON lines instead of text")
    # Users, rate limits, background work and notifications (cloud business layer).
    rate_limit_per_minute: int = Field(
        default=600, ge=0,
        description="requests per user key (or failed-auth address) and minute; 0 = off",
    )
    rollup_fold_s: float = Field(
        default=1.0, gt=0, le=60,
        description="how often pending rollup deltas are folded into readings_1m/readings_1h",
    )
    worker_enabled: bool = Field(
        default=True, description="run the background job worker inside this process"
    )
    worker_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="idle worker's wait between looks at the job table"
    )
    job_lease_s: float = Field(
        default=120.0, gt=0, description="a claimed job is re-run by another worker after this"
    )
    job_max_attempts: int = Field(default=6, ge=1, le=100, description="then a job is failed")
    job_backoff_s: float = Field(
        default=5.0, gt=0, description="first retry delay; doubles per attempt, with jitter"
    )
    job_backoff_cap_s: float = Field(default=900.0, gt=0, description="longest retry delay")
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
    notify_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="per delivery attempt (SMTP session or POST)"
    )

    @model_validator(mode="after")
    def _check(self) -> CloudSettings:
        if self.pool_max < self.pool_min:
            raise ValueError(f"pool_max ({self.pool_max}) is below pool_min ({self.pool_min})")
        if self.env == "production" and self.db_dsn == DEMO_DSN:
            raise ValueError("SMAINT_CLOUD_DB_DSN must be set explicitly in production")
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError("SMAINT_CLOUD_WEBHOOK_SECRET must be set to send webhooks")
        if self.smtp_host and not self.smtp_to:
            raise ValueError("SMAINT_CLOUD_SMTP_TO must name at least one recipient")
        return self


def load_settings(**overrides: object) -> CloudSettings:
    """Read settings from the environment now; keyword overrides win (CLI flags)."""
    return CloudSettings(**overrides)  # type: ignore[arg-type]
