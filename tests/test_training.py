"""Retraining from the cloud database: MLflow runs, the registry and the champion gate.

Real PostgreSQL (readings and alerts loaded through the real ingest), a real MLflow sqlite
store in tmp_path, real onnxruntime. Motor readings come from the simulator's NAB replay, with
temperature faults injected where operators later confirm failures.
"""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pytest

from cloud.access.users import Principal
from cloud.artifacts import ArtifactStore, LocalArtifactStore
from cloud.db.pool import Conn
from cloud.ingest.batch import apply_batch
from cloud.operations import alert_review, audit
from cloud.operations.alert_review import Decision
from cloud.training.champion import decide
from cloud.training.cli import main as train_cli
from cloud.training.config import GatePolicy, TrainingConfig
from cloud.training.evaluate import Evaluation
from cloud.training.pipeline import TrainingResult, manifest_alert_rate, train_models
from shared.bundle import generate_key, load_private_key, parse_public_key, read_bundle
from shared.schemas import Alert, Reading, SyncBatch
from simulator.signals import MillReplay, MotorReplay

T0 = 1_700_000_000_000  # epoch ms of the first reading
N = 2400  # readings per device, one per second
SINCE = datetime.fromtimestamp(T0 / 1000 - 60, tz=UTC)
UNTIL = datetime.fromtimestamp(T0 / 1000 + N + 60, tz=UTC)
GW = "gw-1"
OPERATOR = Principal(user_id=1, name="olga", role="operator", key_id=1)
# (device, first faulty reading, last, decision): a failure in the training part (kept out of
# the fit), one in the held-out part, and a false alarm on a healthy stretch.
EVENTS: tuple[tuple[str, int, int, Decision], ...] = (
    ("motor-1", 900, 915, "confirmed_failure"),
    ("motor-1", 2200, 2215, "confirmed_failure"),
    ("motor-2", 2100, 2110, "false_positive"),
)


def _readings(device: str, source: MotorReplay | MillReplay, kind: str) -> list[Reading]:
    out = []
    for i in range(N):
        metrics = source.next()
        for dev, first, last, decision in EVENTS:
            if dev == device and decision == "confirmed_failure" and first <= i <= last:
                metrics["temperature_c"] += 45.0  # an overheating bearing
        ts = T0 + i * 1000
        out.append(Reading(device=device, boot="b00710ad", seq=i, type=kind, ts_ms=ts,
                           device_ts_ms=ts, received_ms=ts + 5, metrics=metrics, score=None,
                           scorer="none", anomalous=False))
    return out


def _alert(n: int, device: str, first: int, last: int) -> Alert:
    return Alert(alert_id=f"{n:08x}-a1e7", device=device, opened_ms=T0 + first * 1000,
                 resolved_ms=T0 + last * 1000, severity="high", state="resolved", score=3.0,
                 scorer="stat", explanation={"temperature_c": 1.0}, updated_ms=T0 + last * 1000)


@pytest.fixture
def conn(conn: Conn) -> Conn:
    """The shared migrated database, holding two motors, one mill and three reviewed alerts."""
    rng = random.Random(7)
    readings = (_readings("motor-1", MotorReplay(0, rng), "motor")
                + _readings("motor-2", MotorReplay(3000, rng), "motor")
                + _readings("mill-1", MillReplay(0), "mill"))
    alerts = [_alert(n, dev, first, last) for n, (dev, first, last, _) in enumerate(EVENTS)]
    for seq, start in enumerate(range(0, len(readings), 2000), start=1):
        apply_batch(conn, SyncBatch(gateway=GW, batch_seq=seq, created_ms=T0,
                                    readings=readings[start:start + 2000],
                                    alerts=alerts if seq == 1 else []), GW)
    for alert, (*_, decision) in zip(alerts, EVENTS, strict=True):
        alert_review.resolve(conn, OPERATOR, GW, alert.alert_id, decision=decision)
    return conn


@pytest.fixture
def config(tmp_path: Path) -> TrainingConfig:
    """Small forests; MLflow's sqlite store and artifacts in tmp_path."""
    return TrainingConfig(data_dir=tmp_path / "mlflow", n_estimators=20,
                          holdout_fraction=0.25, min_train_windows=200, min_heldout_windows=50)


def _train(conn: Conn, config: TrainingConfig, key_path: Path, store: ArtifactStore | None = None,
           **update: object) -> TrainingResult:
    return train_models(conn, config.model_copy(update=update), load_private_key(key_path),
                        since=SINCE, until=UNTIL, profiles=["motor"], artifacts=store,
                        actor="dana")


