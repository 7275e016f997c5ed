"""Reference statistics of training features and the population stability index (PSI).

A model's reference is, per column, the interior decile edges of its training rows and the share
of training rows in each bin. The columns are each metric's raw values (where the data moved:
the features are level-free by design, shared.features) followed by the features. Recent rows
are binned on the same edges; PSI
sums ``(p - q) * ln(p / q)`` over the bins. Below 0.1 is usually read as stable, above 0.25
as a distribution that moved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

BINS = 10
# An empty bin would make PSI infinite: shares are floored at this.
_FLOOR = 1e-4


class BadReferenceError(ValueError):
    """A model's reference statistics are missing or do not match its features."""


def _bin_shares(x: npt.NDArray[np.floating[Any]], edges: npt.NDArray[np.float64]) -> list[float]:
    x = x[np.isfinite(x)]  # a reading without that metric says nothing about its distribution
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    return [float(c) / max(len(x), 1) for c in counts]


def reference_stats(x: npt.NDArray[np.floating[Any]], names: list[str],
                    bins: int = BINS) -> dict[str, Any]:
    """Per-column quantile bin edges and training shares of the rows of ``x``."""
    if x.ndim != 2 or x.shape[1] != len(names) or not len(x):
        raise ValueError(f"feature matrix shaped {x.shape} does not match {len(names)} names")
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    features: dict[str, dict[str, list[float]]] = {}
    for j, name in enumerate(names):
        col = x[:, j].astype(np.float64)
        col = col[np.isfinite(col)]
        edges = np.quantile(col, qs) if len(col) else np.zeros(0)
        features[name] = {"edges": [float(e) for e in edges],
                          "shares": _bin_shares(col, edges)}
    return {"method": "psi", "bins": bins, "windows": len(x), "features": features}


def psi_scores(reference: dict[str, Any], names: list[str],
               x: npt.NDArray[np.floating[Any]]) -> dict[str, float]:
    """PSI per feature of windows ``x`` (columns in ``names`` order) against ``reference``."""
    features = reference.get("features")
    if not isinstance(features, dict):
        raise BadReferenceError("reference statistics carry no per-feature bins")
    scores: dict[str, float] = {}
    for j, name in enumerate(names):
        ref = features.get(name)
        if ref is None:
            raise BadReferenceError(f"reference statistics lack feature {name!r}")
        edges = np.asarray(ref["edges"], dtype=np.float64)
        expected = np.maximum(np.asarray(ref["shares"], dtype=np.float64), _FLOOR)
        actual = np.maximum(np.asarray(_bin_shares(x[:, j].astype(np.float64), edges)), _FLOOR)
        scores[name] = round(float(np.sum((actual - expected) * np.log(actual / expected))), 6)
    return scores


def device_references(x: npt.NDArray[np.floating[Any]], devices: npt.NDArray[np.str_],
                      names: list[str], min_windows: int = 50) -> dict[str, dict[str, Any]]:
    """Reference statistics per device with at least ``min_windows`` training windows.

    Devices of one profile run at different levels: each is compared with its own training
    data first, and with the profile's pooled reference only when it had none.
    """
    out: dict[str, dict[str, Any]] = {}
    for device in sorted(set(devices.tolist())):
        mask = devices == device
        if int(mask.sum()) >= min_windows:
            out[str(device)] = reference_stats(x[mask], names)
    return out


def drift_matrix(raw: npt.NDArray[np.float64], x: npt.NDArray[np.float32], metrics: tuple[str, ...],
                 names: list[str]) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Raw metric values beside the features of the same readings, and the column names."""
    return np.hstack([raw, x.astype(np.float64)]), [*metrics, *names]
