"""NAB's scoring rules, written from their description (../shared/datasets/nab/README.md).

A row is a detection when its anomaly score is at or above the threshold. Per file:

- rows in the probationary period are ignored (neither detections nor misses);
- in each window only the earliest detection counts: ``A_TP * S(y) / S(-1)`` with
  ``S(y) = 2 * sigmoid(-5 y) - 1``, y = -(right - i + 1) / width (-1 at the left edge, about 0
  at the right), so a detection on the left edge earns exactly A_TP;
- a window without a detection costs ``-A_FN``;
- a detection outside every window costs ``A_FP * S(y)`` with y = (i - right) / (width - 1) of
  the window before it (S is -1 beyond y = 3), and the full ``-A_FP`` before any window.

The corpus score sums the files and is normalised as ``100 (S - S_null) / (S_perfect -
S_null)``: the null detector never fires (``-A_FN`` per window) and the perfect one earns
``A_TP`` per window. NAB tunes each detector's threshold per profile on the whole corpus:
:func:`sweep` does that, for reference; the product is judged at its fixed threshold.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Profile:
    """An application profile: the weights of true positives, false positives and misses."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("standard", a_tp=1.0, a_fp=0.11, a_fn=1.0),
    Profile("reward_low_FP_rate", a_tp=1.0, a_fp=0.22, a_fn=1.0),
    Profile("reward_low_FN_rate", a_tp=1.0, a_fp=0.11, a_fn=2.0),
)}


def scaled_sigmoid(y: npt.ArrayLike) -> F64:
    """``2 * sigmoid(-5 y) - 1``, and -1 for y beyond 3 (a detection far behind a window)."""
    x = np.asarray(y, dtype=np.float64)
    out: F64 = np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * x, 700.0))) - 1.0)
    return out


_MAX_TP = float(scaled_sigmoid(-1.0))


@dataclass(frozen=True)
class RowWeights:
    """What a detection on each row of one file is worth, before the profile's weights."""

    window: I64  # the row's window (0, 1, ...), -1 outside every window
    tp: F64  # in a window: S(y) / S(-1), 1.0 on the left edge
    fp: F64  # outside: S(y) of the window before (negative), -1 before the first window
    scorable: Bools  # past the probationary period
    windows: int  # windows with at least one scorable row (a miss costs only for those)


def row_weights(rows: int, windows: Sequence[tuple[int, int]], probation: int) -> RowWeights:
    """The per-row weights of a file with ``rows`` rows and inclusive window row ranges."""
    idx = np.arange(rows, dtype=np.float64)
    window = np.full(rows, -1, dtype=np.int64)
    tp = np.zeros(rows)
    fp = np.full(rows, -1.0)
    prev_right = -1
    for k, (left, right) in enumerate(windows):
        if not 0 <= left <= right < rows or left <= prev_right:
            raise ValueError(f"window {k} rows [{left}, {right}] out of order or range")
        width = right - left + 1
        window[left:right + 1] = k
        tp[left:right + 1] = scaled_sigmoid(-(right - idx[left:right + 1] + 1) / width) / _MAX_TP
        following = windows[k + 1][0] if k + 1 < len(windows) else rows
        after = idx[right + 1:following]
        fp[right + 1:following] = scaled_sigmoid((after - right) / max(width - 1, 1))
        prev_right = right
    fp[window >= 0] = 0.0
    scorable = idx >= probation
    counted = np.unique(window[scorable & (window >= 0)])
    return RowWeights(window=window, tp=tp, fp=fp, scorable=scorable, windows=int(counted.size))


@dataclass(frozen=True)
class FileScore:
    """One file's raw score and its counts (rows past probation, like NAB's results)."""

    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    windows: int
    detected: int


