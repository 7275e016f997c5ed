"""Gateway scoring: the rules first, then the profile's signed ONNX model with the rules.

Real parts throughout: bundles trained and signed by cloud.training, verified and run by
onnxruntime, a real gateway on a real Mosquitto writing real SQLite rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from cloud.training.onnx_export import isolation_forest_onnx
from cloud.training.train import train_bundle
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.model_registry import ModelRegistry
from edge.onnx_model import OnnxModel
from edge.score import ModelScorer, RuleScorer
from edge.settings import GatewaySettings
from shared import topics
from shared.bundle import Manifest, public_key_text, read_bundle, write_bundle
from shared.features import DeviceFeatures, FeatureSpec, series_features
from shared.schemas import Telemetry
from tests.fixtures.gateway import Publisher, running_gateway

MOTOR = ("temperature_c", "vibration_rms_g", "current_a")


def motor_series(seed: int, n: int) -> np.ndarray:
    """A healthy motor: slow temperature wave, steady vibration and current, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([60 + 2 * np.sin(t / 40) + rng.normal(0, 0.3, n),
                     0.8 + rng.normal(0, 0.03, n), 9.5 + rng.normal(0, 0.2, n)], axis=1)


def telemetry(device: str, seq: int, row: np.ndarray, kind: str = "motor") -> Telemetry:
    """A Telemetry message carrying one row of a motor series."""
    return Telemetry(v=1, device=device, boot="0badc0de", seq=seq,
                     ts_ms=1_700_000_000_000 + 1000 * seq, uptime_ms=1000 * seq, synced=True,
                     type=kind, metrics=dict(zip(MOTOR, map(float, row), strict=True)))


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def motor_bundle(key: Ed25519PrivateKey) -> tuple[Manifest, bytes]:
    return train_bundle("motor", [motor_series(s, 500) for s in range(3)], key, n_estimators=20,
                        warmup=10, version="motor-test-1")


def resigned(bundle: bytes, key: Ed25519PrivateKey, signer: Ed25519PrivateKey | None = None,
             **changes: Any) -> bytes:
    """``bundle``'s model (signed by ``key``) with manifest ``changes``, signed by ``signer``."""
    manifest, onnx_bytes = read_bundle(bundle, [key.public_key()])
    fields = {f: getattr(manifest, f) for f in ("profile", "version", "spec", "threshold",
                                                 "created_ms", "onnx_sha256", "extra")}
    return write_bundle(Manifest(**{**fields, **changes}), onnx_bytes, signer or key)


# -- streaming features -------------------------------------------------------------------

metric_rows = st.lists(
    st.dictionaries(st.sampled_from(MOTOR),
                    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False) | st.sampled_from(
                        [0.0, 1.0, 2.0]), min_size=0, max_size=3),
    max_size=60)


@settings(max_examples=120, deadline=None)
@given(metric_rows, st.integers(2, 9))
def test_online_features_equal_the_training_features_and_stay_finite(
    rows: list[dict[str, float]], warmup: int
) -> None:
    spec = FeatureSpec("motor", MOTOR, warmup)
    online = [f for f in map(DeviceFeatures(spec).push, rows) if f is not None]
    # Training sees a series with gaps where a metric was missing (shared.features).
    table = np.array([[r.get(m, np.nan) for m in MOTOR] for r in rows]).reshape(-1, len(MOTOR))
    offline = series_features(table, spec)
    assert offline.shape == (len(online), len(spec.names))
    np.testing.assert_allclose(offline, np.asarray(online, dtype=np.float32).reshape(
        offline.shape), rtol=1e-6)
    assert np.isfinite(offline).all()


