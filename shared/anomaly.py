"""How features become one anomaly score and its explanation, on the gateway and in training.

A reading's score is the larger of two views, each normalised so that 1.0 is its threshold:

- the rules, per metric: the largest of ``excess / EXCESS_LIMIT``, ``dev / DEV_LIMIT`` and
  ``stuck / STUCK_LIMIT`` (shared.features). Novelty against the device's own history: a
  real detector on its own, which serves every device until a model exists;
- the model: an Isolation Forest's anomaly score (the negated ``decision_function``), scaled so
  that the training median is 0 and the calibrated threshold 1. The threshold lies
  ``FOREST_MARGIN`` beyond the training score at the chosen quantile (by default the most
  anomalous training reading: training data is normal operation), and at least
  ``MIN_FOREST_SPAN`` above the median, so flat or quantised training data (all scores equal)
  cannot make the model fire on rounding noise. On NAB a threshold at the 99.9 % quantile
  cost 8 points in false alarms (docs/evaluation.md).

Above 1.0 is anomalous. :func:`explain` says which metrics and features drove a score: the drop
in score when each is replaced by its normal value (occlusion), as shares that sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# The features each metric contributes, in vector order (computed by shared.features).
FEATURES_PER_METRIC = ("excess", "dev", "jump", "stuck")
_EXCESS, _DEV, _STUCK = 0, 1, 3

# Where each feature alone means "anomalous", tuned on NAB (docs/evaluation.md): 1 % of the
# envelope's width beyond anything seen, 12 usual spreads off the recent level, a value
# unchanged three times longer than it ever was.
EXCESS_LIMIT = 0.01
DEV_LIMIT = 12.0
STUCK_LIMIT = 3.0
# The forest's threshold: this factor beyond the training quantile's distance from the median,
# and at least this far above the median (the score's natural range is about 0.5 wide).
FOREST_MARGIN = 1.1
MIN_FOREST_SPAN = 0.1
# Explanation entries below this share are left out.
_MIN_SHARE = 0.01

F64 = npt.NDArray[np.float64]


def metric_rule_score(excess: float, dev: float, stuck: float) -> float:
    """One metric's rule score (above 1.0 is anomalous)."""
    return max(excess / EXCESS_LIMIT, dev / DEV_LIMIT, stuck / STUCK_LIMIT)


def row_rule_score(features: Sequence[float]) -> float:
    """The rule score of one feature vector (a plain list): the gateway's per-reading path."""
    per = len(FEATURES_PER_METRIC)
    return max((metric_rule_score(features[i + _EXCESS], features[i + _DEV],
                                  features[i + _STUCK]) for i in range(0, len(features), per)),
               default=0.0)


def rule_scores(features: npt.ArrayLike) -> F64:
    """Per row and metric, the rule score: (n, metrics * 4) features -> (n, metrics)."""
    x = np.asarray(features, dtype=np.float64)
    per = x.reshape(x.shape[0], -1, len(FEATURES_PER_METRIC))
    out: F64 = np.maximum(np.maximum(per[:, :, _EXCESS] / EXCESS_LIMIT,
                                     per[:, :, _DEV] / DEV_LIMIT),
                          per[:, :, _STUCK] / STUCK_LIMIT)
    return out


def rule_score(features: npt.ArrayLike) -> F64:
    """Per row, the largest rule score of any metric."""
    out: F64 = rule_scores(features).max(axis=1)
    return out


@dataclass(frozen=True)
class ForestCalibration:
    """Where a forest's anomaly score is 0 (training median) and 1 (threshold)."""

    median: float
    threshold: float

    @classmethod
    def fit(cls, decision: npt.ArrayLike, quantile: float) -> ForestCalibration:
        """Calibrate on the training rows' ``decision_function`` values."""
        a = -np.asarray(decision, dtype=np.float64)
        median = float(np.median(a))
        span = FOREST_MARGIN * (float(np.quantile(a, quantile)) - median)
        return cls(median=median, threshold=median + max(span, MIN_FOREST_SPAN))

    def normalise(self, decision: npt.ArrayLike) -> F64:
        """Model scores from ``decision_function`` values: 1.0 at the threshold."""
        a = -np.asarray(decision, dtype=np.float64).reshape(-1)
        out: F64 = (a - self.median) / (self.threshold - self.median)
        return out

    def to_dict(self) -> dict[str, float]:
        """JSON form for manifests."""
        return {"forest_median": self.median, "forest_threshold": self.threshold}

    @classmethod
    def from_dict(cls, ref: dict[str, object]) -> ForestCalibration:
        """Parse the manifest form; KeyError/TypeError/ValueError if incomplete or absurd."""
        median = float(ref["forest_median"])  # type: ignore[arg-type]
        threshold = float(ref["forest_threshold"])  # type: ignore[arg-type]
        if not np.isfinite([median, threshold]).all() or threshold <= median:
            raise ValueError(f"forest threshold {threshold} not above its median {median}")
        return cls(median=median, threshold=threshold)


def combine(model: npt.ArrayLike, features: npt.ArrayLike) -> F64:
    """One anomaly score per row: the larger of the model's and the rules' (1.0 = threshold)."""
    out: F64 = np.maximum(np.asarray(model, dtype=np.float64).reshape(-1), rule_score(features))
    return out


def explain(score: Callable[[npt.NDArray[np.float32]], F64], features: npt.ArrayLike,
            metrics: Sequence[str], normal: npt.ArrayLike) -> dict[str, float]:
    """What drove one feature vector's score: shares per metric and per ``metric.feature``.

    Each metric (all its features) and then each feature alone is replaced by its ``normal``
    value; the drop in ``score`` is its contribution. Metric shares sum to 1, feature shares
    too; entries under 1 % are left out. All variants go through ``score`` in one call.
    """
    x = np.asarray(features, dtype=np.float32).reshape(-1)
    ref = np.asarray(normal, dtype=np.float32).reshape(-1)
    per = len(FEATURES_PER_METRIC)
    n = len(x)
    variants = np.repeat(x[None, :], 1 + len(metrics) + n, axis=0)
    for i in range(len(metrics)):
        variants[1 + i, i * per:(i + 1) * per] = ref[i * per:(i + 1) * per]
    for j in range(n):
        variants[1 + len(metrics) + j, j] = ref[j]
    scores = score(variants)
    drops = np.clip(scores[0] - scores[1:], 0.0, None)
    out: dict[str, float] = {}
    for names, part in ((list(metrics), drops[:len(metrics)]),
                        ([f"{m}.{f}" for m in metrics for f in FEATURES_PER_METRIC],
                         drops[len(metrics):])):
        total = float(part.sum())
        if total <= 0.0:
            continue
        for name, d in zip(names, part, strict=True):
            share = float(d) / total
            if share >= _MIN_SHARE:
                out[name] = round(share, 4)
    return out
