"""Where artifacts live: the settings model the cloud settings nest, and the store it opens."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from cloud.artifacts.base import ArtifactStore
from cloud.artifacts.local import LocalArtifactStore


class ArtifactStoreConfig(BaseModel):
    """The artifact store's settings; the defaults keep artifacts in ``./artifacts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "s3"] = Field(
        default="local", description="'local': files under local_root; 's3': an S3 bucket")
    local_root: Path = Field(
        default=Path("artifacts"), description="directory of the local backend")
    s3_bucket: str | None = Field(
        default=None, min_length=3, max_length=63, description="bucket (required for s3)")
    s3_prefix: str = Field(default="", description="key prefix inside the bucket, e.g. 'smaint/'")
    s3_endpoint_url: str | None = Field(
        default=None, pattern=r"^https?://",
        description="S3 endpoint (MinIO, SeaweedFS, ...); unset = AWS")
    s3_region: str = Field(default="us-east-1", min_length=1, description="S3 region")
    s3_access_key_id: str | None = Field(
        default=None, description="access key; unset = boto3's chain (env, profile, role)")
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="secret key that goes with s3_access_key_id")
    presign_expires_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="lifetime of pre-signed download URLs")

    @model_validator(mode="after")
    def _check(self) -> ArtifactStoreConfig:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("the s3 artifact backend needs s3_bucket")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        return self


def open_artifact_store(config: ArtifactStoreConfig) -> ArtifactStore:
    """The store ``config`` describes (boto3 is imported only for the s3 backend)."""
    if config.backend == "local":
        return LocalArtifactStore(config.local_root)
    from cloud.artifacts.s3 import S3ArtifactStore  # noqa: PLC0415 (boto3 is slow to import)

    assert config.s3_bucket is not None  # the validator made sure  # noqa: S101
    secret = config.s3_secret_access_key
    return S3ArtifactStore(
        config.s3_bucket, endpoint_url=config.s3_endpoint_url, region=config.s3_region,
        access_key_id=config.s3_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
        prefix=config.s3_prefix)
