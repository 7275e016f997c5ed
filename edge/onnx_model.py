"""An anomaly model on the gateway: a verified bundle turned into an onnxruntime session."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge.exceptions import GatewayError
from shared.anomaly import ForestCalibration, combine, explain
from shared.bundle import BundleError, Manifest

log = logging.getLogger(__name__)


class ModelRunError(GatewayError):
    """A loaded model failed to score a batch (onnxruntime refused the input or crashed)."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"model {version}: {reason}")
        self.version = version
        self.reason = reason


class OnnxModel:
    """Scores feature vectors with the bundle's ONNX model; higher scores are more anomalous."""

    def __init__(self, manifest: Manifest, onnx_bytes: bytes) -> None:
        self.manifest = manifest
        opts = ort.SessionOptions()
        # One intra-op thread costs ~10 % per call (LIMITS.md) and leaves the second core to
        # ingest and SQLite on a two-core Pi.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors on bad models
            raise BundleError(f"model {manifest.version} does not load: {exc}") from exc
        inputs = self.session.get_inputs()
        n_features = len(manifest.spec.names)
        if len(inputs) != 1 or inputs[0].shape[-1] not in (n_features, None, "None"):
            raise BundleError(
                f"model {manifest.version} takes {[(i.name, i.shape) for i in inputs]}, "
                f"its manifest promises {n_features} features")
        self._input = inputs[0].name
        # Batches this model failed to score since it was loaded, and the last reason: the
        # rollout (edge.rollout) rolls a freshly swapped-in version back on them.
        self.run_failures = 0
        self.last_failure = ""
        outputs = [o.name for o in self.session.get_outputs()]
        if "scores" not in outputs:
            raise BundleError(f"model {manifest.version} has no 'scores' output ({outputs})")
        self._normal, self._calibration = _reference(manifest, n_features)
        # Fail now, not on the first reading: a model that cannot score a vector is corrupt.
        try:
            self.score(np.zeros((1, n_features), dtype=np.float32))
        except ModelRunError as exc:
            raise BundleError(f"model {manifest.version} cannot score: {exc.reason}") from exc

    @property
    def version(self) -> str:
        """The model version from its manifest."""
        return self.manifest.version

    @property
    def threshold(self) -> float:
        """Scores above this are anomalous."""
        return self.manifest.threshold

    def score(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Anomaly scores of a (n, features) batch (shared.anomaly; above 1.0 is anomalous)."""
        x = np.ascontiguousarray(features, dtype=np.float32)  # no copy in the usual case
        try:
            (raw,) = self.session.run(["scores"], {self._input: x})
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise ModelRunError(self.version, f"inference failed: {exc}") from exc
        return combine(self._calibration.normalise(raw), x)

    def explain(self, features: npt.NDArray[np.float32]) -> dict[str, float]:
        """What drove one vector's score, per metric and feature (shared.anomaly.explain)."""
        return explain(self.score, features, self.manifest.spec.metrics, self._normal)


def _reference(
    manifest: Manifest, n_features: int
) -> tuple[npt.NDArray[np.float32], ForestCalibration]:
    """A model's reference (normal feature values, calibration); BundleError if unusable."""
    ref = manifest.extra.get("reference")
    try:
        if not isinstance(ref, dict):
            raise TypeError("no 'reference' object")
        normal = np.asarray(ref["feature_median"], dtype=np.float32)
        calibration = ForestCalibration.from_dict(ref)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"model {manifest.version}: manifest reference unusable: {exc!r}") from exc
    if normal.shape != (n_features,):
        raise BundleError(f"model {manifest.version}: reference has the wrong feature count")
    return normal, calibration
