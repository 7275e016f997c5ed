"""Anomaly scoring: the rules of shared.anomaly on every device, an ONNX model where one exists.

Every device's readings go through the streaming features of :mod:`shared.features` (its own
state per metric: envelope, level, spread, resolution). :class:`RuleScorer` judges them with the
rules alone: novelty against the device's own history, a real detector that serves every
device until its profile has a model. :class:`ModelScorer` scores a profile's devices with its
ONNX model combined with the same rules (shared.anomaly.combine), and falls back to the rules
while there is no model or if the model fails at run time. Each Score names its scorer and
model version, and explains itself on demand (shared.anomaly.explain).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.onnx_model import ModelRunError, OnnxModel
from shared.anomaly import explain, row_rule_score, rule_score
from shared.features import DEFAULT_WARMUP, DeviceFeatures, FeatureSpec
from shared.schemas import Scorer as ScorerName
from shared.schemas import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Score:
    """One reading's verdict. ``value`` is None while a detector is still warming up."""

    value: float | None
    anomalous: bool
    scorer: ScorerName
    model_version: str | None = None
    contributions: dict[str, float] = field(default_factory=dict)
    # The threshold ``value`` was judged against; None means the alert tracker's own.
    threshold: float | None = None
    # Computes the explanation on demand: it costs a scoring call of its own, and only the
    # readings that open or escalate an alert need one.
    explainer: Callable[[], dict[str, float]] | None = field(
        default=None, compare=False, repr=False)

    def explanation(self) -> dict[str, float]:
        """Metric (and metric.feature) -> share of this score (computed now if left for later)."""
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


def _rules_explanation(features: npt.NDArray[np.float32], metrics: tuple[str, ...]
                       ) -> dict[str, float]:
    return explain(rule_score, features, metrics, np.zeros_like(features))


def rules_verdict(features: list[float], metrics: tuple[str, ...], threshold: float) -> Score:
    """The rules' Score of one reading's features (explained on demand)."""
    value = row_rule_score(features)
    anomalous = value > threshold
    return Score(
        value=round(value, 4), anomalous=anomalous, scorer="stat", threshold=threshold,
        explainer=partial(_rules_explanation, np.asarray(features, dtype=np.float32), metrics)
        if anomalous else None)


class RuleScorer:
    """The rules of shared.anomaly over each device's streaming features; needs no model."""

    def __init__(self, warmup: int = DEFAULT_WARMUP, threshold: float = 1.0) -> None:
        if warmup < 2:
            raise ValueError(f"warmup {warmup} must be at least 2 readings")
        self.warmup = warmup
        self.threshold = threshold
        self._devices: dict[str, tuple[DeviceFeatures, frozenset[str]]] = {}

    def _state(self, r: Telemetry) -> DeviceFeatures:
        entry = self._devices.get(r.device)
        if entry is not None and r.metrics.keys() <= entry[1]:
            return entry[0]
        # First reading, or a sensor appeared: its metrics start learning from here.
        known = entry[1] if entry is not None else frozenset()
        metrics = known | r.metrics.keys()
        state = DeviceFeatures(FeatureSpec(profile=r.type, metrics=tuple(sorted(metrics)),
                                           warmup=self.warmup))
        self._devices[r.device] = (state, frozenset(metrics))
        return state

    def score_batch(self, readings: Sequence[Telemetry]) -> list[Score]:
        """Score each reading against its device's past, then let the device learn from it."""
        out: list[Score] = []
        threshold = self.threshold
        for r in readings:
            state = self._state(r)
            feats = state.push(r.metrics)
            if feats is None:
                out.append(UNSCORED)
                continue
            out.append(rules_verdict(feats, state.spec.metrics, threshold))
        return out

    def forget(self, device: str) -> None:
        """Drop a device's learned state (e.g. after its sensors were replaced)."""
        self._devices.pop(device, None)

    @property
    def devices(self) -> int:
        """Devices with a learned state."""
        return len(self._devices)


ModelLookup = Callable[[str], OnnxModel | None]


class ModelScorer:
    """Scores each profile with its ONNX model, one onnxruntime call per profile per batch.

    A device of a profile with a model keeps one feature state, in the model's spec; the model
    scores its readings combined with the rules (shared.anomaly.combine), and if the model
    fails at run time the rules alone judge the same features. The rules' own scorer
    (``fallback``) covers profiles without a model and a device's first readings while its
    state in the model's spec warms up.
    """

    def __init__(self, models: ModelLookup, fallback: RuleScorer) -> None:
        self.models = models
        self.fallback = fallback
        self.threshold = fallback.threshold
        self._states: dict[str, DeviceFeatures] = {}

    def _state(self, device: str, spec: FeatureSpec) -> DeviceFeatures:
        state = self._states.get(device)
        if state is None or state.spec != spec:
            # First reading, or a model with another metric list or warm-up took over.
            state = self._states[device] = DeviceFeatures(spec)
        return state

    def score_batch(self, readings: Sequence[Telemetry]) -> list[Score]:
        """Score readings in arrival order: model where one is ready, rules elsewhere."""
        out: list[Score | None] = [None] * len(readings)
        groups: dict[str, tuple[OnnxModel, list[int], list[list[float]]]] = {}
        to_rules: list[int] = []
        for i, r in enumerate(readings):
            model = self.models(r.type)
            feats = (self._state(r.device, model.manifest.spec).push(r.metrics)
                     if model is not None else None)
            if model is None or feats is None:
                to_rules.append(i)  # no model, or this device is new to it
                continue
            group = groups.get(r.type)
            if group is None:
                group = groups[r.type] = (model, [], [])
            group[1].append(i)
            group[2].append(feats)
        for profile_name, (model, idxs, rows) in groups.items():
            try:
                scores = self._score_group(model, np.asarray(rows, dtype=np.float32))
            except ModelRunError as exc:
                log.error("profile=%s model failed on %d readings, the rules score them: %s",
                          profile_name, len(idxs), exc)
                model.run_failures += 1
                model.last_failure = exc.reason
                metrics = model.manifest.spec.metrics
                threshold = self.fallback.threshold
                scores = [rules_verdict(f, metrics, threshold) for f in rows]
            for i, score in zip(idxs, scores, strict=True):
                out[i] = score
        if to_rules:
            # The rules' states must see each device in order: one call, in arrival order.
            for i, score in zip(to_rules, self.fallback.score_batch(
                    [readings[i] for i in to_rules]), strict=True):
                out[i] = score
        return [s if s is not None else UNSCORED for s in out]

    @staticmethod
    def _score_group(model: OnnxModel, features: npt.NDArray[np.float32]) -> list[Score]:
        values = model.score(features)
        threshold = model.threshold
        version = model.version
        out: list[Score] = []
        for i, v in enumerate(values.tolist()):
            if not math.isfinite(v):
                raise ModelRunError(version, f"non-finite score {v}")
            anomalous = v > threshold
            out.append(Score(
                value=round(v, 6), anomalous=anomalous, scorer="onnx",
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
