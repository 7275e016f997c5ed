"""Where the cloud runs and whether each of its connections answers: PostgreSQL, MLflow and
the artifact store, each named without its secrets and checked cheaply.

The console shows this in a bar on every page, so a check never takes long (short timeouts)
and its answer is kept for a few seconds: a dozen open consoles cost one round of checks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, Field

from cloud.artifacts.config import ArtifactStoreConfig
from cloud.training.config import TrainingConfig

log = logging.getLogger(__name__)

State = Literal["ok", "down", "unchecked"]
CHECK_TIMEOUT_S = 2.0
CACHE_S = 5.0


class Connection(BaseModel):
    """One thing the cloud depends on: what it is, where, and whether it answered."""

    name: str = Field(examples=["database"])
    target: str = Field(description="where it is, without passwords or keys")
    state: State = Field(description="ok: answered; down: did not; unchecked: cannot be probed")
    detail: str = Field(description="what the check saw, or why it failed")
    checked_ms: float = Field(description="how long the check took")


def redact(uri: str) -> str:
    """``uri`` without the password of its user part (``user:***@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _timed(name: str, target: str, check: Callable[[], tuple[State, str]]) -> Connection:
    start = time.perf_counter()
    state, detail = check()
    return Connection(name=name, target=target, state=state, detail=detail,
                      checked_ms=round((time.perf_counter() - start) * 1000, 1))


def database(pool: ConnectionPool, dsn: str) -> Connection:
    """PostgreSQL through the API's own pool: server version and the newest migration."""
    info = conninfo_to_dict(dsn)
    target = (f"postgresql://{info.get('user', '')}@{info.get('host', 'localhost')}:"
              f"{info.get('port', 5432)}/{info.get('dbname', '')}")

    def check() -> tuple[State, str]:
        try:
            with pool.connection(timeout=CHECK_TIMEOUT_S) as conn:
                version = conn.execute("SHOW server_version").fetchone()
                newest = conn.execute(
                    "SELECT max(name) FROM schema_migrations").fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            return "down", f"no answer: {exc}"
        stats = pool.get_stats()
        return "ok", (f"PostgreSQL {version[0] if version else '?'}, schema at "
                      f"{newest[0] if newest else 'none'}, pool {stats.get('pool_size', 0)}"
                      f"/{pool.max_size} connections")

    return _timed("database", target, check)


def mlflow(config: TrainingConfig) -> Connection:
    """The MLflow tracking store: a server answers /health; a sqlite file exists or not yet."""
    uri = config.resolved_tracking_uri()

    def check() -> tuple[State, str]:
        scheme = urlsplit(uri).scheme
        if scheme in {"http", "https"}:
            return _tracking_server(uri)
        if scheme == "sqlite":
            path = Path(uri.removeprefix("sqlite:///"))
            if path.is_file():
                return "ok", f"sqlite store, {path.stat().st_size // 1024} KiB"
            if os.access(_existing_parent(path), os.W_OK):
                return "ok", "sqlite store not created yet: the first training run creates it"
            return "down", f"{path.parent} is not writable: training runs cannot be tracked"
        return "unchecked", f"a {scheme or 'file'} store is not probed"

    return _timed("mlflow", redact(uri), check)


def _tracking_server(uri: str) -> tuple[State, str]:
    try:
        resp = httpx.get(uri.rstrip("/") + "/health", timeout=CHECK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return "down", f"no answer: {exc}"
    if resp.status_code != 200:
        return "down", f"/health answered {resp.status_code}"
    return "ok", "tracking server answers"


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def artifact_store(config: ArtifactStoreConfig, probe: Callable[[], None] | None) -> Connection:
    """The artifact store: a local directory writable, or the S3 bucket answering ``probe``."""
    if config.backend == "local":
        root = config.local_root.resolve()

        def local() -> tuple[State, str]:
            if root.is_dir():
                writable = os.access(root, os.W_OK)
                return ("ok" if writable else "down"), (
                    "local directory" if writable else f"{root} is not writable")
            if os.access(_existing_parent(root), os.W_OK):
                return "ok", "local directory, created with the first bundle"
            return "down", f"{root} cannot be created"

        return _timed("artifact store", str(root), local)
    target = f"s3://{config.s3_bucket}/{config.s3_prefix}" + (
        f" at {config.s3_endpoint_url}" if config.s3_endpoint_url else "")

    def s3() -> tuple[State, str]:
        if probe is None:
            return "unchecked", "no store opened"
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - any failure means: the bucket does not answer
            return "down", f"no answer: {exc}"
        return "ok", "bucket answers"

    return _timed("artifact store", target, s3)


class CachedChecks:
    """The last round of checks, reused for ``CACHE_S`` seconds; one round runs at a time."""

    def __init__(self, run: Callable[[], list[Connection]]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._at = -CACHE_S
        self._last: list[Connection] = []

    def get(self) -> list[Connection]:
        """Fresh checks, or the last ones if they are younger than ``CACHE_S``."""
        with self._lock:
            if time.monotonic() - self._at >= CACHE_S:
                self._last = self._run()
                self._at = time.monotonic()
            return list(self._last)
