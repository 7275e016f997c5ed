"""Drift: recent feature distributions against the champion's training reference.

Real PostgreSQL (readings through the real ingest), a real MLflow sqlite store in tmp_path.
Motor readings come from the simulator's NAB replay: a model is trained on it, the same replay
again raises no drift, the replay with one metric shifted does, and the retraining it queues
runs through the champion gate.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import psycopg
import pytest

from cloud.background import jobs
from cloud.db.pool import Conn
from cloud.drift.check import check_drift, list_events
from cloud.drift.cli import main as drift_cli
from cloud.drift.config import DriftConfig
from cloud.drift.jobs import handlers, schedule_check
from cloud.drift.stats import psi_scores, reference_stats
from cloud.ingest.batch import apply_batch
from cloud.settings import CloudSettings
from cloud.training.config import TrainingConfig
from cloud.training.pipeline import train_models
from cloud.training.tracking import CHAMPION
from shared.bundle import generate_key, load_private_key
from shared.schemas import Reading, SyncBatch
from simulator.signals import MotorReplay
from tests.fixtures.cloud import running_biz

T0 = 1_700_000_000_000  # epoch ms of the first reading
N = 2000  # training readings per device, one per second
M = 1500  # readings per device in each later check window: the training part again
GW = "gw-1"
DEVICES = ("motor-1", "motor-2")
VIBRATION_SHIFT_G = 0.4  # a loosened mount: motor-1's vibration jumps and stays up


def _at(i: int) -> datetime:
    return datetime.fromtimestamp((T0 + i * 1000) / 1000, tz=UTC)


def _replay(seed: int) -> dict[str, MotorReplay]:
    """Each motor's replay from its own start, with fresh noise."""
    rng = random.Random(seed)
    return {"motor-1": MotorReplay(0, rng), "motor-2": MotorReplay(3000, rng)}


def _load(conn: Conn, sources: dict[str, MotorReplay], first: int, count: int, *, seq: int,
          shift: dict[str, float] | None = None) -> int:
    """Ingest ``count`` readings per device from index ``first``; the next batch number."""
    readings = []
    for device, source in sources.items():
        for i in range(first, first + count):
            metrics = source.next()
            if shift is not None and device in shift:
                metrics["vibration_rms_g"] += shift[device]
            ts = T0 + i * 1000
            readings.append(Reading(device=device, boot="b00710ad", seq=i, type="motor",
                                    ts_ms=ts, device_ts_ms=ts, received_ms=ts + 5,
                                    metrics=metrics, score=None, scorer="none", anomalous=False))
    for start in range(0, len(readings), 2000):
        apply_batch(conn, SyncBatch(gateway=GW, batch_seq=seq, created_ms=T0,
                                    readings=readings[start:start + 2000], alerts=[]), GW)
        seq += 1
    return seq


@pytest.fixture
def settings(tmp_path: Path, pg_dsn: str) -> CloudSettings:
    """Small forests, MLflow in tmp_path, a drift window of one check period."""
    key = tmp_path / "signing.key"
    generate_key(key)
    training = TrainingConfig(data_dir=tmp_path / "mlflow", n_estimators=20,
                              holdout_fraction=0.25, min_train_windows=200,
                              min_heldout_windows=50)
    drift = DriftConfig(window=timedelta(seconds=M), min_windows=200, psi_threshold=0.25,
                        retrain_window=timedelta(seconds=N + 2 * M + 60), signing_key=key)
    return CloudSettings(db={"dsn": pg_dsn}, training=training, drift=drift)


def test_reference_statistics_and_psi() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 2)).astype(np.float32)
    ref = reference_stats(x, ["a", "b"])
    assert len(ref["features"]["a"]["edges"]) == 9
    assert sum(ref["features"]["a"]["shares"]) == pytest.approx(1.0)
    same = rng.normal(size=(2000, 2)).astype(np.float32)
    moved = same + np.array([1.0, 0.0], dtype=np.float32)
    assert max(psi_scores(ref, ["a", "b"], same).values()) < 0.05
    scores = psi_scores(ref, ["a", "b"], moved)
    assert scores["a"] > 0.25
    assert scores["b"] < 0.05


