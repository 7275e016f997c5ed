"""Streaming, level-free features per metric: the one implementation.

Training (cloud) and scoring (gateway) both run :class:`DeviceFeatures` over a device's readings
in arrival order, so a model never sees features computed differently from those it was
trained on. Each metric keeps a small state (:class:`MetricState`, a dozen floats) that learns
what this device's signal normally does, and each reading is described relative to it:

- ``excess``: how far the value lies outside the envelope of every value this device showed
  in normal operation, in envelope widths (0 inside; less an allowance that shrinks as the
  device's history grows; a small excursion counts from its second reading on, unless it came
  as a big step). Novelty against the device's own history
  is level-free (each device has its own envelope) and remembers faults: the envelope only
  grows, and a reading judged anomalous moves it half the way, so a recurring fault of the
  same size is seen again while a lasting new level is accepted after a few readings;
- ``dev``: distance from the recent level (a fast moving mean) in units of the signal's
  usual residual spread (a slow moving RMS): a spike or step inside the envelope;
- ``jump``: the step from the previous value over the usual step size;
- ``stuck``: how long the value has not changed, over the longest run of unchanged values seen
  in normal operation (0 for a signal that never varied: constant is its normal).

Every scale is floored by the signal's resolution (the smallest non-zero step seen), so flat,
quantised and zero-heavy signals get finite, meaningful features (no division by a zero MAD).
The rules that turn features into a verdict live in :mod:`shared.anomaly`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.anomaly import DEV_LIMIT, EXCESS_LIMIT, FEATURES_PER_METRIC, STUCK_LIMIT
from shared.sensors import SensorProfile

DEFAULT_WARMUP = 150
__all__ = ["DEFAULT_WARMUP", "FEATURES_PER_METRIC", "DeviceFeatures", "FeatureSpec",
           "MetricState", "series_features"]

# How fast the recent level follows the signal (per reading), how slowly the usual spread and
# step size do: the level tracks a daily pattern sampled every few minutes, the spread is
# the signal's memory of what "noisy" means for it.
_LEVEL_RATE = 0.1
_SPREAD_RATE = 0.005
_STEP_RATE = 0.02
# A residual is clipped at this many spreads before it updates the level and spread, so one
# spike neither drags the level nor inflates the spread.
_CLIP = 12.0
# Share of the way an anomalous value moves the envelope (see ``excess`` above).
_ABSORB = 0.5
# A single value just past the envelope is what a noisy signal does now and then (a Gaussian's
# record keeps growing): it counts at once only this far out (in envelope widths); a smaller
# excursion counts when it lasts two readings. At 1 reading/s this leaves about one lone
# excursion a day on Gaussian noise instead of twenty; on NAB it costs 4 points.
_LONE_EXCESS = 0.1
# ... or when it arrives as a step of this many usual steps: a spike, not a noisy tail.
_LONE_STEP = 6.0
# The range of n samples falls short of the signal's true range by about 1/n of it, so a device
# may still go this many envelope widths past its envelope, over n readings seen, before it
# counts: 0.27 widths right after the warm-up, 0.04 after 1,000 readings. On the demo's healthy
# replays this halves the first days' alerts, on C-MAPSS it raises recall (fewer early alerts
# left open), on NAB it costs 0.4 points.
_YOUTH = 40.0
# Shortest "longest run" a stuck value is compared with: noisy signals rarely repeat at all.
_MIN_RUN = 5

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FeatureSpec:
    """Which metrics, in which order, after how many readings: stored in every model manifest."""

    profile: str
    metrics: tuple[str, ...]
    warmup: int = DEFAULT_WARMUP

    @classmethod
    def for_profile(cls, prof: SensorProfile, warmup: int = DEFAULT_WARMUP) -> FeatureSpec:
        """The default spec of a sensor profile: all its metrics in canonical order."""
        return cls(profile=prof.name, metrics=prof.metric_names, warmup=warmup)

    @property
    def names(self) -> list[str]:
        """Feature names, in vector order (``<metric>.<feature>``)."""
        return [f"{m}.{f}" for m in self.metrics for f in FEATURES_PER_METRIC]

    def to_dict(self) -> dict[str, object]:
        """JSON form for manifests."""
        return {"profile": self.profile, "metrics": list(self.metrics), "warmup": self.warmup,
                "features_per_metric": list(FEATURES_PER_METRIC)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        """Parse the manifest form; ValueError if it is not one this code computes."""
        fpm = data.get("features_per_metric")
        if fpm != list(FEATURES_PER_METRIC):
            raise ValueError(f"model expects features {fpm!r}, this gateway computes "
                             f"{list(FEATURES_PER_METRIC)!r}; retrain it with this release")
        metrics = data.get("metrics")
        warmup = data.get("warmup")
        profile = data.get("profile")
        if not isinstance(metrics, list) or not metrics or not all(
                isinstance(m, str) for m in metrics):
            raise ValueError("feature spec 'metrics' must be a non-empty list of metric names")
        if not isinstance(warmup, int) or not 2 <= warmup <= 100_000:
            raise ValueError("feature spec 'warmup' must be an integer in [2, 100000]")
        if not isinstance(profile, str):
            raise ValueError("feature spec 'profile' must be a string")
        return cls(profile=profile, metrics=tuple(metrics), warmup=warmup)


class MetricState:
    """What one metric of one device normally does, learned reading by reading."""

    __slots__ = ("beyond", "hi", "level", "lo", "longest", "n", "prev", "resolution", "run",
                 "spread2", "step", "warmup")

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.n = 0
        self.prev = self.lo = self.hi = self.level = 0.0
        self.spread2 = self.step = self.beyond = 0.0
        self.resolution = math.inf
        self.run = self.longest = 1

    def step_features(self, x: float) -> tuple[float, float, float, float]:
        """The features of value ``x`` against the state, then learn from ``x``."""
        n = self.n
        if n == 0:
            self.n = 1
            self.prev = self.lo = self.hi = self.level = x
            return (0.0, 0.0, 0.0, 0.0)
        # Plain locals and comparisons: this runs for every metric of every reading.
        prev, lo, hi, step = self.prev, self.lo, self.hi, self.step
        dx = x - prev if x >= prev else prev - x
        resolution = self.resolution
        if 0.0 < dx < resolution:
            resolution = self.resolution = dx
        floor = abs(x) * 1e-9
        if resolution != math.inf and resolution > floor:
            floor = resolution
        floor = max(floor, 1e-12)
        out = x - hi if x > hi else (lo - x if x < lo else 0.0)
        width = hi - lo
        beyond = out / (width if width > floor else floor)
        step_scale = step if step > floor else floor
        if beyond >= _LONE_EXCESS or dx >= _LONE_STEP * step_scale:
            excess = beyond
        else:
            excess = beyond if beyond < self.beyond else self.beyond
        excess -= _YOUTH / n
        excess = max(excess, 0.0)
        self.beyond = beyond
        spread = math.sqrt(self.spread2)
        spread = max(spread, floor)
        residual = x - self.level
        dev = abs(residual) / spread
        jump = dx / step_scale
        ended = x != prev
        run = 1 if ended else self.run + 1
        longest = self.longest
        stuck = run / (longest if longest > _MIN_RUN else _MIN_RUN) if hi > lo else 0.0
        n += 1
        self.n = n
        warm = n > self.warmup
        anomalous = warm and (excess > EXCESS_LIMIT or dev > DEV_LIMIT or stuck > STUCK_LIMIT)
        self._learn(x, dx, residual, spread, run, anomalous=anomalous, warm=warm)
        return (excess, dev, jump, stuck)

    def _learn(self, x: float, dx: float, residual: float, spread: float, run: int, *,
               anomalous: bool, warm: bool) -> None:
        """Fold value ``x`` into the state (after its features were taken)."""
        lo, hi, step, longest, n = self.lo, self.hi, self.step, self.longest, self.n
        ended = run == 1
        # Learn: normal values widen the envelope, anomalous ones half-way (see module doc).
        if anomalous:
            if x > hi:
                self.hi = hi + _ABSORB * (x - hi)
            elif x < lo:
                self.lo = lo - _ABSORB * (lo - x)
        elif x < lo:
            self.lo = x
        elif x > hi:
            self.hi = x
        if not warm:
            if run > longest:
                self.longest = run
        elif ended and not anomalous and self.run > longest:
            self.longest = self.run
        self.run = run
        limit = _CLIP * spread
        clipped = limit if residual > limit else (-limit if residual < -limit else residual)
        # Plain averages until the moving ones have seen enough readings to mean anything.
        inv = 1.0 / (n - 1)
        self.level += (_LEVEL_RATE if inv < _LEVEL_RATE else inv) * clipped
        self.spread2 += (_SPREAD_RATE if inv < _SPREAD_RATE else inv) * (
            clipped * clipped - self.spread2)
        self.step = step + (_STEP_RATE if inv < _STEP_RATE else inv) * (dx - step)
        self.prev = x


class DeviceFeatures:
    """One device's metric states in spec order; a missing metric contributes zeros."""

    __slots__ = ("_n", "_states", "spec")

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._states = [MetricState(spec.warmup) for _ in spec.metrics]
        self._n = 0

    def push(self, metrics: Mapping[str, float]) -> list[float] | None:
        """Features of a reading, or None while the device warms up (its state still learns)."""
        out: list[float] = []
        for name, state in zip(self.spec.metrics, self._states, strict=True):
            value = metrics.get(name)
            if value is None:
                out.extend((0.0, 0.0, 0.0, 0.0))  # a disabled sensor: no evidence either way
            else:
                out.extend(state.step_features(float(value)))
        self._n += 1
        return out if self._n > self.spec.warmup else None

    @property
    def readings(self) -> int:
        """Readings seen, warm-up included."""
        return self._n


def series_features(series: npt.ArrayLike, spec: FeatureSpec) -> FloatArray:
    """Features of every reading after the warm-up of one device's series (time x metrics)."""
    s = np.asarray(series, dtype=np.float64)
    n_features = len(spec.names)
    if s.ndim != 2 or s.shape[1] != len(spec.metrics):
        raise ValueError(f"series shaped {s.shape}, expected (time, {len(spec.metrics)}) for "
                         f"metrics {spec.metrics}")
    device = DeviceFeatures(spec)
    rows: list[list[float]] = []
    for values in s.tolist():
        feats = device.push({m: v for m, v in zip(spec.metrics, values, strict=True)
                             if math.isfinite(v)})
        if feats is not None:
            rows.append(feats)
    if not rows:
        return np.empty((0, n_features), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)
