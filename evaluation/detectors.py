"""The detectors the harness can run, each turning device streams into NAB's per-row score.

``deployed`` and ``fallback`` are the product (evaluation.chain); ``windowedGaussian`` is
NAB's reference detector (univariate only); ``static`` and ``rollingz`` are the baselines
(evaluation.baselines), given alerts by the same once-per-episode rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from evaluation import baselines, chain
from evaluation.alerts import anomaly_scores, episode_openings

F64 = npt.NDArray[np.float64]
DETECTORS = ("deployed", "fallback", "windowedGaussian", "static", "rollingz")
MIN_ROLLING_WINDOW = 10


class Stream(Protocol):
    """One device's readings and how many of its first rows a detector may fit on."""

    @property
    def name(self) -> str:
        """Device name."""
        ...

    @property
    def values(self) -> F64:
        """Readings shaped (rows, metrics)."""
        ...

    @property
    def epoch_ms(self) -> npt.NDArray[np.int64]:
        """Each row's time."""
        ...

    @property
    def fit_rows(self) -> int:
        """Rows at the start a detector may fit on."""
        ...


class UnknownDetectorError(ValueError):
    """A detector name the harness does not have."""


def _alerts_from_ratio(ratio: F64) -> F64:
    return anomaly_scores(ratio, episode_openings(np.nan_to_num(ratio) > 1.0, chain.REARM_AFTER))


def rolling_window(fit_rows: int) -> int:
    """The rolling baseline's trailing window: the fitting stretch, at most 288 readings."""
    return max(MIN_ROLLING_WINDOW, min(baselines.ROLLING_WINDOW, fit_rows))


def run(detector: str, streams: Sequence[Stream], profile: str, metrics: Sequence[str],
        *, fleet_model: bool = False) -> list[F64]:
    """Per stream, NAB's anomaly score of each row under ``detector``.

    With ``fleet_model`` the product's model is fitted once on every stream's fitting rows
    (a profile's model trained on the fleet); otherwise on each stream's own.
    """
    if detector in ("deployed", "fallback"):
        if detector == "fallback" or fleet_model:
            model = (chain.fit(profile, metrics, [s.values[:s.fit_rows] for s in streams])
                     if detector == "deployed" else None)
            return chain.replay([chain.Replay(s.name, s.values, s.epoch_ms) for s in streams],
                                profile, metrics, model)
        return [chain.replay([chain.Replay(s.name, s.values, s.epoch_ms)], profile, metrics,
                             chain.fit(profile, metrics, [s.values[:s.fit_rows]]))[0]
                for s in streams]
    if detector == "windowedGaussian":
        if len(metrics) != 1:
            raise UnknownDetectorError("windowedGaussian is univariate: NAB series only")
        return [baselines.as_published(baselines.windowed_gaussian(s.values[:, 0]))
                for s in streams]
    if detector == "static":
        return [_alerts_from_ratio(baselines.static_threshold(s.values, s.fit_rows))
                for s in streams]
    if detector == "rollingz":
        return [_alerts_from_ratio(baselines.rolling_z(s.values, rolling_window(s.fit_rows)))
                for s in streams]
    raise UnknownDetectorError(f"unknown detector {detector!r}; choose from {DETECTORS}")