@pytest.mark.slow
def test_shifted_replay_drifts_and_retrains_through_the_gate(
    conn: Conn, settings: CloudSettings,
) -> None:
    seq = _load(conn, _replay(7), 0, N, seq=1)
    assert settings.drift.signing_key is not None
    key = load_private_key(settings.drift.signing_key)

    # 0. Before any model exists there is nothing to compare with.
    report = check_drift(conn, settings.training, settings.drift, until=_at(N))
    assert [(p.profile, p.status) for p in report.profiles] == [("motor", "no model")]

    trained = train_models(conn, settings.training, key, since=_at(-60), until=_at(N),
                           profiles=["motor"], actor="test")
    (first,) = trained.trained
    assert first.decision.promoted
    client = mlflow.MlflowClient(settings.training.resolved_tracking_uri())
    manifest_json = client.download_artifacts(first.run_id, "bundle/manifest.json")
    assert '"drift"' in Path(manifest_json).read_text()  # the reference is in the MLflow run

    # 1. The replay the model was trained on, played again (new noise): no drift event.
    seq = _load(conn, _replay(8), N, M, seq=seq)
    report = check_drift(conn, settings.training, settings.drift, until=_at(N + M))
    (profile,) = report.profiles
    assert profile.status == "checked"
    assert profile.model_version == first.version
    assert {d.device: d.status for d in profile.devices} == dict.fromkeys(DEVICES, "stable"), \
        profile.devices
    assert report.events == []

    # 2. The replay with motor-1's vibration shifted: one event, naming vibration features.
    _load(conn, _replay(9), N + M, M, seq=seq, shift={"motor-1": VIBRATION_SHIFT_G})
    until = _at(N + 2 * M)
    report = check_drift(conn, settings.training, settings.drift, until=until)
    (event,) = report.events
    assert event.device == "motor-1"
    assert event.model_version == first.version
    assert event.moved
    assert all(f.split(".")[0] == "vibration_rms_g" for f in event.moved), event.moved
    assert "vibration_rms_g" in event.moved
    assert event.scores["vibration_rms_g"] > settings.drift.psi_threshold
    assert event.window_until == until
    assert event.retrain_job_id is not None
    statuses = {d.device: d.status for d in report.profiles[0].devices}
    assert statuses == {"motor-1": "drift", "motor-2": "stable"}

    # The same episode does not fire again on the next check.
    again = check_drift(conn, settings.training, settings.drift, until=until)
    assert again.events == []
    assert {d.device: d.status for d in again.profiles[0].devices}["motor-1"] == "same_episode"

    # 3. The queued retraining runs as the worker would run it; the gate's decision lands on
    # the event and in MLflow.
    job = jobs.claim(conn, "test-worker", 600)
    assert job is not None
    assert (job.job_id, job.kind) == (event.retrain_job_id, "drift_retrain")
    handlers(settings)[job.kind](job, conn)
    assert jobs.complete(conn, job)
    with conn.transaction():
        (done,) = list_events(conn, device="motor-1")
    assert done.retrain_run_id is not None
    assert done.gate_outcome in {"promoted", "rejected"}
    assert done.gate_reason
    assert done.retrain_version == "2"
    run = client.get_run(done.retrain_run_id)
    assert run.data.tags["gate.outcome"] == done.gate_outcome
    assert run.data.tags["gate.reason"] == done.gate_reason
    assert run.data.params["window_until"] == until.isoformat()


