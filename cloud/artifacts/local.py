"""Artifacts as files under a local directory (the default backend, for one-host installs).

Each artifact is one file, ``<root>/objects/<key>``: a 48-byte header (a magic string and the
raw sha256 of the content) followed by the content. Keeping the checksum inside the file means
a single rename publishes content and checksum together, so a reader never pairs new bytes with
an old checksum. Writes go to ``<root>/tmp`` first and are renamed into place (same file
system), so a reader sees the old artifact or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cloud.artifacts.base import (
    CHUNK,
    ArtifactInfo,
    ArtifactStore,
    check_range,
    check_sha256,
    validate_key,
    validate_prefix,
)
from cloud.artifacts.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStoreError,
    PresignNotSupportedError,
)

log = logging.getLogger(__name__)

MAGIC = b"SMAINT-ARTIFACT\x01"
HEADER = len(MAGIC) + 32
# Writes the content to the open temp file; returns its sha256 digest and size.
Writer = Callable[[BinaryIO], tuple[bytes, int]]


class LocalArtifactStore(ArtifactStore):
    """Artifacts in files under ``root``; no pre-signed URLs (the API serves the bytes)."""

    supports_presigned_urls = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactStoreError(
                f"cannot create the local artifact store at {self.root}: {e}; set the artifact "
                "store's local_root to a writable directory") from e

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self._objects.joinpath(*validate_key(key).split("/"))

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[tuple[BinaryIO, int, str]]:
        """The open file positioned after the header, the content size and its sha256."""
        path = self._path(key)
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactNotFoundError(key, repr(self)) from None
        except OSError as e:
            raise ArtifactStoreError(f"cannot read {path}: {e}; check its permissions") from e
        with f:
            header = f.read(HEADER)
            if len(header) != HEADER or not header.startswith(MAGIC):
                raise ArtifactIntegrityError(
                    f"{path} is not an artifact written by this store (bad header); delete it "
                    "and upload the artifact again")
            size = os.fstat(f.fileno()).st_size - HEADER
            yield f, size, header[len(MAGIC):].hex()

    def _publish(self, key: str, write: Writer, sha256: str | None) -> ArtifactInfo:
        """Write a temp file through ``write``, check it, then rename it over ``key``."""
        dest = self._path(key)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            with tmp.open("wb") as f:
                f.write(bytes(HEADER))  # zeroed header, rewritten once the digest is known
                digest, size = write(f)
                check_sha256(key, sha256, digest.hex())
                f.seek(0)
                f.write(MAGIC + digest)
                f.flush()
                os.fsync(f.fileno())
            for attempt in (1, 2):
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp.replace(dest)
                    break
                except FileNotFoundError:
                    # A concurrent delete pruned the now-empty parent directory: make it again.
                    if attempt == 2:
                        raise
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as e:
            raise ArtifactStoreError(
                f"key {key!r} collides with another key in {self!r} ({e.strerror}): the local "
                "backend cannot hold both 'a/b' and 'a/b/c'; choose keys that are not each "
                "other's folders") from e
        except OSError as e:
            raise ArtifactStoreError(
                f"cannot write {key!r} to {self!r}: {e}; check free space and permissions") from e
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("stored %s (%d bytes) in %s", key, size, self.root)
        return ArtifactInfo(key=key, size=size, sha256=digest.hex())

    def put_bytes(self, key: str, data: bytes, *, sha256: str | None = None) -> ArtifactInfo:
        """Store ``data`` under ``key`` atomically; check ``sha256`` if given."""
        def write(f: BinaryIO) -> tuple[bytes, int]:
            f.write(data)
            return hashlib.sha256(data).digest(), len(data)

        return self._publish(key, write, sha256)

    def put_file(self, key: str, path: Path, *, sha256: str | None = None) -> ArtifactInfo:
        """Copy the file at ``path`` under ``key`` atomically; check ``sha256`` if given."""
        src = Path(path)
        if not src.is_file():
            raise ArtifactStoreError(
                f"cannot store {key!r} from {src}: no such file; check the path")

        def write(f: BinaryIO) -> tuple[bytes, int]:
            h = hashlib.sha256()
            size = 0
            with src.open("rb") as r:
                while chunk := r.read(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            return h.digest(), size

        return self._publish(key, write, sha256)

    def get_bytes(self, key: str) -> bytes:
        """The whole artifact, checked against its recorded sha256."""
        with self._open(key) as (f, _, recorded):
            data = f.read()
        if hashlib.sha256(data).hexdigest() != recorded:
            raise ArtifactIntegrityError(
                f"{key!r} in {self!r} no longer matches its recorded sha256 {recorded}: the file "
                "was altered or damaged on disk; upload the artifact again")
        return data

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the artifact (see ArtifactStore.get_range)."""
        with self._open(key) as (f, size, _):
            lo, hi = check_range(key, start, end, size)
            f.seek(HEADER + lo)
            return f.read(hi - lo)

    def head(self, key: str) -> ArtifactInfo:
        """Size and recorded sha256 of an artifact."""
        with self._open(key) as (_, size, recorded):
            return ArtifactInfo(key=key, size=size, sha256=recorded)

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        validate_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        start = self._objects.joinpath(*folder.split("/")) if folder else self._objects
        keys = []
        for dirpath, _, files in os.walk(start):
            rel = Path(dirpath).relative_to(self._objects).as_posix()
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> bool:
        """Remove an artifact and the folders it leaves empty; False if there was none."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except IsADirectoryError:
            return False  # only keys beneath this name exist
        except OSError as e:
            raise ArtifactStoreError(f"cannot delete {path}: {e}; check its permissions") from e
        parent = path.parent
        while parent != self._objects:
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (or just refilled by a concurrent put): keep it
            parent = parent.parent
        return True

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """Always PresignNotSupportedError: local files have no URL of their own."""
        raise PresignNotSupportedError(
            f"{self!r} cannot make pre-signed URLs for {key!r}; serve the bytes through the "
            "API (get_range supports resuming) or configure the s3 backend")
