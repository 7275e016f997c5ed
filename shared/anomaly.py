"""How a model's raw outputs become one anomaly score: the same on the gateway and in training.

An Isolation Forest cannot see how far a point lies outside its training data: a value beyond
the training range follows the same splits as the most extreme training point, so a +40 °C
spike scores no higher than the ordinary tail. The score therefore combines two views, each
normalised so that 1.0 is its calibrated threshold:

- the forest's score (multivariate structure inside the training support), and
- the support distance: the largest robust z-score of any feature against the training
  median/MAD (how far outside the training data the window is).

The anomaly score is the larger of the two; above 1.0 is anomalous.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_MAD_TO_SIGMA = 1.4826
_EPS = 1e-9

F64 = npt.NDArray[np.float64]


def support_z(features: npt.ArrayLike, median: npt.ArrayLike, mad: npt.ArrayLike) -> F64:
    """Per row, the largest robust z-score of any feature against the training reference."""
    x = np.asarray(features, dtype=np.float64)
    med = np.asarray(median, dtype=np.float64)
    # A feature that never varied in training (MAD 0) would make any change infinite; the
    # floor keeps it large but finite and comparable.
    scale = _MAD_TO_SIGMA * np.maximum(np.asarray(mad, dtype=np.float64), 1e-3 * (np.abs(med) + 1))
    z: F64 = np.max(np.abs(x - med) / (scale + _EPS), axis=1)
    return z


def combine(forest: npt.ArrayLike, z: npt.ArrayLike, forest_threshold: float,
            z_threshold: float) -> F64:
    """One anomaly score per row: max of both views, each divided by its threshold."""
    f = np.asarray(forest, dtype=np.float64) / max(forest_threshold, _EPS)
    s = np.asarray(z, dtype=np.float64) / max(z_threshold, _EPS)
    out: F64 = np.maximum(f, s)
    return out
