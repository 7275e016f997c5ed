"""The artifact-store interface the model loop codes against, and key validation.

Keys are relative '/'-separated names (``models/motor/v3/model.onnx``). Every backend records
the sha256 of what was put, checks it on whole reads, and serves byte ranges so a gateway can
resume an interrupted download from an offset.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from cloud.artifacts.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactRangeError,
    InvalidArtifactKeyError,
)

MAX_KEY_BYTES = 1024  # S3's limit, applied to both backends so a key works everywhere
_SEGMENT = re.compile(r"[A-Za-z0-9._\-=+@,]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """What the store knows about one artifact: its key, size in bytes and sha256 (hex)."""

    key: str
    size: int
    sha256: str


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise InvalidArtifactKeyError."""
    if not isinstance(key, str) or not key:
        raise InvalidArtifactKeyError(str(key), "the key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArtifactKeyError(key, f"longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidArtifactKeyError(key, "absolute paths are not keys")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidArtifactKeyError(key, f"path segment {segment!r} is not allowed")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidArtifactKeyError(key, f"segment {segment!r} has a disallowed character")
    return key


def validate_prefix(prefix: str) -> str:
    """Return a listing prefix: empty, or a key with an optional trailing '/'."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_sha256(key: str, expected: str | None, actual: str) -> None:
    """Raise ArtifactIntegrityError if ``expected`` is given and differs from ``actual``."""
    if expected is None:
        return
    if not _HEX64.fullmatch(expected):
        raise ArtifactIntegrityError(
            f"expected sha256 {expected!r} for {key!r} is not 64 lowercase hex digits")
    if expected != actual:
        raise ArtifactIntegrityError(
            f"bytes of {key!r} have sha256 {actual}, expected {expected}; the data was damaged "
            "or is not the artifact meant: fetch or upload it again")


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def check_range_shape(key: str, start: int, end: int | None) -> None:
    """ArtifactRangeError unless ``0 <= start`` and ``start <= end`` (when given)."""
    if start < 0 or (end is not None and end < start):
        raise ArtifactRangeError(
            f"byte range [{start}, {end}) of {key!r} is malformed; need 0 <= start <= end")


def check_range(key: str, start: int, end: int | None, size: int) -> tuple[int, int]:
    """Clamp ``[start, end)`` to ``size`` (as HTTP does); ArtifactRangeError if it cannot be."""
    check_range_shape(key, start, end)
    if start > size:
        raise ArtifactRangeError(
            f"byte range of {key!r} starts at {start}, beyond its {size} bytes; restart the "
            "download from 0 (the artifact may have been replaced)")
    return start, size if end is None else min(end, size)


class ArtifactStore(ABC):
    """Put, get (whole or a byte range), inspect, list and delete artifacts by key."""

    #: Whether :meth:`presigned_url` can succeed on this backend.
    supports_presigned_urls: bool = False

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, sha256: str | None = None) -> ArtifactInfo:
        """Store ``data`` under ``key``, replacing any artifact there; check ``sha256`` if given."""

    @abstractmethod
    def put_file(self, key: str, path: Path, *, sha256: str | None = None) -> ArtifactInfo:
        """Store the file at ``path`` under ``key``; check ``sha256`` if given."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole artifact, checked against its recorded sha256."""

    @abstractmethod
    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` (``end`` None or past the size means to the end), unchecked.

        ``start`` equal to the size returns ``b""`` (a finished download resumed);
        ``start`` beyond it raises ArtifactRangeError.
        """

    @abstractmethod
    def head(self, key: str) -> ArtifactInfo:
        """Size and sha256 of an artifact; ArtifactNotFoundError if there is none."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix, as S3 does), sorted."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove an artifact; True if there was one, False if the key was already free."""

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL anyone can GET the artifact from until it expires.

        Raises PresignNotSupportedError where the backend has no such URLs (see
        :attr:`supports_presigned_urls`) and ArtifactNotFoundError for a missing key.
        """

    def exists(self, key: str) -> bool:
        """Whether an artifact is stored under ``key``."""
        try:
            self.head(key)
        except ArtifactNotFoundError:
            return False
        return True
