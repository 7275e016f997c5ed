"""Backups: the cloud restored from a backup taken mid-stream gets its gap back from the
gateways exactly once; MLflow's store and the artifact index come back; the gateway's SQLite is
copied consistently while it is written."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.access.gateway_tokens import create_gateway
from cloud.api.app import create_app
from cloud.artifacts.config import open_artifact_store
from cloud.backup import BackupError, create_backup, read_manifest, restore_backup
from cloud.db.migrate import migrate
from cloud.settings import CloudSettings
from edge.backup import BackupError as GatewayBackupError
from edge.backup import backup_database, restore_database
from edge.store import Store
from tests.fixtures.gateway import GATEWAY, ingest_through_pipeline
from tests.test_sync_catchup import cloud_rows, drain, uploader


@pytest.fixture
def settings(pg_dsn: str, tmp_path: Path) -> CloudSettings:
    """Cloud settings on a fresh database, with MLflow and artifacts in this test's dir."""
    migrate(pg_dsn)
    return CloudSettings(
        db={"dsn": pg_dsn}, training={"data_dir": tmp_path / "training"},
        artifacts={"local_root": tmp_path / "artifacts"})


def _seqs(dsn: str) -> list[int]:
    return [s for s, _, _ in cloud_rows(dsn)]


async def test_a_cloud_restored_from_a_backup_taken_mid_stream_gets_every_reading_once(
    settings: CloudSettings, tmp_path: Path
) -> None:
    dsn = settings.db.dsn
    with psycopg.connect(dsn) as conn:
        token = create_gateway(conn, GATEWAY)
    backup = tmp_path / "cloud.tar"
    with TestClient(create_app(settings)) as client:
        up = uploader(client, token, tmp_path / "gw.db", sync={"batch_max": 7})
        ingest_through_pipeline(up.outbox.store, up.settings, range(30))
        await drain(up)
        # The backup runs in a thread while the gateway keeps ingesting and uploading.
        taking = asyncio.create_task(asyncio.to_thread(create_backup, settings, backup))
        seq = 30
        while not taking.done():
            ingest_through_pipeline(up.outbox.store, up.settings, range(seq, seq + 2))
            seq += 2
            await drain(up)
        manifest = await taking
        ingest_through_pipeline(up.outbox.store, up.settings, range(seq, seq + 20))
        seq += 20
        await drain(up)
        assert _seqs(dsn) == list(range(seq))
        await up.aclose()
    # Disaster: the database is replaced by the backup (the API is stopped meanwhile).
    report = restore_backup(settings, backup, replace=True)
    restored = _seqs(dsn)
    assert 30 <= manifest.readings <= len(restored) < seq  # the readings after it are gone
    assert restored == list(range(len(restored)))
    assert list(report.backfills) == [GATEWAY]
    with TestClient(create_app(settings)) as client:
        up2 = uploader(client, token, tmp_path / "gw.db", sync={"batch_max": 7})
        ingest_through_pipeline(up2.outbox.store, up2.settings, range(seq, seq + 3))
        sent = await drain(up2)
        await up2.aclose()
        up2.outbox.store.close()
    up.outbox.store.close()
    assert any(kind == "backfill" for kind, _ in sent)  # the gap came back as a backfill
    rows = cloud_rows(dsn)
    assert [s for s, _, _ in rows] == list(range(seq + 3))  # every reading, exactly once
    with psycopg.connect(dsn) as conn:
        (done,) = conn.execute(  # type: ignore[misc]
            "SELECT completed_at IS NOT NULL FROM backfill_requests WHERE id = %s",
            (report.backfills[GATEWAY],)).fetchone()
    assert done


