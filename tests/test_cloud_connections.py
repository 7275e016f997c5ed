"""The connection checks behind GET /api/v1/system: what each names, and how a failure shows."""

from __future__ import annotations

from pathlib import Path

from cloud import connections
from cloud.artifacts.config import ArtifactStoreConfig
from cloud.training.config import TrainingConfig
from devstack.ports import free_port


def test_uris_are_shown_without_their_password() -> None:
    assert connections.redact("postgresql://alice:s3cret@db:5432/ml") == (
        "postgresql://alice:***@db:5432/ml")
    assert connections.redact("http://mlflow:5000") == "http://mlflow:5000"


def test_an_mlflow_server_that_does_not_answer_is_down() -> None:
    conn = connections.mlflow(TrainingConfig(tracking_uri=f"http://127.0.0.1:{free_port()}"))
    assert conn.state == "down"
    assert conn.detail.startswith("no answer")


def test_a_local_sqlite_store_is_ok_before_and_after_its_first_run(tmp_path: Path) -> None:
    config = TrainingConfig(data_dir=tmp_path / "training")
    assert connections.mlflow(config).detail.startswith("sqlite store not created yet")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "mlflow.db").write_bytes(b"x" * 4096)
    checked = connections.mlflow(config)
    assert (checked.state, checked.detail) == ("ok", "sqlite store, 4 KiB")


def test_an_s3_store_whose_bucket_does_not_answer_is_down() -> None:
    config = ArtifactStoreConfig(backend="s3", s3_bucket="models",
                                 s3_endpoint_url="http://127.0.0.1:1")

    def refuse() -> None:
        raise ConnectionError("connection refused")

    conn = connections.artifact_store(config, refuse)
    assert (conn.state, conn.target) == ("down", "s3://models/ at http://127.0.0.1:1")
    assert "connection refused" in conn.detail
    assert connections.artifact_store(config, lambda: None).state == "ok"