@pytest.mark.slow
def test_training_tracks_registers_and_gates(
    conn: Conn, pg_dsn: str, config: TrainingConfig, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_path = tmp_path / "signing.key"
    generate_key(key_path)
    out = tmp_path / "models"

    # 1. The CLI trains every profile with data; each first version becomes champion.
    assert train_cli([
        "--dsn", pg_dsn, "--since", SINCE.isoformat(), "--until", UNTIL.isoformat(),
        "--out", str(out), "--key", str(key_path), "--data-dir", str(config.data_dir),
        "--tracking-uri", config.resolved_tracking_uri(), "--n-estimators", "20",
        "--quantile", "0.95", "--holdout", "0.25",
    ]) == 0
    printed = capsys.readouterr().out
    assert "motor: 4,800 readings of 2 device(s) loaded" in printed
    assert "mill: 2,400 readings of 1 device(s) loaded" in printed
    assert "smaint-motor v1 promoted" in printed
    assert "smaint-mill v1 promoted" in printed

    client = mlflow.MlflowClient(config.resolved_tracking_uri())
    first = client.get_model_version_by_alias("smaint-motor", "champion")
    assert str(first.version) == "1"
    assert first.run_id is not None
    run = client.get_run(first.run_id)
    assert run.data.params["n_estimators"] == "20"
    assert run.data.params["quantile"] == "0.95"
    assert run.data.params["window_since"] == SINCE.isoformat()
    held_from = datetime.fromisoformat(run.data.params["heldout_from"])
    assert SINCE < held_from < UNTIL
    m = run.data.metrics
    assert m["rows_train"] + m["rows_heldout"] == 2 * N
    assert 0.7 * 2 * N < m["rows_train"] < 0.8 * 2 * N  # the last quarter is held out
    assert m["labels_confirmed_failure"] == 2
    assert m["labels_false_positive"] == 1
    assert m["windows_failure_excluded"] > 0  # the training-part failure was kept out
    assert m["labelled_failures"] == 2
    assert m["recall"] == 1.0
    assert 0 < m["heldout_anomaly_rate"] < 0.5
    assert "heldout_score_p99" in m
    assert run.data.tags["gate.outcome"] == "promoted"
    assert "first version" in run.data.tags["gate.reason"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "bundle")} == {
        "bundle/motor.smb", "bundle/manifest.json", "bundle/model.onnx"}

    # The registered ONNX model is the one in the signed bundle, and onnxruntime runs it.
    trusted = [parse_public_key((out / "trusted_keys.txt").read_text())]
    manifest, onnx_bytes = read_bundle((out / "motor.smb").read_bytes(), trusted)
    assert manifest.extra["training"]["mlflow_run_id"] == run.info.run_id
    # The gateway's shadow bound comes from the held-out evaluation, not its default.
    bounds = manifest.extra["alert_rate"]
    assert bounds["max"] == pytest.approx(max(3 * bounds["heldout"], 0.05), abs=1e-5)
    assert bounds["heldout"] == pytest.approx(m["heldout_anomaly_rate"], abs=1e-5)
    model_dir = Path(mlflow.artifacts.download_artifacts(
        "models:/smaint-motor@champion", dst_path=str(tmp_path / "dl"),
        tracking_uri=config.resolved_tracking_uri()))
    assert (model_dir / "model.onnx").read_bytes() == onnx_bytes
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"X": np.zeros((2, len(manifest.spec.names)),
                                                       dtype=np.float32)})
    assert np.asarray(scores).shape == (2, 1)
    assert client.get_model_version("smaint-motor", "1").tags["bundle_version"] == \
        manifest.version

    # 2. A deliberately worse model (a low calibration quantile flags far more held-out data)
    # is registered but not promoted; the comparison and the reason are recorded.
    worse = _train(conn, config, key_path, quantile=0.8)
    (result,) = worse.trained
    decision = result.decision
    assert decision.outcome == "rejected"
    assert result.version == "2"
    assert decision.champion_version == "1"
    assert decision.champion is not None
    assert decision.challenger.heldout_anomaly_rate > decision.champion.heldout_anomaly_rate
    assert decision.challenger.heldout_windows == decision.champion.heldout_windows
    assert "held-out false-alarm rate" in decision.reason
    assert str(client.get_model_version_by_alias("smaint-motor", "champion").version) == "1"
    rejected_run = client.get_run(result.run_id)
    assert rejected_run.data.tags["gate.outcome"] == "rejected"
    assert rejected_run.data.tags["gate.reason"] == decision.reason
    assert rejected_run.data.metrics["champion.heldout_anomaly_rate"] == pytest.approx(
        decision.champion.heldout_anomaly_rate)
    assert client.get_model_version("smaint-motor", "2").tags["gate"] == "rejected"

    # 3. A better one (calibrated higher: fewer false alarms, failures still caught) is.
    # It also goes to the artifact store, where the rollout fetches bundles from.
    store = LocalArtifactStore(tmp_path / "store")
    better = _train(conn, config, key_path, store, quantile=0.999)
    (result,) = better.trained
    assert result.decision.outcome == "promoted", result.decision.reason
    assert result.decision.challenger.recall == 1.0
    assert result.artifact_key == f"models/motor/{result.bundle_version}/bundle.smb"
    stored, _ = read_bundle(store.get_bytes(result.artifact_key), trusted)
    assert stored.version == result.bundle_version
    assert client.get_model_version("smaint-motor", "3").tags["bundle_artifact_key"] == \
        result.artifact_key
    assert str(client.get_model_version_by_alias("smaint-motor", "champion").version) == "3"

    entries = audit.entries(conn, entity="model", entity_id="smaint-motor")
    assert [(e.action, e.actor) for e in entries] == [
        ("model.promote", "cli"), ("model.reject", "dana"), ("model.promote", "dana")]
    assert entries[1].before is not None
    assert entries[1].after is not None
    assert entries[1].before["champion_version"] == "1"
    assert entries[1].after["champion_version"] == "1"
    assert entries[1].after["candidate_version"] == "2"
    assert entries[2].before is not None
    assert entries[2].after is not None
    assert (entries[2].before["champion_version"], entries[2].after["champion_version"]) == (
        "1", "3")


