"""Reference detectors: NAB's windowedGaussian (to check the scorer) and two honest baselines.

- :func:`windowed_gaussian`: written from NAB's description of its detector. The mean and
  standard deviation of a trailing window (all values so far up to 6,400; past that the
  window slides in steps of 100 values); a value's score is ``1 - Q(|x - mean| / std)``,
  Q the normal upper tail. Runs over every NAB file and is scored at the published
  per-file thresholds (tests/test_nab_scoring.py).
- :func:`static_threshold`: mean and standard deviation of the fitting rows per metric; a
  reading is anomalous when any metric is more than ``k`` deviations from its mean.
- :func:`rolling_z`: median and MAD of the trailing ``window`` readings per metric; anomalous
  when any metric's robust z exceeds ``k``.

Both baselines become alerts through alerts.episode_openings (open on an anomalous reading,
re-arm after the gateway's ``resolve_after`` normal readings).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

F64 = npt.NDArray[np.float64]

GAUSS_WINDOW = 6400
GAUSS_STEP = 100
STATIC_K = 4.0
ROLLING_WINDOW = 288
ROLLING_K = 6.0
_MAD_TO_SIGMA = 1.4826
_SQRT2 = math.sqrt(2.0)


def _upper_tail(x: float, mean: float, std: float) -> float:
    """Q((x - mean) / std), mirrored below the mean: the tail beyond |x - mean|."""
    if x < mean:
        # Mirrored as NAB's description does it (2 mean - x), so the rounding matches too.
        x = 2.0 * mean - x
    return 0.5 * math.erfc((x - mean) / std / _SQRT2)


def windowed_gaussian(values: npt.ArrayLike) -> F64:
    """NAB windowedGaussian's score of every row (0.0 on the first, which has no past)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(v))
    stats: dict[tuple[int, int], tuple[float, float]] = {}
    for i in range(1, len(v)):
        # Values committed to the window before row i: all of them up to the window size,
        # then whole steps only (a step is added once its 100 values have arrived).
        held = i if i <= GAUSS_WINDOW else GAUSS_WINDOW + GAUSS_STEP * (
            (i - GAUSS_WINDOW) // GAUSS_STEP)
        key = (max(0, held - GAUSS_WINDOW), held)
        if key not in stats:
            window = v[key[0]:key[1]]
            std = float(np.std(window))
            stats = {key: (float(np.mean(window)), std if std != 0.0 else 1e-6)}
        mean, std = stats[key]
        out[i] = 1.0 - _upper_tail(float(v[i]), mean, std)
    return out


def as_published(scores: npt.ArrayLike) -> F64:
    """Scores as NAB's published results hold them: 12 significant digits.

    NAB wrote its per-row results with Python 2, whose ``str(float)`` keeps 12 significant
    digits, and scored what it read back: windowedGaussian's threshold 1.0 selects every
    score from 1 - 5e-13 up. Without this rounding, 26 of the 58 files score differently.
    """
    out: F64 = np.asarray([float(f"{x:.12g}") for x in np.asarray(scores, dtype=np.float64)])
    return out


def _as_2d(values: npt.ArrayLike) -> F64:
    v = np.asarray(values, dtype=np.float64)
    return v.reshape(len(v), -1)


def static_threshold(values: npt.ArrayLike, fit_rows: int, k: float = STATIC_K) -> F64:
    """Per row, the largest |x - mean| / std over metrics, divided by k (above 1: anomalous).

    Mean and std come from the first ``fit_rows`` rows only; a metric that never moved there
    gets a floor of 1e-3 of its level (at least 1e-6), so a change is large but finite.
    """
    v = _as_2d(values)
    ref = v[:max(fit_rows, 1)]
    mean = ref.mean(axis=0)
    std = np.maximum(ref.std(axis=0), np.maximum(1e-3 * np.abs(mean), 1e-6))
    ratio: F64 = (np.abs(v - mean) / std).max(axis=1) / k
    return ratio


def rolling_z(values: npt.ArrayLike, window: int = ROLLING_WINDOW, k: float = ROLLING_K) -> F64:
    """Per row, the largest robust z over metrics against the ``window`` readings before it,
    divided by k (NaN until the window is full).

    The scale is 1.4826 MAD; where the MAD is 0 (a quantised or mostly constant signal) the
    window's standard deviation stands in, and where that is 0 too any change is anomalous.
    """
    v = _as_2d(values)
    n = len(v)
    ratio = np.full(n, np.nan)
    if n <= window:
        return ratio
    past = sliding_window_view(v[:-1], window, axis=0)  # (n - window, m, window)
    med = np.median(past, axis=2)
    scale = _MAD_TO_SIGMA * np.median(np.abs(past - med[:, :, None]), axis=2)
    scale = np.where(scale > 0, scale, past.std(axis=2))
    dev = np.abs(v[window:] - med)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, dev / np.where(scale > 0, scale, 1.0),
                     np.where(dev > 0, np.inf, 0.0))
    ratio[window:] = z.max(axis=1) / k
    return ratio
