"""Feature extraction over a sliding window of readings: the one implementation.

Training (cloud) and scoring (gateway) both call :func:`window_features`, so a model never sees
features computed differently from those it was trained on. A feature vector describes the
newest reading in the context of the ``window`` readings before it, per metric:

- ``last``: the newest value;
- ``mean``: the mean of the readings before it in the window;
- ``std``: their standard deviation;
- ``dev``: (last - mean) / (std + eps), how far the newest value sits from its recent past
  (the newest value is left out of mean and std, or one spike would hide in the spread it
  causes: with it included, a single outlier can never exceed sqrt(window - 1) deviations);
- ``slope``: least-squares slope per sample across the whole window (drift).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shared.sensors import SensorProfile

FEATURES_PER_METRIC = ("last", "mean", "std", "dev", "slope")
DEFAULT_WINDOW = 30
_EPS = 1e-6

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FeatureSpec:
    """Which metrics, in which order, over how many readings: stored in every model manifest."""

    profile: str
    metrics: tuple[str, ...]
    window: int = DEFAULT_WINDOW

    @classmethod
    def for_profile(cls, prof: SensorProfile, window: int = DEFAULT_WINDOW) -> FeatureSpec:
        """The default spec of a sensor profile: all its metrics in canonical order."""
        return cls(profile=prof.name, metrics=prof.metric_names, window=window)

    @property
    def names(self) -> list[str]:
        """Feature names, in vector order (``<metric>.<feature>``)."""
        return [f"{m}.{f}" for m in self.metrics for f in FEATURES_PER_METRIC]

    def to_dict(self) -> dict[str, object]:
        """JSON form for manifests."""
        return {"profile": self.profile, "metrics": list(self.metrics), "window": self.window,
                "features_per_metric": list(FEATURES_PER_METRIC)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        """Parse the manifest form; ValueError if it is not one this code computes."""
        fpm = data.get("features_per_metric")
        if fpm != list(FEATURES_PER_METRIC):
            raise ValueError(f"model expects features {fpm!r}, this gateway computes "
                             f"{list(FEATURES_PER_METRIC)!r}")
        metrics = data.get("metrics")
        window = data.get("window")
        profile = data.get("profile")
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise ValueError("feature spec 'metrics' must be a list of metric names")
        if not isinstance(window, int) or not 2 <= window <= 10_000:
            raise ValueError("feature spec 'window' must be an integer in [2, 10000]")
        if not isinstance(profile, str):
            raise ValueError("feature spec 'profile' must be a string")
        return cls(profile=profile, metrics=tuple(metrics), window=window)


def window_features(windows: npt.ArrayLike) -> FloatArray:
    """Features of a stack of windows shaped (n, window, metrics) -> (n, metrics * 5)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[1] < 2:
        raise ValueError(f"expected (n, window>=2, metrics) windows, got shape {w.shape}")
    n, length, n_metrics = w.shape
    last = w[:, -1, :]
    past = w[:, :-1, :]
    mean = past.mean(axis=1)
    std = past.std(axis=1)
    dev = (last - mean) / (std + _EPS)
    t = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
    centred = w - w.mean(axis=1)[:, None, :]
    slope = np.einsum("t,ntm->nm", t, centred) / float((t * t).sum())
    out = np.stack([last, mean, std, dev, slope], axis=2)  # (n, metrics, 5)
    return out.reshape(n, n_metrics * len(FEATURES_PER_METRIC)).astype(np.float32)


def series_features(series: npt.ArrayLike, window: int) -> FloatArray:
    """Features for every full window of one device's series shaped (time, metrics)."""
    s = np.asarray(series, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < window:
        return np.empty((0, s.shape[-1] * len(FEATURES_PER_METRIC) if s.ndim == 2 else 0),
                        dtype=np.float32)
    views = np.lib.stride_tricks.sliding_window_view(s, window, axis=0)  # (n, metrics, window)
    return window_features(np.swapaxes(views, 1, 2))


@dataclass
class DeviceWindow:
    """The recent readings of one device, for online scoring.

    A metric missing from a reading (a disabled sensor) repeats its previous value; until
    every metric has been seen and the window is full, there is nothing to score.
    """

    spec: FeatureSpec
    rows: deque[list[float]] = field(init=False)
    _last: list[float | None] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = deque(maxlen=self.spec.window)
        self._last = [None] * len(self.spec.metrics)

    def push(self, metrics: dict[str, float]) -> bool:
        """Add a reading; True when the window is full and can be scored."""
        for i, name in enumerate(self.spec.metrics):
            value = metrics.get(name)
            if value is not None:
                self._last[i] = value
        if any(v is None for v in self._last):
            return False
        self.rows.append([float(v) for v in self._last if v is not None])
        return len(self.rows) == self.spec.window

    def array(self) -> npt.NDArray[np.float64]:
        """The window as a (window, metrics) array."""
        return np.asarray(self.rows, dtype=np.float64)