def test_periodic_check_is_one_job_per_slot(conn: Conn, settings: CloudSettings) -> None:
    first = schedule_check(conn, 3600.0)
    assert first is not None
    assert schedule_check(conn, 3600.0) is None  # another process already queued this slot
    job = jobs.claim(conn, "test-worker", 600)
    assert job is not None
    assert (job.job_id, job.kind) == (first, "drift_check")
    # Its run (nothing to check in an empty database) queues the next slot's check.
    handlers(settings.model_copy(update={"drift": settings.drift.model_copy(
        update={"check_every_s": 3600.0})}))[job.kind](job, conn)
    assert jobs.complete(conn, job)
    with conn.transaction():
        rows = conn.execute("SELECT kind, status, run_at > now() FROM jobs"
                            " ORDER BY job_id").fetchall()
    assert rows == [("drift_check", "done", False), ("drift_check", "queued", True)]
    assert schedule_check(conn, 3600.0, next_slot=True) is None


def test_events_api_cli_and_the_app_queues_the_periodic_check(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with running_biz(pg_dsn, drift={"enabled": True, "check_every_s": 600}) as biz:
        with psycopg.connect(pg_dsn) as c:
            queued = c.execute("SELECT kind FROM jobs WHERE status = 'queued'").fetchall()
            c.execute(
                "INSERT INTO drift_events (device_id, profile, model_name, model_version,"
                " bundle_version, window_since, window_until, windows, threshold, scores, moved)"
                " VALUES ('motor-1', 'motor', 'smaint-motor', '1', 'motor-1', now() - '1 hour'"
                "::interval, now(), 500, 0.25, '{\"vibration_rms_g\": 3.2}',"
                " ARRAY['vibration_rms_g'])")
        assert queued == [("drift_check",)]  # the app started the periodic check's chain
        assert biz.client.get("/api/v1/drift/events").status_code == 401
        resp = biz.get("viewer", "/api/v1/drift/events", device="motor-1")
        assert resp.status_code == 200
        (event,) = resp.json()
        assert event["moved"] == ["vibration_rms_g"]
        assert event["scores"] == {"vibration_rms_g": 3.2}
        assert event["gate_outcome"] is None
        assert biz.get("viewer", "/api/v1/drift/events", profile="mill").json() == []

    assert drift_cli(["events", "--dsn", pg_dsn]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "motor-1"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert drift_cli(["check", "--dsn", pg_dsn, "--no-retrain", "--tracking-uri", uri]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["profiles"] == []  # no readings in the last hours
    assert report["events"] == []


@pytest.mark.slow
def test_each_device_is_compared_with_the_model_its_gateway_runs(
    conn: Conn, settings: CloudSettings,
) -> None:
    seq = _load(conn, _replay(7), 0, N, seq=1)
    assert settings.drift.signing_key is not None
    key = load_private_key(settings.drift.signing_key)
    (v1,) = train_models(conn, settings.training, key, since=_at(-60), until=_at(N),
                         profiles=["motor"], actor="test").trained
    (v2,) = train_models(conn, settings.training, key, since=_at(-60), until=_at(N),
                         profiles=["motor"], actor="test").trained
    assert (v1.version, v2.version) == ("1", "2")
    assert v1.bundle_version != v2.bundle_version
    client = mlflow.MlflowClient(settings.training.resolved_tracking_uri())
    client.set_registered_model_alias(v2.model_name, CHAMPION, "2")  # v2 is the champion
    _load(conn, _replay(9), N, M, seq=seq, shift={"motor-1": VIBRATION_SHIFT_G})
    with conn.transaction():
        # gw-1 still runs v1; motor-2 moved to gw-2, which reports no model (champion then).
        conn.execute("INSERT INTO gateway_models (gateway_id, profile, version)"
                     " VALUES ('gw-1', 'motor', %s)", (v1.bundle_version,))
        conn.execute("UPDATE devices SET gateway_id = 'gw-2' WHERE device_id = 'motor-2'")

    report = check_drift(conn, settings.training, settings.drift, until=_at(N + M))
    (profile,) = report.profiles
    assert profile.model_version == "2"
    assert {d.device: d.model_version for d in profile.devices} == {"motor-1": "1",
                                                                    "motor-2": "2"}
    (event,) = report.events
    assert event.device == "motor-1"
    assert (event.model_version, event.bundle_version) == ("1", v1.bundle_version)
    with conn.transaction():
        (stored,) = list_events(conn, device="motor-1")
    assert stored.model_version == "1"