def test_model_scores_online_equal_the_training_features_of_the_same_series(
    motor_bundle: tuple[Manifest, bytes], key: Ed25519PrivateKey
) -> None:
    manifest, bundle = motor_bundle
    model = OnnxModel(*read_bundle(bundle, [key.public_key()]))
    scorer = ModelScorer(lambda kind: model if kind == "motor" else None, RuleScorer(10))
    series = {"sc-a": motor_series(11, 60), "sc-b": motor_series(12, 60)}
    stream = [telemetry(d, i, s[i]) for i in range(60) for d, s in series.items()]
    scores = []
    for start in range(0, len(stream), 17):  # micro-batches that cut windows at odd places
        scores += scorer.score_batch(stream[start:start + 17])
    w = manifest.spec.warmup
    for device, s in series.items():
        mine = [sc for t, sc in zip(stream, scores, strict=True) if t.device == device]
        assert {sc.scorer for sc in mine[:w]} == {"none"}  # both still warming up
        assert {(sc.scorer, sc.model_version) for sc in mine[w:]} == {("onnx", "motor-test-1")}
        offline = model.score(series_features(s, manifest.spec))
        online = np.array([sc.value for sc in mine[w:]], dtype=np.float64)
        np.testing.assert_allclose(online, offline, rtol=1e-5)


def test_anomalous_onnx_scores_carry_the_model_explanation(
    motor_bundle: tuple[Manifest, bytes], key: Ed25519PrivateKey
) -> None:
    _, bundle = motor_bundle
    model = OnnxModel(*read_bundle(bundle, [key.public_key()]))
    scorer = ModelScorer(lambda _: model, RuleScorer(10))
    s = motor_series(5, 40)
    s[-1, 0] += 60.0  # a 60 °C jump on the newest reading
    last = scorer.score_batch([telemetry("sc-x", i, row) for i, row in enumerate(s)])[-1]
    assert last.scorer == "onnx"
    assert last.anomalous
    assert last.threshold == model.threshold
    feats = series_features(s, model.manifest.spec)[-1]
    explanation = last.explanation()  # computed on demand: only alerts need one
    assert explanation == model.explain(feats)
    metrics = {m: w for m, w in explanation.items() if m in MOTOR}
    assert max(metrics, key=lambda m: metrics[m]) == "temperature_c"
    assert metrics["temperature_c"] > 0.9
    assert max((k for k in explanation if k not in MOTOR), key=lambda k: explanation[k]) in {
        "temperature_c.excess", "temperature_c.dev", "temperature_c.jump"}


def test_compact_onnx_export_scores_exactly_like_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 15)).astype(np.float32)
    forest = IsolationForest(n_estimators=40, max_samples=256, max_features=0.6,
                             random_state=1).fit(x)
    session = ort.InferenceSession(isolation_forest_onnx(forest, 15),
                                   providers=["CPUExecutionProvider"])
    probe = (rng.normal(size=(500, 15)) * 2).astype(np.float32)
    (onnx_scores,) = session.run(["scores"], {"X": probe})
    np.testing.assert_allclose(onnx_scores.reshape(-1), forest.decision_function(probe),
                               atol=1e-5)


# -- the registry -------------------------------------------------------------------------


def install(models_dir: Path, name: str, data: bytes) -> None:
    """Copy a bundle in the way an operator or OTA would: write, then rename into place."""
    tmp = models_dir / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, models_dir / name)