def test_too_little_data_is_skipped_with_the_reason(
    conn: Conn, config: TrainingConfig, tmp_path: Path,
) -> None:
    key_path = tmp_path / "signing.key"
    generate_key(key_path)
    result = _train(conn, config, key_path, min_train_windows=100_000)
    assert result.trained == []
    (skipped,) = result.skipped
    assert skipped.profile == "motor"
    assert "widen the window" in skipped.reason


def _evaluation(far: float, detected: int = 2, flagged: int = 0) -> Evaluation:
    """Measures of a model on 1,000 held-out windows, 2 confirmed failures, 2 false alarms."""
    return Evaluation(
        heldout_windows=1000, heldout_normal_windows=1000, heldout_anomaly_rate=far,
        score_quantiles={}, failures=2, failures_detected=detected, false_positives=2,
        false_positives_flagged=flagged, recall=detected / 2, false_positive_rate=flagged / 2,
        precision=detected / (detected + flagged) if detected + flagged else None)


@pytest.mark.parametrize(("challenger", "outcome", "why"), [
    (_evaluation(0.010), "promoted", "no worse than champion v4"),
    (_evaluation(0.0115), "promoted", "no worse"),  # within the false-alarm tolerance
    (_evaluation(0.020), "rejected", "held-out false-alarm rate 0.0200 vs champion 0.0100"),
    (_evaluation(0.001, detected=1), "rejected", "confirmed failures detected 1/2 vs "
                                                 "champion 2/2"),
    (_evaluation(0.001, flagged=1), "rejected", "labelled false positives still flagged 1/2"),
])
def test_gate_promotes_only_a_version_no_worse_on_every_measure(
    challenger: Evaluation, outcome: str, why: str,
) -> None:
    decision = decide(challenger, _evaluation(0.010), challenger_version="5",
                      champion_version="4", policy=GatePolicy())
    assert decision.outcome == outcome
    assert why in decision.reason


def test_gate_promotes_the_first_version_and_replaces_an_unmeasurable_champion() -> None:
    first = decide(_evaluation(0.5), None, challenger_version="1", champion_version=None,
                   policy=GatePolicy())
    assert first.promoted
    assert "first version" in first.reason
    broken = decide(_evaluation(0.5), None, challenger_version="2", champion_version="1",
                    policy=GatePolicy(), champion_error="signature does not verify")
    assert broken.promoted
    assert "signature does not verify" in broken.reason


def test_train_cli_help_does_not_load_the_training_stack() -> None:
    code = ("import sys, contextlib, io\nfrom cloud.training.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\n"
            "print(sorted(m for m in ('mlflow', 'sklearn', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("rate", "upper"), [(0.0, 0.05), (0.01, 0.05), (0.04, 0.12),
                                             (0.5, 1.0)])
def test_manifest_alert_rate_is_three_times_heldout_with_a_floor(rate: float,
                                                                  upper: float) -> None:
    """alert_rate.max = max(factor x held-out rate, floor), never above 1."""
    bounds = manifest_alert_rate(_evaluation(rate), TrainingConfig())
    assert bounds["min"] == 0.0
    assert bounds["max"] == pytest.approx(upper)
