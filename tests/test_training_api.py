"""Training through the API (issue 10): queue a ``train`` job, the worker runs it, MLflow lists it.

Real PostgreSQL (readings loaded through the real ingest), the app's own job worker, a real
MLflow sqlite store and local artifact store in tmp_path.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cloud.artifacts import LocalArtifactStore
from cloud.ingest.batch import apply_batch
from shared.bundle import generate_key
from shared.schemas import Reading, SyncBatch
from simulator.signals import MotorReplay
from tests.fixtures.cloud import Biz, running_biz
from tests.fixtures.waiting import wait_until

T0 = 1_700_000_000_000
N = 1600
SINCE = datetime.fromtimestamp(T0 / 1000 - 60, tz=UTC).isoformat()
UNTIL = datetime.fromtimestamp(T0 / 1000 + N + 60, tz=UTC).isoformat()


def _load_motor_readings(dsn: str) -> None:
    source = MotorReplay(0, random.Random(3))
    readings = [Reading(device="motor-1", boot="b00710ad", seq=i, type="motor",
                        ts_ms=T0 + i * 1000, device_ts_ms=T0 + i * 1000,
                        received_ms=T0 + i * 1000 + 5, metrics=source.next(), score=None,
                        scorer="none", anomalous=False) for i in range(N)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for seq, start in enumerate(range(0, N, 2000), start=1):
            apply_batch(conn, SyncBatch(gateway="gw-1", batch_seq=seq, created_ms=T0,
                                        readings=readings[start:start + 2000]), "gw-1")


def _job(biz: Biz, job_id: int) -> dict[str, Any]:
    resp = biz.get("viewer", f"/api/v1/training/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    job: dict[str, Any] = resp.json()
    return job


@pytest.mark.slow
def test_a_training_run_queued_through_the_api_is_run_and_listed(
        pg_dsn: str, tmp_path: Path) -> None:
    """POST queues a train job; the worker trains; GET lists the run with its gate decision."""
    key = tmp_path / "signing.key"
    generate_key(key)
    training = {"data_dir": str(tmp_path / "mlflow"), "n_estimators": 20,
                "holdout_fraction": 0.25, "min_train_windows": 200, "min_heldout_windows": 50,
                "signing_key_file": str(key)}
    with running_biz(pg_dsn, training=training, artifacts={"local_root": str(tmp_path / "art")},
                     jobs={"worker_enabled": True, "worker_poll_s": 0.2}) as biz:
        _load_motor_readings(pg_dsn)
        resp = biz.send("POST", "admin", "/api/v1/training/runs",
                        {"profiles": ["motor"], "since": SINCE, "until": UNTIL})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
        wait_until(lambda: _job(biz, job_id)["status"] in ("done", "failed"), 120,
                   "the train job to finish")
        job = _job(biz, job_id)
        assert job["kind"] == "train"
        assert job["status"] == "done", job["last_error"]

        resp = biz.get("viewer", "/api/v1/training/runs", profile="motor")
        assert resp.status_code == 200, resp.text
        (run,) = resp.json()
        assert run["profile"] == "motor"
        assert run["status"] == "FINISHED"
        assert run["actor"] == "admin"
        assert run["gate_outcome"] == "promoted"
        assert "first version" in run["gate_reason"]
        assert run["registered_version"] == "1"
        assert run["metrics"]["rows_train"] + run["metrics"]["rows_heldout"] == N
        # The signed bundle is in the artifact store, ready for a rollout.
        (stored,) = LocalArtifactStore(tmp_path / "art").list("models/motor/")
        assert stored == f"models/motor/{run['bundle_version']}/bundle.smb"


def test_training_api_roles_and_bad_requests(biz: Biz) -> None:
    """Only admins may retrain; a viewer follows jobs; bad bodies are refused with reasons."""
    body = {"profiles": ["motor"], "days": 1}
    assert biz.send("POST", "viewer", "/api/v1/training/runs", body).status_code == 403
    assert biz.send("POST", "operator", "/api/v1/training/runs", body).status_code == 403
    bad = biz.send("POST", "admin", "/api/v1/training/runs", {"profiles": ["toaster"]})
    assert bad.status_code == 422
    assert "unknown sensor profiles" in bad.text
    both = biz.send("POST", "admin", "/api/v1/training/runs",
                    {"since": SINCE, "days": 2})
    assert both.status_code == 422
    assert biz.get("viewer", "/api/v1/training/jobs/999999").status_code == 404
    queued = biz.send("POST", "admin", "/api/v1/training/runs", body)
    assert queued.status_code == 202
    job = _job(biz, queued.json()["job_id"])
    assert (job["kind"], job["status"]) == ("train", "queued")  # the worker is off here