@pytest.mark.expected_errors("edge.model_registry", r"refused for profile")
def test_registry_refuses_bad_bundles_with_a_reason_and_keeps_the_last_good_model(
    motor_bundle: tuple[Manifest, bytes], key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    _, bundle = motor_bundle
    reg = ModelRegistry(tmp_path, [key.public_key()])
    assert reg.refresh() == []
    install(tmp_path, "motor.smb", b"PK\x03\x04 not really a zip")
    assert reg.refresh() == []
    assert "not a readable zip" in reg.refused["motor"]
    install(tmp_path, "motor.smb", bundle)
    assert reg.refresh() == ["motor"]
    assert reg.versions() == {"motor": "motor-test-1"}
    cases = {
        "signature does not verify": resigned(bundle, key, Ed25519PrivateKey.generate()),
        "holds a model for 'mill'": resigned(
            bundle, key, profile="mill", spec=FeatureSpec("mill", MOTOR, 10)),
        "does not report": resigned(
            bundle, key, spec=FeatureSpec("motor", ("temperature_c", "rpm", "current_a"), 10)),
    }
    for reason, data in cases.items():
        install(tmp_path, "motor.smb", data)
        assert reg.refresh() == []
        assert reason in reg.refused["motor"]
        assert reg.versions() == {"motor": "motor-test-1"}  # the good model scores on
    (tmp_path / "motor.smb").unlink()
    assert reg.refresh() == ["motor"]
    assert reg.get("motor") is None


# -- acceptance: a real gateway ---------------------------------------------------------------


def scorers(db: Path, device: str) -> list[tuple[int, str, str | None]]:
    """(seq, scorer, model_version) of a device's stored readings, by seq."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, scorer, model_version FROM readings WHERE device = ? "
                            "ORDER BY seq", (device,))
        return [(int(s), sc, mv) for s, sc, mv in rows]


def payload(device: str, seq: int, row: np.ndarray) -> str:
    """The JSON a device would publish for one row."""
    return telemetry(device, seq, row).model_dump_json()


@pytest.mark.expected_errors("edge.model_registry", r"refused for profile")
async def test_statistical_fallback_until_a_signed_model_is_installed_then_onnx_takes_over(
    broker: PrivateMosquitto, tmp_path: Path, motor_bundle: tuple[Manifest, bytes],
    key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture,
) -> None:
    _, bundle = motor_bundle
    db, models = tmp_path / "gw.db", tmp_path / "models"
    models.mkdir()
    settings_ = GatewaySettings(
        gateway_id="gw-scoring", mqtt=broker.gateway_mqtt(), storage={"path": str(db)},
        http={"port": free_port()},
        scoring={"models_dir": str(models), "trusted_keys": [public_key_text(key.public_key())],
                 "model_poll_s": 0.1, "warmup": 4})
    dev = "sc-motor-1"
    series = motor_series(7, 150)
    sent = 0

    async def publish(pub: Publisher, n: int) -> None:
        nonlocal sent
        msgs = [(topics.telemetry(dev), payload(dev, s, series[s])) for s in range(sent, sent + n)]
        def send() -> None:
            for t, p in msgs:
                pub.publish(t, p)

        await asyncio.to_thread(send)
        sent += n

    caplog.set_level(logging.INFO, logger="edge.model_registry")
    async with running_gateway(settings_) as gw:
        with Publisher(broker, "pub-scoring") as pub:
            # 1. No model for motor: the rules score (after their warm-up).
            await publish(pub, 30)
            await gw.wait_status(lambda s: s["stored"] >= 30)
            rows = scorers(db, dev)
            assert {sc for _, sc, _ in rows[4:]} == {"stat"}
            assert all(mv is None for _, _, mv in rows)

            # 2. A corrupt and then a foreign-signed bundle: refused, logged, stat goes on.
            install(models, "motor.smb", b"garbage, not a bundle")
            await gw.wait_status(lambda s: "motor" in s["models_refused"])
            install(models, "motor.smb", resigned(bundle, key, Ed25519PrivateKey.generate()))
            status = await gw.wait_status(
                lambda s: "signature" in s["models_refused"].get("motor", ""))
            assert status["models"] == {}
            await publish(pub, 20)
            await gw.wait_status(lambda s: s["stored"] >= 50)
            assert {sc for _, sc, _ in scorers(db, dev)[30:]} == {"stat"}
            refusals = [r.getMessage() for r in caplog.records
                        if r.name == "edge.model_registry" and r.levelno == logging.ERROR]
            assert any("not a readable zip" in m for m in refusals)
            assert any("signature does not verify" in m for m in refusals)

            # 3. The signed bundle: picked up without a restart, ONNX takes over.
            install(models, "motor.smb", bundle)
            status = await gw.wait_status(lambda s: s["models"] == {"motor": "motor-test-1"})
            assert status["models_refused"] == {}
            await publish(pub, 40)
            await gw.wait_status(lambda s: s["stored"] >= 90)
    rows = scorers(db, dev)
    assert [seq for seq, _, _ in rows] == list(range(90))
    after = rows[50:]
    # The model's feature state warms up (10 readings) on readings it sees; the rules cover those.
    assert {(sc, mv) for _, sc, mv in after[:10]} == {("stat", None)}
    assert {(sc, mv) for _, sc, mv in after[10:]} == {("onnx", "motor-test-1")}
    with sqlite3.connect(db) as conn:
        (unscored,) = conn.execute(
            "SELECT count(*) FROM readings WHERE scorer = 'onnx' AND score IS NULL").fetchone()
    assert unscored == 0
    assert gw.task.done()
    assert gw.task.exception() is None  # refusals never stopped it
