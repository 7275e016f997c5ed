"""Anomaly scoring: an ONNX model per sensor profile, a robust statistical detector otherwise.

:class:`ModelScorer` scores a reading with its profile's model (edge.model_registry) once
the device's feature window is full, and with :class:`RobustZScorer` while there is no model,
while the window fills, or if the model fails at run time. Each Score names its scorer and
model version.

The statistical detector keeps, per (device, metric), the last ``window`` values. Once it has
``warmup`` of them, a new value's robust z-score is ``(x - median) / (1.4826 * MAD)``: median
and MAD are not dragged along by the very spikes we want to see, unlike mean and std. A
reading's score is its largest |z|; the per-metric |z| is the explanation an alert carries.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.onnx_model import ModelRunError, OnnxModel
from shared.features import FeatureSpec, window_features
from shared.schemas import Scorer as ScorerName
from shared.schemas import Telemetry

log = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution is 0.6745 sigma


@dataclass(frozen=True, slots=True)
class Score:
    """One reading's verdict. ``value`` is None while a detector is still warming up."""

    value: float | None
    anomalous: bool
    scorer: ScorerName
    model_version: str | None = None
    contributions: dict[str, float] = field(default_factory=dict)
    # The threshold ``value`` was judged against (models and the fallback use different
    # scales); None means the alert tracker's own.
    threshold: float | None = None
    # Computes the per-metric explanation on demand: a model's costs an inference call of
    # its own, and only the readings that open or escalate an alert need one.
    explainer: Callable[[], dict[str, float]] | None = field(
        default=None, compare=False, repr=False)

    def explanation(self) -> dict[str, float]:
        """Metric -> contribution to this score (computed now if it was left for later)."""
        if self.contributions or self.explainer is None:
            return dict(self.contributions)
        return self.explainer()


UNSCORED = Score(value=None, anomalous=False, scorer="none")


class Scorer(Protocol):
    """What the pipeline needs from a detector; an ONNX scorer implements the same."""

    threshold: float

    def score_batch(self, readings: Sequence[Telemetry]) -> list[Score]:
        """Score readings in arrival order (a detector may keep per-device state)."""
        ...


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2.0


class RobustZScorer:
    """Rolling median/MAD z-score per (device, metric); honest, cheap and model-free."""

    def __init__(self, window: int = 120, warmup: int = 30, threshold: float = 6.0) -> None:
        if not 2 <= warmup <= window:
            raise ValueError(f"warmup {warmup} must be within [2, window={window}]")
        self.window = window
        self.warmup = warmup
        self.threshold = threshold
        self._history: dict[tuple[str, str], deque[float]] = {}

    def _z(self, key: tuple[str, str], value: float) -> float | None:
        hist = self._history.get(key)
        if hist is None:
            hist = self._history[key] = deque(maxlen=self.window)
        z: float | None = None
        if len(hist) >= self.warmup:
            ordered = sorted(hist)
            med = _median(ordered)
            mad = _median(sorted(abs(v - med) for v in ordered))
            # A flat or quantised signal has MAD 0: without a floor any change would be an
            # infinite z. The floor (0.1 % of the level, at least 1e-6) keeps z finite.
            scale = max(_MAD_TO_SIGMA * mad, 1e-3 * abs(med), 1e-6)
            z = abs(value - med) / scale
        hist.append(value)
        return z

    def score_batch(self, readings: Sequence[Telemetry]) -> list[Score]:
        """Score each reading against its own past, then add it to that past."""
        out: list[Score] = []
        for r in readings:
            contributions: dict[str, float] = {}
            for name, value in r.metrics.items():
                z = self._z((r.device, name), value)
                if z is not None:
                    contributions[name] = round(z, 3)
            if not contributions:
                out.append(UNSCORED)
                continue
            peak = max(contributions.values())
            out.append(Score(value=peak, anomalous=peak > self.threshold, scorer="stat",
                             contributions=contributions, threshold=self.threshold))
        return out

    def forget(self, device: str) -> None:
        """Drop a device's history (e.g. after a reboot changed its sensors)."""
        for key in [k for k in self._history if k[0] == device]:
            del self._history[key]