def score_file(weights: RowWeights, detections: Bools, profile: Profile) -> FileScore:
    """The raw NAB score of one file given which rows are detections."""
    det = np.asarray(detections, dtype=bool) & weights.scorable
    inside = weights.window >= 0
    fp_rows = det & ~inside
    score = profile.a_fp * float(weights.fp[fp_rows].sum())
    detected = 0
    for k in np.unique(weights.window[weights.scorable & inside]):
        hits = np.flatnonzero(det & (weights.window == k))
        if hits.size:
            detected += 1
            score += profile.a_tp * float(weights.tp[hits[0]])  # the earliest counts
        else:
            score -= profile.a_fn
    live_in = weights.scorable & inside
    live_out = weights.scorable & ~inside
    return FileScore(score=score, tp=int((det & inside).sum()), fp=int(fp_rows.sum()),
                     fn=int((live_in & ~det).sum()), tn=int((live_out & ~det).sum()),
                     windows=weights.windows, detected=detected)


def normalised(raw: float, windows: int, profile: Profile) -> float:
    """``100 (S - S_null) / (S_perfect - S_null)`` over a corpus with ``windows`` windows."""
    null = -profile.a_fn * windows
    perfect = profile.a_tp * windows
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class CorpusScore:
    """A corpus's raw and normalised score under one profile at one threshold."""

    profile: str
    threshold: float
    raw: float
    normalised: float
    files: dict[str, FileScore]


def score_corpus(files: dict[str, tuple[RowWeights, F64]], threshold: float,
                 profile: Profile) -> CorpusScore:
    """Score every file's anomaly scores at ``threshold`` (a detection is score >= threshold)."""
    per = {name: score_file(w, np.asarray(s) >= threshold, profile)
           for name, (w, s) in files.items()}
    raw = math.fsum(f.score for f in per.values())
    windows = sum(f.windows for f in per.values())
    return CorpusScore(profile=profile.name, threshold=threshold, raw=raw,
                       normalised=normalised(raw, windows, profile), files=per)


def sweep(files: dict[str, tuple[RowWeights, F64]],
          profile: Profile) -> tuple[float | None, float]:
    """NAB's threshold tuning: (threshold, normalised score) of the best corpus threshold.

    Every distinct anomaly score is a candidate; lowering the threshold past a group of equal
    scores adds their rows as detections at once. Ties go to the highest threshold; the
    threshold is None when no detection at all scores best.
    """
    scores, gains, window_ids = [], [], []
    offset = 0
    n_windows = 0
    for w, s in files.values():
        live = w.scorable
        scores.append(np.asarray(s, dtype=np.float64)[live])
        gains.append(np.where(w.window[live] >= 0, profile.a_tp * w.tp[live],
                              profile.a_fp * w.fp[live]))
        window_ids.append(np.where(w.window[live] >= 0, w.window[live] + offset, -1))
        offset += len(w.tp) + 1
        n_windows += w.windows
    if not scores:
        raise ValueError("nothing to sweep: no files")
    s_all = np.concatenate(scores)
    order = np.argsort(-s_all, kind="stable")
    s_sorted = s_all[order]
    gain = np.concatenate(gains)[order]
    wid = np.concatenate(window_ids)[order]
    contrib = np.where(wid < 0, gain, 0.0)
    # A window is worth its best (earliest) detection so far: the running best, from -A_FN.
    for k in np.unique(wid[wid >= 0]):
        at = np.flatnonzero(wid == k)
        best = np.maximum.accumulate(np.concatenate(([-profile.a_fn], gain[at])))
        contrib[at] = np.diff(best)
    null = -profile.a_fn * n_windows
    totals = null + np.cumsum(contrib)
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    best_i = int(np.argmax(totals[ends])) if ends.size else -1
    if best_i < 0 or totals[ends[best_i]] <= null:
        return None, 0.0  # never alarming is best
    end = ends[best_i]
    return float(s_sorted[end]), normalised(float(totals[end]), n_windows, profile)


@dataclass(frozen=True)
class PublishedFile:
    """One row of NAB's published ``<detector>_<profile>_scores.csv``."""

    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int


def read_published(path: Path) -> dict[str, PublishedFile]:
    """A published per-file results CSV, by file name (the Totals row is left out)."""
    out: dict[str, PublishedFile] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["Detector"] == "Totals" or not row["File"]:
                continue
            out[row["File"]] = PublishedFile(
                threshold=float(row["Threshold"]), score=float(row["Score"]),
                tp=int(row["TP"]), tn=int(row["TN"]), fp=int(row["FP"]), fn=int(row["FN"]))
    return out
