"""Cloud backup and restore: the database, MLflow's store and the artifact store's index.

A backup is one tar file: ``manifest.json``, ``db.dump`` (``pg_dump --format=custom``, a
consistent snapshot taken while gateways keep uploading), and, when MLflow tracks into its
default sqlite store, ``mlflow/mlflow.db`` (copied with sqlite's online backup API) with the
local MLflow artifacts. Model bundles themselves stay in the artifact store (S3 or a directory,
durable on its own); the backup keeps their index (key, size, sha256) so a restore can say
which ones the store no longer holds.

A restore brings the database back to the backup's moment; every reading uploaded after it is
missing. The gateways still hold those readings, and uploads are idempotent, so the restore
queues a backfill per gateway from a margin before the newest reading the backup holds of it:
the gateways send that range again with their next sync, and what the cloud already has is
counted as duplicate, not stored twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from cloud.artifacts.config import open_artifact_store
from cloud.exceptions import CloudError
from cloud.ingest.batch import request_backfill
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
DUMP = "db.dump"
MLFLOW_DB = "mlflow/mlflow.db"
MLFLOW_ARTIFACTS = "mlflow/artifacts"
# Readings a gateway uploaded after the backup may be older than the newest one it holds
# (an outage's backlog drains oldest first): ask again from this far before it.
DEFAULT_BACKFILL_MARGIN = timedelta(hours=24)

Progress = Callable[[str], None]


class BackupError(CloudError):
    """A backup or restore could not be made; the message says what to do."""


class ArtifactEntry(BaseModel):
    """One object of the artifact store as the backup saw it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    size: int = Field(ge=0)
    sha256: str


class Manifest(BaseModel):
    """What a backup holds; written first-class as ``manifest.json`` inside the tar."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(description="backup format version")
    created_at: datetime
    server_version: str = Field(description="PostgreSQL server version of the source")
    timescaledb: bool = Field(description="the source database had the timescaledb extension")
    dump_sha256: str
    dump_bytes: int
    mlflow: str = Field(description="'sqlite' (included) or the remote tracking URI (not)")
    artifacts_backend: str
    artifacts: list[ArtifactEntry] = Field(default_factory=list)
    newest_reading_ms: dict[str, int | None] = Field(
        default_factory=dict, description="gateway -> newest reading ts it had synced")
    readings: int = Field(description="readings in the database at the backup's snapshot")


@dataclass
class RestoreReport:
    """What a restore did, for the command's output."""

    manifest: Manifest
    backfills: dict[str, int] = field(default_factory=dict)  # gateway -> request id
    missing_artifacts: list[str] = field(default_factory=list)
    mlflow_restored: bool = False


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client "
                          "(apt-get install postgresql-client)")
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI, else None (a remote MLflow)."""
    prefix = "sqlite:///"
    return Path("/" + uri[len(prefix):].lstrip("/")) if uri.startswith(prefix) else None


def _snapshot_facts(dsn: str) -> tuple[str, bool, dict[str, int | None], int]:
    """Server version, timescaledb present, newest reading per gateway, reading count."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        tsdb = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
        newest: dict[str, int | None] = {}
        for gw, ts in conn.execute(
                # Per device, so each max is one probe of the (device_id, ts, ...) index.
                "SELECT g.gateway_id, max((SELECT max(r.ts) FROM readings r"
                " WHERE r.device_id = d.device_id)) FROM gateways g"
                " LEFT JOIN devices d USING (gateway_id) GROUP BY 1"):
            newest[str(gw)] = None if ts is None else int(ts.timestamp() * 1000)
        count = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]
    return version, tsdb, newest, count


