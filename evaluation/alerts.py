"""From a detector's per-reading verdicts to alerts and to NAB's per-row anomaly score.

Every detector the harness runs is judged by its alert openings, the way an engineer meets
it: a row where an alert opens scores 1.0, every other row ``0.49 * min(score / threshold,
1)``, so NAB's threshold 0.5 selects exactly the openings while the CSV still shows how
close each reading came.

The baselines get the simple once-per-episode rule below; the product's chain (chain.py)
gets its own alert tracker's openings.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

OPENED = 1.0
BELOW = 0.49


def episode_openings(anomalous: npt.ArrayLike, rearm_after: int) -> Bools:
    """An alert opens on the first anomalous reading while armed, then disarms; it re-arms
    after ``rearm_after`` normal readings in a row. One alert per episode, no alert storm."""
    flags = np.asarray(anomalous, dtype=bool)
    out = np.zeros(len(flags), dtype=bool)
    armed = True
    normal_run = 0
    for i, bad in enumerate(flags.tolist()):
        if bad:
            normal_run = 0
            if armed:
                out[i] = True
                armed = False
        else:
            normal_run += 1
            if normal_run >= rearm_after:
                armed = True
    return out


def anomaly_scores(ratio: npt.ArrayLike, opened: npt.ArrayLike) -> F64:
    """NAB's per-row score: 1.0 where an alert opened, else 0.49 * min(ratio, 1) (ratio is
    the detector's score over its own threshold; NaN, a reading not scored yet, gives 0)."""
    r = np.nan_to_num(np.asarray(ratio, dtype=np.float64), nan=0.0, posinf=1.0)
    out: F64 = np.where(np.asarray(opened, dtype=bool), OPENED,
                        BELOW * np.clip(r, 0.0, 1.0))
    return out