class FeatureRing:
    """The last ``spec.window`` readings of one device, as shared.features.DeviceWindow keeps them.

    Same semantics (a missing metric repeats its previous value; nothing until every metric
    was seen and the window is full), stored in a doubled numpy ring so the window is always
    one contiguous slice: no per-reading list-to-array conversion on the hot path.
    """

    __slots__ = ("_buf", "_last", "_n", "_names", "spec")

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._names = spec.metrics
        self._buf = np.zeros((2 * spec.window, len(spec.metrics)), dtype=np.float64)
        self._last: list[float | None] = [None] * len(spec.metrics)
        self._n = 0

    def push(self, metrics: dict[str, float]) -> bool:
        """Add a reading; True when the window is full and can be scored."""
        last = self._last
        for i, name in enumerate(self._names):
            value = metrics.get(name)
            if value is not None:
                last[i] = value
        if None in last:
            return False
        w = self.spec.window
        idx = self._n % w
        # Written twice, w rows apart: rows [n % w, n % w + w) are then the window in order.
        self._buf[idx] = last
        self._buf[idx + w] = last
        self._n += 1
        return self._n >= w

    def window(self) -> npt.NDArray[np.float64]:
        """The current window, oldest first, shaped (window, metrics) (a view: copy to keep)."""
        start = self._n % self.spec.window
        return self._buf[start:start + self.spec.window]


ModelLookup = Callable[[str], OnnxModel | None]


class ModelScorer:
    """Scores each profile with its ONNX model, one onnxruntime call per profile per batch."""

    def __init__(self, models: ModelLookup, fallback: RobustZScorer) -> None:
        self.models = models
        self.fallback = fallback
        self.threshold = fallback.threshold
        self._rings: dict[str, FeatureRing] = {}

    def _ring(self, device: str, spec: FeatureSpec) -> FeatureRing:
        ring = self._rings.get(device)
        if ring is None or ring.spec != spec:
            # First reading, or a model with another window or metric list took over.
            ring = self._rings[device] = FeatureRing(spec)
        return ring

    def score_batch(self, readings: Sequence[Telemetry]) -> list[Score]:
        """Score readings in arrival order: model where one is ready, fallback elsewhere."""
        out: list[Score | None] = [None] * len(readings)
        groups: dict[str, tuple[OnnxModel, list[int], list[npt.NDArray[np.float64]]]] = {}
        to_fallback: list[int] = []
        for i, r in enumerate(readings):
            model = self.models(r.type)
            if model is None:
                to_fallback.append(i)
                continue
            ring = self._ring(r.device, model.manifest.spec)
            if not ring.push(r.metrics):
                to_fallback.append(i)  # the window is filling: the fallback covers it
                continue
            group = groups.get(r.type)
            if group is None:
                group = groups[r.type] = (model, [], [])
            group[1].append(i)
            # A copy: a later reading of the same device in this batch moves the ring on.
            group[2].append(ring.window().copy())
        for profile_name, (model, idxs, windows) in groups.items():
            try:
                scores = self._score_group(model, windows)
            except ModelRunError as exc:
                log.error("profile=%s model failed on %d readings, statistical fallback "
                          "scores them: %s", profile_name, len(idxs), exc)
                model.run_failures += 1
                model.last_failure = exc.reason
                to_fallback.extend(idxs)
                continue
            for i, score in zip(idxs, scores, strict=True):
                out[i] = score
        if to_fallback:
            to_fallback.sort()  # the fallback's history must see each device in order
            stat = self.fallback.score_batch([readings[i] for i in to_fallback])
            for i, score in zip(to_fallback, stat, strict=True):
                out[i] = score
        return [s if s is not None else UNSCORED for s in out]

    @staticmethod
    def _score_group(model: OnnxModel, windows: list[npt.NDArray[np.float64]]) -> list[Score]:
        features = window_features(np.stack(windows))
        values = model.score(features)
        threshold = model.threshold
        version = model.version
        out: list[Score] = []
        for i, v in enumerate(values):
            value = float(v)
            if not math.isfinite(value):
                raise ModelRunError(version, f"non-finite score {value}")
            anomalous = value > threshold
            out.append(Score(
                value=round(value, 6), anomalous=anomalous, scorer="onnx",
                model_version=version, threshold=threshold,
                explainer=partial(_explain, model, features[i]) if anomalous else None))
        return out


def _explain(model: OnnxModel, features: npt.NDArray[np.float32]) -> dict[str, float]:
    """A model's explanation of one feature vector; empty (and logged) if the model fails."""
    try:
        return model.explain(features)
    except ModelRunError as exc:
        log.error("explanation failed, alert goes out without one: %s", exc)
        return {}
