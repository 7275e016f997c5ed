"""Cloud service settings, from ``SMAINT_CLOUD_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
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

    @model_validator(mode="after")
    def _check(self) -> CloudSettings:
        if self.pool_max < self.pool_min:
            raise ValueError(f"pool_max ({self.pool_max}) is below pool_min ({self.pool_min})")
        if self.env == "production" and self.db_dsn == DEMO_DSN:
            raise ValueError("SMAINT_CLOUD_DB_DSN must be set explicitly in production")
        return self


def load_settings(**overrides: object) -> CloudSettings:
    """Read settings from the environment now; keyword overrides win (CLI flags)."""
    return CloudSettings(**overrides)  # type: ignore[arg-type]
