"""Score a model on held-out windows and labelled events, as the gateway would score them.

Scores come from onnxruntime running the bundle's ONNX bytes, combined with the manifest's
reference by ``shared.anomaly`` (the gateway's code): what is measured here is what runs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import BaseModel, Field

from cloud.training.dataset import LabelledEvent, ProfileData, feature_windows
from shared.anomaly import ForestCalibration, combine
from shared.bundle import BundleError, Manifest

QUANTILES = (0.5, 0.9, 0.99, 0.999)


class Scorer:
    """A manifest and its ONNX model in an onnxruntime session; higher is more anomalous."""

    def __init__(self, manifest: Manifest, onnx_bytes: bytes) -> None:
        self.manifest = manifest
        try:
            self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises untyped errors on bad models
            raise BundleError(f"model {manifest.version} does not load: {exc}") from exc
        ref = manifest.extra.get("reference")
        if not isinstance(ref, dict):
            raise BundleError(f"model {manifest.version}: manifest has no reference statistics")
        try:
            self._calibration = ForestCalibration.from_dict(ref)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"model {manifest.version}: reference unusable: {exc!r}") from exc
        self._input = self._session.get_inputs()[0].name

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Anomaly scores of a (n, features) batch; above the manifest threshold is anomalous."""
        if not len(x):
            return np.empty(0, dtype=np.float64)
        (raw,) = self._session.run(["scores"], {self._input: np.ascontiguousarray(x)})
        return combine(self._calibration.normalise(raw), x)


class Evaluation(BaseModel):
    """One model's measures on one profile's held-out windows and labelled events."""

    heldout_windows: int = Field(description="feature windows after the cut")
    heldout_normal_windows: int = Field(description="of those, outside confirmed failures")
    heldout_anomaly_rate: float = Field(
        description="share of held-out normal windows above the threshold (false alarms)")
    score_quantiles: dict[str, float] = Field(description="held-out normal score quantiles")
    failures: int = Field(description="confirmed failures with readings in the window")
    failures_detected: int = Field(description="of those, with a window above the threshold")
    false_positives: int = Field(description="labelled false positives with readings")
    false_positives_flagged: int = Field(description="of those, still above the threshold")
    recall: float | None = Field(description="failures_detected / failures; null without any")
    false_positive_rate: float | None = Field(
        description="false_positives_flagged / false_positives; null without any")
    precision: float | None = Field(
        description="detected failures over all flagged labelled events; null if none flagged")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numeric measures for MLflow (``None`` ones left out)."""
        out: dict[str, float] = {
            f"{prefix}heldout_windows": self.heldout_windows,
            f"{prefix}heldout_normal_windows": self.heldout_normal_windows,
            f"{prefix}heldout_anomaly_rate": self.heldout_anomaly_rate,
            f"{prefix}labelled_failures": self.failures,
            f"{prefix}labelled_failures_detected": self.failures_detected,
            f"{prefix}labelled_false_positives": self.false_positives,
            f"{prefix}labelled_false_positives_flagged": self.false_positives_flagged,
        }
        out.update({f"{prefix}heldout_score_p{k}": v for k, v in self.score_quantiles.items()})
        for name in ("recall", "false_positive_rate", "precision"):
            value = getattr(self, name)
            if value is not None:
                out[f"{prefix}{name}"] = value
        return out


def evaluate(scorer: Scorer, data: ProfileData, cutoff_ms: int,
             events: list[LabelledEvent]) -> Evaluation:
    """Measure ``scorer`` on ``data``'s windows from ``cutoff_ms`` on and on every labelled event.

    Features are computed for the scorer's own spec, so a champion with another window length
    is measured on the same readings. ValueError if its spec cannot be computed from them.
    """
    windows = feature_windows(data, scorer.manifest.spec)
    heldout = windows.select(windows.ts_ms >= cutoff_ms)
    normal = heldout.select(~heldout.in_events(events, "confirmed_failure"))
    normal_scores = scorer.score(normal.x)
    threshold = scorer.manifest.threshold
    rate = float(np.mean(normal_scores > threshold)) if len(normal_scores) else 0.0
    quantiles = ({_q(q): round(float(np.quantile(normal_scores, q)), 6) for q in QUANTILES}
                 if len(normal_scores) else {})
    counts = {"confirmed_failure": [0, 0], "false_positive": [0, 0]}
    for event in events:
        inside = windows.select(windows.in_events([event], event.label))
        if not len(inside):
            continue  # no readings of that device then: the event cannot be measured
        counts[event.label][0] += 1
        counts[event.label][1] += int(np.any(scorer.score(inside.x) > threshold))
    (failures, detected), (fps, flagged) = counts["confirmed_failure"], counts["false_positive"]
    return Evaluation(
        heldout_windows=len(heldout), heldout_normal_windows=len(normal),
        heldout_anomaly_rate=rate, score_quantiles=quantiles, failures=failures,
        failures_detected=detected, false_positives=fps, false_positives_flagged=flagged,
        recall=detected / failures if failures else None,
        false_positive_rate=flagged / fps if fps else None,
        precision=detected / (detected + flagged) if detected + flagged else None,
    )


def _q(q: float) -> str:
    """Quantile as a metric-name suffix: 0.999 -> '99.9'."""
    return f"{q * 100:g}"