def test_mlflow_store_and_artifact_index_come_back(settings: CloudSettings,
                                                   tmp_path: Path) -> None:
    import mlflow  # noqa: PLC0415 - seconds to import; only this test needs it

    uri = settings.training.resolved_tracking_uri()
    settings.training.data_dir.mkdir(parents=True)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("backup-test"))
    client.log_metric(run.info.run_id, "f1", 0.77)
    store = open_artifact_store(settings.artifacts)
    store.put_bytes("models/motor/1.smb", b"bundle one")
    store.put_bytes("models/mill/1.smb", b"bundle two")
    backup = tmp_path / "cloud.tar"
    manifest = create_backup(settings, backup)
    assert manifest.mlflow == "sqlite"
    assert sorted(a.key for a in manifest.artifacts) == ["models/mill/1.smb", "models/motor/1.smb"]
    # Lost: MLflow's store and one bundle.
    (settings.training.data_dir / "mlflow.db").unlink()
    store.delete("models/mill/1.smb")
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(settings, backup)  # never over a live database by accident
    report = restore_backup(settings, backup, replace=True)
    assert report.mlflow_restored
    assert report.missing_artifacts == ["models/mill/1.smb"]
    back = mlflow.MlflowClient(tracking_uri=uri).get_run(run.info.run_id)
    assert back.data.metrics == {"f1": 0.77}


def test_a_damaged_or_foreign_file_is_refused(settings: CloudSettings, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-backup.tar"
    bogus.write_bytes(b"hello")
    with pytest.raises(BackupError, match="not a Smart Maintenance backup"):
        read_manifest(bogus)
    backup = tmp_path / "cloud.tar"
    create_backup(settings, backup)
    data = bytearray(backup.read_bytes())
    at = data.index(b"PGDMP") + 200  # inside the dump
    data[at] ^= 0xFF
    backup.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="does not match its checksum"):
        restore_backup(settings, backup, replace=True)


def test_the_gateway_database_is_copied_while_it_is_written(tmp_path: Path) -> None:
    from edge.settings import GatewaySettings  # noqa: PLC0415

    db = tmp_path / "gw.db"
    gw = GatewaySettings(gateway_id=GATEWAY, storage={"path": str(db)}, scoring={"warmup": 4})
    store = Store.open(db)
    ingest_through_pipeline(store, gw, range(500))
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        # The gateway keeps committing between the backup's steps.
        if len(seen) == 1:
            ingest_through_pipeline(store, gw, range(500, 510))

    out = tmp_path / "backup" / "gw.db"
    backup_database(db, out, progress)
    assert seen[-1][0] == seen[-1][1]  # finished
    with sqlite3.connect(out) as copy:
        (n,) = copy.execute("SELECT count(*) FROM readings").fetchone()
        (mode,) = copy.execute("PRAGMA journal_mode").fetchone()
    assert n in {500, 510}  # a consistent snapshot, before or after the concurrent commit
    assert mode == "delete"  # self-contained: no -wal file to carry along
    # Restore refuses to overwrite a database unless asked to.
    with pytest.raises(GatewayBackupError, match="--replace"):
        restore_database(out, db)
    store.close()
    restore_database(out, db, replace=True)
    again = Store.open(db)
    (m,) = again.conn.execute("SELECT count(*) FROM readings").fetchone()
    again.close()
    assert m == n


def test_the_commands_print_progress_and_a_json_summary(settings: CloudSettings,
                                                       tmp_path: Path) -> None:
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    with psycopg.connect(settings.db.dsn) as conn:
        create_gateway(conn, GATEWAY)
    env = {**os.environ, "SMAINT_CLOUD_DB__DSN": settings.db.dsn,
           "SMAINT_CLOUD_TRAINING__DATA_DIR": str(settings.training.data_dir),
           "SMAINT_CLOUD_ARTIFACTS__LOCAL_ROOT": str(settings.artifacts.local_root)}
    out = tmp_path / "b.tar"

    def smaint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "smaint", "cloud", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    made = smaint("backup", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "dumping the database" in made.stderr
    assert json.loads(made.stdout.splitlines()[-1])["file"] == str(out)
    refused = smaint("restore", str(out))
    assert refused.returncode == 1
    assert "pass --replace" in refused.stderr
    done = smaint("restore", str(out), "--replace")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert list(summary["backfill_requests"]) == [GATEWAY]
    assert f"asked gateway {GATEWAY}" in done.stderr
