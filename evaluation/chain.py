"""The seam between the harness and the product: the gateway's detector chain as deployed.

The only module of the harness that knows how the product detects. A model is fitted with
the cloud's training code on the rows a series allows (its probationary rows), exported to
ONNX and loaded as the gateway loads it; then every row goes, in order and in the gateway's
micro-batches, through the gateway's scorer (the model with the rules where one is ready, the
rules alone elsewhere) and its alert tracker, with the settings a gateway ships with. Training
that refuses a short history leaves the chain without a model, as on a real gateway.

Each row's result is NAB's anomaly score (evaluation.alerts): 1.0 where an alert opens, else
0.49 times the score over its threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cloud.training.config import TrainingConfig
from cloud.training.train import TrainingDataError, fit_model, make_manifest, training_matrix
from edge.alert_lifecycle import AlertTracker
from edge.onnx_model import OnnxModel
from edge.score import ModelScorer, RuleScorer
from edge.settings import AlertSettings, IngestSettings, ScoringSettings
from evaluation.alerts import anomaly_scores
from shared.features import FeatureSpec
from shared.schemas import Telemetry

F64 = npt.NDArray[np.float64]
Variant = Literal["deployed", "fallback"]
VARIANTS: tuple[Variant, ...] = ("deployed", "fallback")

# What a gateway runs when nothing is configured.
_SCORING = ScoringSettings()
_ALERTS = AlertSettings()
BATCH = IngestSettings().batch_max
# The baselines' alerts re-arm after as many normal readings as the gateway's resolve.
REARM_AFTER = _ALERTS.resolve_after
_BOOT = "eval0001"


@dataclass(frozen=True)
class Replay:
    """One device's readings, in the order they arrive: shaped (rows, metrics)."""

    device: str
    values: F64
    epoch_ms: npt.NDArray[np.int64]


def fit(profile: str, metrics: Sequence[str], training: Sequence[F64]) -> OnnxModel | None:
    """The cloud's model of one profile trained on these series; None if training refuses."""
    cfg = TrainingConfig()
    spec = FeatureSpec(profile=profile, metrics=tuple(metrics), warmup=cfg.feature_warmup)
    try:
        x = training_matrix(training, spec)
    except TrainingDataError:
        return None
    fitted = fit_model(spec, x, n_estimators=cfg.n_estimators, max_samples=cfg.max_samples,
                       quantile=cfg.quantile, seed=cfg.seed)
    return OnnxModel(make_manifest(fitted, f"{profile}-eval"), fitted.onnx_bytes)


def replay(devices: Sequence[Replay], profile: str, metrics: Sequence[str],
           model: OnnxModel | None) -> list[F64]:
    """Per device, NAB's anomaly score of each row through the gateway's scorer and tracker."""
    fallback = RuleScorer(warmup=_SCORING.warmup, threshold=_SCORING.threshold)
    scorer = ModelScorer(lambda p: model if p == profile else None, fallback)
    tracker = AlertTracker(open_after=_ALERTS.open_after, resolve_after=_ALERTS.resolve_after,
                           threshold=_SCORING.threshold)
    names = tuple(metrics)
    out: list[F64] = []
    for dev in devices:
        n = len(dev.values)
        ratio = np.zeros(n)
        opened = np.zeros(n, dtype=bool)
        rows = np.asarray(dev.values, dtype=np.float64).reshape(n, -1).tolist()
        stamps = dev.epoch_ms.tolist()
        for start in range(0, n, BATCH):
            # model_construct: the rows are known-good, and validation would cost more than
            # the scoring being measured.
            batch = [Telemetry.model_construct(
                v=1, device=dev.device, boot=_BOOT, seq=i, ts_ms=stamps[i],
                uptime_ms=1000 * i, synced=True, type=profile,
                metrics=dict(zip(names, rows[i], strict=True)))
                for i in range(start, min(start + BATCH, n))]
            for i, (reading, score) in enumerate(
                    zip(batch, scorer.score_batch(batch), strict=True), start=start):
                change = tracker.observe(dev.device, reading.ts_ms, score, reading.ts_ms)
                opened[i] = change is not None and change.kind == "opened"
                if score.value is not None:
                    ratio[i] = score.value / (score.threshold or tracker.threshold)
        out.append(anomaly_scores(ratio, opened))
    return out


def run_series(values: npt.ArrayLike, epoch_ms: npt.ArrayLike, fit_rows: int,
               variant: Variant = "deployed", *, device: str = "nab-0001",
               profile: str = "nab", metrics: Sequence[str] = ("value",)) -> F64:
    """One series through the chain: fitted on its first ``fit_rows`` rows when deployed."""
    v = np.asarray(values, dtype=np.float64).reshape(len(np.asarray(values)), -1)
    model = fit(profile, metrics, [v[:fit_rows]]) if variant == "deployed" else None
    stamps = np.asarray(epoch_ms, dtype=np.int64)
    return replay([Replay(device, v, stamps)], profile, metrics, model)[0]
