"""Downloading a model bundle from the cloud with the gateway token, resuming a dropped link.

The bytes go to ``<dir>/<profile>-<version>.part``; a retry asks for the rest with an HTTP
Range and ``If-Range: <etag>`` (the cloud's ETag is the bundle's sha256), so a bundle replaced
in between is fetched whole again rather than spliced. The finished file's sha256 must equal
the one the cloud announced; the signature is checked afterwards by shared.bundle, still
before onnxruntime sees a byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import httpx

from edge.exceptions import GatewayError
from shared.bundle import MAX_BUNDLE_BYTES

log = logging.getLogger(__name__)

BUNDLE_PATH = "/api/v1/models/{profile}/{version}/bundle"


class DownloadError(GatewayError):
    """A bundle could not be downloaded (yet); ``permanent`` if retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class BundleDownloader:
    """GETs bundles from ``{cloud_url}/api/v1/models/<profile>/<version>/bundle``."""

    def __init__(self, cloud_url: str, token: str | Callable[[], str], directory: Path, *,
                 client: httpx.AsyncClient | None = None, attempts: int = 5,
                 timeout_s: float = 30.0, retry_s: float = 0.5) -> None:
        self.cloud_url = cloud_url.rstrip("/")
        # A callable: the gateway's token may be enrolled or rotated while it runs.
        self._token = token if callable(token) else (lambda: token)
        self.directory = directory
        self.attempts = attempts
        self.retry_s = retry_s
        self._client = client
        self._own = client is None
        self._timeout_s = timeout_s

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this downloader created it."""
        if self._own and self._client is not None:
            await self._client.aclose()
            self._client = None

    def part_path(self, profile: str, version: str) -> Path:
        """Where the partial download of a bundle is kept between tries."""
        return self.directory / f"{profile}-{version}.part"

    async def fetch(self, profile: str, version: str) -> bytes:
        """The whole bundle, its sha256 checked; resumes from a partial file left before."""
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.part_path(profile, version)
        last = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._try(profile, version, part)
            except DownloadError as exc:
                if exc.permanent:
                    await asyncio.to_thread(_discard, part)
                    raise
                last = exc.reason
            except (httpx.HTTPError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            have, _ = await asyncio.to_thread(_partial, part)
            log.warning("bundle %s %s: download try %d/%d broke off at %d bytes: %s; resuming",
                        profile, version, attempt, self.attempts, have, last)
            await asyncio.sleep(self.retry_s * attempt)
        raise DownloadError(f"download of {profile} {version} failed {self.attempts} times: "
                            f"{last}")

    async def _try(self, profile: str, version: str, part: Path) -> bytes:
        url = self.cloud_url + BUNDLE_PATH.format(profile=profile, version=version)
        have, etag = await asyncio.to_thread(_partial, part)
        headers = {"Authorization": f"Bearer {self._token()}"}
        if have and etag:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = etag
        async with self._http().stream("GET", url, headers=headers) as resp:
            if resp.status_code in (401, 403, 404):
                body = (await resp.aread())[:300].decode(errors="replace")
                raise DownloadError(f"HTTP {resp.status_code} for {url}: {body}",
                                    permanent=resp.status_code == 404)
            if resp.status_code == 416:
                await asyncio.to_thread(_discard, part)  # longer than the bundle: start over
                raise DownloadError("partial download longer than the bundle; starting over")
            if resp.status_code not in (200, 206):
                raise DownloadError(f"HTTP {resp.status_code} for {url}")
            sha = resp.headers.get("X-Bundle-Sha256", "")
            resumed = resp.status_code == 206
            written = have if resumed else 0
            with _open_part(part, resp.headers.get("ETag", f'"{sha}"'), resumed) as out:
                async for chunk in resp.aiter_bytes():  # as received: a break keeps all so far
                    written += len(chunk)
                    if written > MAX_BUNDLE_BYTES:
                        raise DownloadError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes",
                                            permanent=True)
                    out.write(chunk)
        return await asyncio.to_thread(_finish, part, sha)


def _etag_path(part: Path) -> Path:
    return part.with_suffix(".etag")


def _partial(part: Path) -> tuple[int, str]:
    """Bytes already downloaded and the ETag they belong to (0, "" if none)."""
    etag = _etag_path(part)
    if part.exists() and etag.exists():
        return part.stat().st_size, etag.read_text()
    return 0, ""


def _open_part(part: Path, etag: str, resumed: bool) -> BinaryIO:
    """The partial file, appended to on a resumed download, else started afresh."""
    _etag_path(part).write_text(etag)
    return part.open("ab" if resumed else "wb")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _etag_path(part).unlink(missing_ok=True)


def _finish(part: Path, sha: str) -> bytes:
    """The downloaded bytes, if their sha256 is the announced one; the partial file removed."""
    data = part.read_bytes()
    _discard(part)
    actual = hashlib.sha256(data).hexdigest()
    if sha and actual != sha:
        raise DownloadError(f"downloaded bundle has sha256 {actual}, the cloud announced "
                            f"{sha}; fetching it again")
    return data
