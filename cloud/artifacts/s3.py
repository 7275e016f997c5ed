"""Artifacts in an S3 bucket (AWS, MinIO, SeaweedFS, ...) through boto3.

The sha256 of every artifact travels as user metadata (``x-amz-meta-sha256``), so any S3
implementation keeps it; whole reads are checked against it. Pre-signed GET URLs let a gateway
download a model straight from the bucket.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cloud.artifacts.base import (
    ArtifactInfo,
    ArtifactStore,
    check_range,
    check_range_shape,
    check_sha256,
    file_sha256,
    validate_key,
    validate_prefix,
)
from cloud.artifacts.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactRangeError,
    ArtifactStoreError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
SHA_META = "sha256"
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit
_MISSING = {"NoSuchKey", "NotFound", "404"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


class S3ArtifactStore(ArtifactStore):
    """Artifacts under ``prefix`` in ``bucket``; endpoint and credentials as given.

    ``endpoint_url`` None means AWS itself; credentials None means boto3's usual chain
    (environment, profile, instance role).
    """

    supports_presigned_urls = True

    def __init__(self, bucket: str, *, endpoint_url: str | None = None,
                 region: str = "us-east-1", access_key_id: str | None = None,
                 secret_access_key: str | None = None, prefix: str = "") -> None:
        if prefix:
            validate_prefix(prefix if prefix.endswith("/") else prefix + "/")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        session = boto3.session.Session(aws_access_key_id=access_key_id,
                                        aws_secret_access_key=secret_access_key,
                                        region_name=region)
        config = Config(
            signature_version="s3v4",
            # Self-hosted servers answer on one host name: no bucket.<endpoint> sub-domains.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5, read_timeout=60,
        )
        self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        where = self.endpoint_url or "AWS"
        return f"S3ArtifactStore(s3://{self.bucket}/{self.prefix} at {where})"

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, key: str | None, action: str, fn: Callable[[], T]) -> T:
        """Run one boto3 call, turning its failures into the store's own errors."""
        try:
            return fn()
        except (ClientError, S3UploadFailedError, BotoCoreError) as e:
            raise self._error(e, key, action) from e

    def _error(self, e: Exception, key: str | None, action: str) -> ArtifactStoreError:
        """The store's error for a boto3 failure, saying what to check."""
        if isinstance(e, ClientError):
            return self._client_error(e, key, action)
        if isinstance(e, S3UploadFailedError):
            return ArtifactStoreError(
                f"{self!r} failed to {action}: {e}; check the credentials and that the bucket "
                "exists")
        return ArtifactStoreError(
            f"cannot reach {self!r} to {action}: {e}; check the endpoint URL and that the "
            "server is up")

    def _client_error(self, e: ClientError, key: str | None, action: str) -> ArtifactStoreError:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in _MISSING and key is not None:
            return ArtifactNotFoundError(key, repr(self))
        if code == "InvalidRange":
            return ArtifactRangeError(f"{self!r} refused the byte range to {action}")
        if code == "NoSuchBucket":
            return ArtifactStoreError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}; "
                "create it (S3ArtifactStore.create_bucket) or fix the bucket setting")
        if code in _DENIED:
            return ArtifactStoreError(
                f"{self!r} refused to {action} ({code}); check the access key, secret and "
                f"bucket policy, and that bucket {self.bucket!r} exists (some servers deny "
                "rather than say it is missing)")
        return ArtifactStoreError(
            f"{self!r} failed to {action}: {code} {err.get('Message', '')}".rstrip()
            + "; retry, or check the S3 server's log")

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist yet (for first start-up and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as e:
            if _code(e) not in {"404", "NoSuchBucket"}:
                raise self._error(e, None, "look up the bucket") from e
        except BotoCoreError as e:
            raise self._error(e, None, "look up the bucket") from e
        kwargs: dict[str, Any] = {}
        if self.region != "us-east-1":  # S3 rejects an explicit us-east-1 constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            if _code(e) != "BucketAlreadyOwnedByYou":
                raise self._error(e, None, "create the bucket") from e
        except BotoCoreError as e:
            raise self._error(e, None, "create the bucket") from e
        log.info("created bucket %s at %s", self.bucket, self.endpoint_url or "AWS")

    def put_bytes(self, key: str, data: bytes, *, sha256: str | None = None) -> ArtifactInfo:
        """Store ``data`` under ``key`` with its sha256 as metadata; check ``sha256`` if given."""
        full = self._key(key)
        digest = hashlib.sha256(data).hexdigest()
        check_sha256(key, sha256, digest)
        self._call(key, f"put {key!r}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=full, Body=data, Metadata={SHA_META: digest},
            ContentType="application/octet-stream"))
        return ArtifactInfo(key=key, size=len(data), sha256=digest)

    def put_file(self, key: str, path: Path, *, sha256: str | None = None) -> ArtifactInfo:
        """Upload the file at ``path`` (multipart when large); check ``sha256`` if given."""
        full = self._key(key)
        try:
            digest, size = file_sha256(Path(path))
        except OSError as e:
            raise ArtifactStoreError(f"cannot read {path} to store it as {key!r}: {e}") from e
        check_sha256(key, sha256, digest)
        extra = {"Metadata": {SHA_META: digest}, "ContentType": "application/octet-stream"}
        self._call(key, f"upload {key!r}", lambda: self.client.upload_file(
            str(path), self.bucket, full, ExtraArgs=extra))
        return ArtifactInfo(key=key, size=size, sha256=digest)

    def get_bytes(self, key: str) -> bytes:
        """The whole artifact, checked against its sha256 metadata."""
        full = self._key(key)
        resp = self._call(key, f"get {key!r}",
                          lambda: self.client.get_object(Bucket=self.bucket, Key=full))
        data: bytes = self._call(key, f"read {key!r}", resp["Body"].read)
        recorded = self._recorded(key, resp)
        if hashlib.sha256(data).hexdigest() != recorded:
            raise ArtifactIntegrityError(
                f"{key!r} in {self!r} does not match its recorded sha256 {recorded}: the object "
                "was changed outside the artifact store or damaged; upload it again")
        return data

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the artifact (see ArtifactStore.get_range)."""
        full = self._key(key)
        check_range_shape(key, start, end)
        if end is not None and end == start:
            self.head(key)  # an empty range still names a key that must exist
            return b""
        spec = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            resp = self._call(key, f"get {key!r}", lambda: self.client.get_object(
                Bucket=self.bucket, Key=full, Range=spec))
        except ArtifactRangeError:
            # S3 answers 416 for a range starting at the size; a finished download is resumed
            # there, so that is an empty read. check_range raises for anything beyond it.
            size = self.head(key).size
            lo, hi = check_range(key, start, end, size)
            if lo == hi:
                return b""
            raise
        data: bytes = self._call(key, f"read {key!r}", resp["Body"].read)
        return data

    def head(self, key: str) -> ArtifactInfo:
        """Size and recorded sha256 of an artifact."""
        full = self._key(key)
        resp = self._call(key, f"look up {key!r}",
                          lambda: self.client.head_object(Bucket=self.bucket, Key=full))
        return ArtifactInfo(key=key, size=int(resp["ContentLength"]),
                            sha256=self._recorded(key, resp))

    def _recorded(self, key: str, resp: dict[str, Any]) -> str:
        recorded = resp.get("Metadata", {}).get(SHA_META)
        if not isinstance(recorded, str):
            raise ArtifactIntegrityError(
                f"{key!r} in {self!r} has no recorded sha256: it was not written through the "
                "artifact store; upload it again with put_bytes or put_file")
        return recorded

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        validate_prefix(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        keys: list[str] = []

        def collect() -> None:
            for page in pages:
                keys.extend(o["Key"][len(self.prefix):] for o in page.get("Contents", []))

        self._call(None, f"list {prefix!r}", collect)
        return sorted(keys)

    def delete(self, key: str) -> bool:
        """Remove an artifact; False if there was none."""
        if not self.exists(key):
            return False
        full = self._key(key)
        self._call(key, f"delete {key!r}",
                   lambda: self.client.delete_object(Bucket=self.bucket, Key=full))
        return True

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A pre-signed GET URL of an existing artifact, valid for ``expires_s`` seconds."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ArtifactStoreError(
                f"pre-signed URLs last 1 to {MAX_PRESIGN_S} s, not {expires_s}; pick a value "
                "in that range")
        self.head(key)  # a URL to nothing would only fail later, at the gateway
        url: str = self._call(key, f"pre-sign {key!r}", lambda: self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=expires_s))
        return url


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))
