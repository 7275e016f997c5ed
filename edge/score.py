"""Anomaly scoring: a per-metric rolling robust z-score now, an ONNX model later, same interface.

The statistical detector keeps, per (device, metric), the last ``window`` values. Once it has
``warmup`` of them, a new value's robust z-score is ``(x - median) / (1.4826 * MAD)``: median
and MAD are not dragged along by the very spikes we want to see, unlike mean and std. A
reading's score is its largest |z|; the per-metric |z| is the explanation an alert carries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.schemas import Scorer as ScorerName
from shared.schemas import Telemetry

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution is 0.6745 sigma


@dataclass(frozen=True, slots=True)
class Score:
    """One reading's verdict. ``value`` is None while a detector is still warming up."""

    value: float | None
    anomalous: bool
    scorer: ScorerName
    model_version: str | None = None
    contributions: dict[str, float] = field(default_factory=dict)


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
                             contributions=contributions))
        return out

    def forget(self, device: str) -> None:
        """Drop a device's history (e.g. after a reboot changed its sensors)."""
        for key in [k for k in self._history if k[0] == device]:
            del self._history[key]