def create_backup(settings: CloudSettings, out: Path,
                  progress: Progress = lambda _: None) -> Manifest:
    """Write a backup of the cloud to ``out`` (a .tar file); returns its manifest."""
    dsn = settings.db.dsn
    with tempfile.TemporaryDirectory(prefix="smaint-backup-") as tmp_name:
        tmp = Path(tmp_name)
        # The facts first: the dump's snapshot is later, so it holds at least these readings.
        version, tsdb, newest, count = _snapshot_facts(dsn)
        progress(f"dumping the database ({count} readings)")
        dump = tmp / DUMP
        done = subprocess.run(
            [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
             f"--file={dump}", f"--dbname={dsn}"],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
        tracking = settings.training.resolved_tracking_uri()
        mlflow_file = _sqlite_path(tracking)
        members: list[tuple[Path, str]] = [(dump, DUMP)]
        if mlflow_file is not None and mlflow_file.exists():
            progress("copying MLflow's store")
            copy = tmp / "mlflow.db"
            with sqlite3.connect(mlflow_file) as src, sqlite3.connect(copy) as dst:
                src.backup(dst)  # consistent even while a training run writes
            members.append((copy, MLFLOW_DB))
            runs = settings.training.data_dir / "artifacts"
            if runs.is_dir():
                members.append((runs, MLFLOW_ARTIFACTS))
        progress("indexing the artifact store")
        store = open_artifact_store(settings.artifacts)
        entries = [ArtifactEntry(key=i.key, size=i.size, sha256=i.sha256)
                   for i in (store.head(k) for k in store.list(""))]
        manifest = Manifest(
            format=FORMAT, created_at=datetime.now(UTC), server_version=version,
            timescaledb=tsdb, dump_sha256=_sha256(dump), dump_bytes=dump.stat().st_size,
            mlflow="sqlite" if mlflow_file is not None else tracking,
            artifacts_backend=settings.artifacts.backend, artifacts=entries,
            newest_reading_ms=newest, readings=count)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            data = manifest.model_dump_json(indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            for path, name in members:
                tar.add(path, arcname=name)
        partial.replace(out)  # a crash mid-write never leaves a truncated backup under `out`
    progress(f"backup written to {out} ({out.stat().st_size} bytes)")
    return manifest


def read_manifest(archive: Path) -> Manifest:
    """The manifest of a backup file; refuses what is not one of ours."""
    try:
        with tarfile.open(archive, "r") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            manifest = Manifest.model_validate_json(member.read())
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        raise BackupError(f"{archive} is not a Smart Maintenance backup: {exc}") from exc
    if manifest.format != FORMAT:
        raise BackupError(f"{archive} has backup format {manifest.format}; this version reads "
                          f"format {FORMAT}")
    return manifest


def _database_is_empty(dsn: str) -> bool:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    return row is not None and int(row[0]) == 0


def _restore_database(dsn: str, dump: Path, manifest: Manifest, replace: bool) -> None:
    if not _database_is_empty(dsn):
        if not replace:
            raise BackupError("the target database is not empty: restore into a new database, "
                              "or pass --replace to drop what it holds (stop the API first)")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
    if manifest.timescaledb:
        # TimescaleDB's documented restore: its catalog must not react while rows come back.
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
    done = subprocess.run(
        [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
         f"--dbname={dsn}", str(dump)],
        capture_output=True, text=True, check=False)
    if manifest.timescaledb:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT timescaledb_post_restore()")
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def _restore_mlflow(settings: CloudSettings, tar: tarfile.TarFile, tmp: Path,
                    replace: bool) -> bool:
    target = _sqlite_path(settings.training.resolved_tracking_uri())
    names = tar.getnames()
    if target is None or MLFLOW_DB not in names:
        return False
    if target.exists() and not replace:
        raise BackupError(f"MLflow's store {target} exists: pass --replace to overwrite it")
    tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name.startswith("mlflow/")],
                   filter="data")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp / MLFLOW_DB, target)
    runs = tmp / MLFLOW_ARTIFACTS
    if runs.is_dir():
        shutil.copytree(runs, settings.training.data_dir / "artifacts", dirs_exist_ok=True)
    return True


def restore_backup(settings: CloudSettings, archive: Path, *, replace: bool = False,
                   backfill_margin: timedelta = DEFAULT_BACKFILL_MARGIN,
                   progress: Progress = lambda _: None) -> RestoreReport:
    """Restore ``archive`` into the configured database and stores, then queue backfills."""
    manifest = read_manifest(archive)
    report = RestoreReport(manifest=manifest)
    with tempfile.TemporaryDirectory(prefix="smaint-restore-") as tmp_name, \
            tarfile.open(archive, "r") as tar:
        tmp = Path(tmp_name)
        tar.extract(DUMP, tmp, filter="data")
        dump = tmp / DUMP
        if _sha256(dump) != manifest.dump_sha256:
            raise BackupError(f"{archive}: the database dump does not match its checksum "
                              "(the file is damaged); use another backup")
        progress(f"restoring the database ({manifest.readings} readings, "
                 f"backup of {manifest.created_at.isoformat(timespec='seconds')})")
        _restore_database(settings.db.dsn, dump, manifest, replace)
        report.mlflow_restored = _restore_mlflow(settings, tar, tmp, replace)
        if report.mlflow_restored:
            progress("restored MLflow's store")
        elif manifest.mlflow != "sqlite":
            progress(f"MLflow tracks into {manifest.mlflow}: restore it with its own backup")
    progress(f"checking {len(manifest.artifacts)} artifact(s) in the store")
    store = open_artifact_store(settings.artifacts)
    present = set(store.list(""))
    for entry in manifest.artifacts:
        if entry.key not in present or store.head(entry.key).sha256 != entry.sha256:
            report.missing_artifacts.append(entry.key)
    until = datetime.now(UTC) + timedelta(minutes=1)
    with psycopg.connect(settings.db.dsn, connect_timeout=10) as conn:
        for gateway, newest in sorted(manifest.newest_reading_ms.items()):
            start = (manifest.created_at if newest is None
                     else datetime.fromtimestamp(newest / 1000, tz=UTC)) - backfill_margin
            start = max(start, datetime.fromtimestamp(0, tz=UTC))
            report.backfills[gateway] = request_backfill(conn, gateway, start, until)
            progress(f"asked gateway {gateway} to send {start.isoformat(timespec='seconds')} "
                     f".. now again")
    return report


def restore_summary(report: RestoreReport) -> dict[str, object]:
    """The JSON line ``smaint cloud restore`` prints."""
    return {"backup_created_at": report.manifest.created_at.isoformat(),
            "readings_restored": report.manifest.readings,
            "backfill_requests": report.backfills,
            "mlflow_restored": report.mlflow_restored,
            "missing_artifacts": report.missing_artifacts}


def backup_summary(manifest: Manifest, out: Path) -> str:
    """The JSON line ``smaint cloud backup`` prints."""
    return json.dumps({"file": str(out), "created_at": manifest.created_at.isoformat(),
                       "readings": manifest.readings, "dump_bytes": manifest.dump_bytes,
                       "mlflow": manifest.mlflow, "artifacts": len(manifest.artifacts)})
