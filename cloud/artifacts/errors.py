"""Errors of the artifact store; each message says what to do about it."""

from __future__ import annotations

from cloud.exceptions import CloudError


class ArtifactStoreError(CloudError):
    """The artifact store failed: unreachable, misconfigured, refused or out of space."""

    http_status = 503


class InvalidArtifactKeyError(ArtifactStoreError, ValueError):
    """A key is not a relative, normalised path of safe characters (HTTP 400)."""

    http_status = 400

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"invalid artifact key {key!r}: {reason}; use relative '/'-separated names of "
            "letters, digits and . _ - = + @ , such as 'models/motor/v3/model.onnx'"
        )
        self.key = key
        self.reason = reason


class ArtifactNotFoundError(ArtifactStoreError, KeyError):
    """No artifact is stored under a key (HTTP 404)."""

    http_status = 404

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"no artifact {key!r} in {where}; check the key or upload it first")
        self.key = key

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class ArtifactIntegrityError(ArtifactStoreError):
    """Bytes do not match their sha256: damaged in storage or in transfer."""

    http_status = 500


class ArtifactRangeError(ArtifactStoreError, ValueError):
    """A byte range starts beyond the end of the artifact (HTTP 416)."""

    http_status = 416


class PresignNotSupportedError(ArtifactStoreError):
    """The backend cannot hand out pre-signed URLs (the local one); serve the bytes instead."""

    http_status = 501
