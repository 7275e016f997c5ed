"""Signed model bundles: trained in the cloud, verified and run by onnxruntime on the gateway."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.training.train import TrainingDataError, train_bundle
from edge.onnx_model import OnnxModel
from shared.bundle import BundleError, generate_key, load_private_key, read_bundle
from shared.features import series_features


def _normal_series(seed: int, n: int = 600) -> np.ndarray:
    # The temperature cycle (~94 readings) fits in the feature warm-up (150): the rules flag
    # values beyond anything a device showed, so a warm-up shorter than the signal's cycle
    # would (rightly) see its first trough as new.
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    temp = 40 + 2 * np.sin(t / 15) + rng.normal(0, 0.3, n)
    vib = 0.5 + rng.normal(0, 0.05, n).clip(-0.4, None)
    cur = 12 + rng.normal(0, 0.4, n)
    return np.stack([temp, vib, cur], axis=1)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def bundle(key: Ed25519PrivateKey) -> bytes:
    _, data = train_bundle("motor", [_normal_series(s) for s in range(4)], key, n_estimators=50)
    return data


def test_onnx_scores_match_and_spike_scores_above_threshold(
    bundle: bytes, key: Ed25519PrivateKey
) -> None:
    manifest, onnx_bytes = read_bundle(bundle, [key.public_key()])
    model = OnnxModel(manifest, onnx_bytes)
    normal = series_features(_normal_series(99), manifest.spec)
    scores = model.score(normal)
    assert (scores > model.threshold).mean() < 0.02
    spiked = _normal_series(98)
    spiked[-1, 0] += 40.0  # a 40 °C jump on the newest reading
    feats = series_features(spiked, manifest.spec)[-1:]
    assert model.score(feats)[0] > model.threshold
    explanation = model.explain(feats)
    assert max(explanation, key=lambda m: explanation[m]) == "temperature_c"


def test_tampered_model_is_refused(bundle: bytes, key: Ed25519PrivateKey) -> None:
    src = zipfile.ZipFile(io.BytesIO(bundle))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            data = src.read(name)
            zf.writestr(name, data[:-8] + b"\x00" * 8 if name == "model.onnx" else data)
    with pytest.raises(BundleError, match="checksum"):
        read_bundle(out.getvalue(), [key.public_key()])


def test_bundle_signed_by_unknown_key_is_refused(bundle: bytes) -> None:
    with pytest.raises(BundleError, match="signature"):
        read_bundle(bundle, [Ed25519PrivateKey.generate().public_key()])


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_garbage_is_refused_with_reason(data: bytes, key: Ed25519PrivateKey) -> None:
    with pytest.raises(BundleError):
        read_bundle(data, [key.public_key()])


def test_signed_but_corrupt_onnx_fails_to_load(key: Ed25519PrivateKey) -> None:
    _, data = train_bundle("motor", [_normal_series(1)], key, n_estimators=5)
    manifest_ok, _ = read_bundle(data, [key.public_key()])
    with pytest.raises(BundleError, match="does not load"):
        OnnxModel(manifest_ok, b"\x08\x07garbage-onnx")


def test_key_file_round_trip(tmp_path: Path) -> None:
    pub = generate_key(tmp_path / "k")
    assert load_private_key(tmp_path / "k").public_key().public_bytes_raw() == (
        pub.public_bytes_raw())


def test_too_little_training_data_is_a_clear_error(key: Ed25519PrivateKey) -> None:
    with pytest.raises(TrainingDataError, match="warm-up of 150; need at least 50"):
        train_bundle("motor", [_normal_series(0, n=190)], key)


def test_a_short_history_still_gets_a_model_that_runs(key: Ed25519PrivateKey) -> None:
    manifest, data = train_bundle("motor", [_normal_series(0, n=220)], key, n_estimators=20)
    assert manifest.extra["training"]["windows"] == 70
    model = OnnxModel(*read_bundle(data, [key.public_key()]))
    assert model.score(series_features(_normal_series(5, n=220), manifest.spec)).shape == (70,)
