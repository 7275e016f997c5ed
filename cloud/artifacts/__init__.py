"""Where the model loop keeps its artifacts: one interface, a local and an S3 backend."""

from cloud.artifacts.base import ArtifactInfo, ArtifactStore, validate_key
from cloud.artifacts.config import ArtifactStoreConfig, open_artifact_store
from cloud.artifacts.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactRangeError,
    ArtifactStoreError,
    InvalidArtifactKeyError,
    PresignNotSupportedError,
)
from cloud.artifacts.local import LocalArtifactStore

__all__ = [
    "ArtifactInfo",
    "ArtifactIntegrityError",
    "ArtifactNotFoundError",
    "ArtifactRangeError",
    "ArtifactStore",
    "ArtifactStoreConfig",
    "ArtifactStoreError",
    "InvalidArtifactKeyError",
    "LocalArtifactStore",
    "PresignNotSupportedError",
    "open_artifact_store",
    "validate_key",
]
