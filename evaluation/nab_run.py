"""Run a detector over the NAB corpus, write NAB's results CSVs, score a results folder.

One CSV per series, mirroring ``data/``: ``timestamp,value,anomaly_score`` with the file's
own timestamps and values, in its row order. Files are independent, so a process pool
works through them (each worker loads its file from the corpus directory itself).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import numpy.typing as npt

from evaluation import detectors
from evaluation.events import Device
from evaluation.nab import NabSeries, load_series
from evaluation.nab_scoring import PROFILES, RowWeights, row_weights, score_corpus, sweep

F64 = npt.NDArray[np.float64]
FIXED_THRESHOLD = 0.5


class ResultsError(ValueError):
    """A results folder does not match the corpus (missing file, other rows, bad column)."""


@dataclass(frozen=True)
class FileRun:
    """One series' scores and how long its detector took."""

    name: str
    scores: F64
    seconds: float


def detect(series: NabSeries, detector: str) -> F64:
    """NAB's per-row anomaly score of one series under ``detector``."""
    stream = Device(name="nab-0001", values=series.values.reshape(-1, 1),
                    epoch_ms=series.epoch_ms, fit_rows=series.probation, events=(),
                    healthy=np.zeros(series.rows, dtype=bool))
    return detectors.run(detector, [stream], "nab", ("value",))[0]


def write_results(path: Path, series: NabSeries, scores: F64) -> None:
    """The results CSV of one series (scores with 12 significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp,value,anomaly_score"]
    lines += [f"{t},{v},{s:.12g}" for t, v, s in
              zip(series.timestamps, series.value_text, scores.tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _run_one(name: str, root: Path | None, detector: str, out: Path) -> FileRun:
    series = load_series(name, root)
    t0 = time.perf_counter()
    scores = detect(series, detector)
    seconds = time.perf_counter() - t0
    write_results(out / name, series, scores)
    return FileRun(name, scores, seconds)


def run_corpus(names: list[str], root: Path | None, detector: str, out: Path, *, jobs: int,
               progress: Callable[[str], None]) -> dict[str, FileRun]:
    """Run ``detector`` over the named series (``jobs`` processes), writing their CSVs."""
    if detector not in detectors.DETECTORS:
        raise detectors.UnknownDetectorError(
            f"unknown detector {detector!r}; choose from {detectors.DETECTORS}")
    runs: dict[str, FileRun] = {}
    started = time.perf_counter()
    rows = 0

    def done(run: FileRun) -> None:
        nonlocal rows
        runs[run.name] = run
        rows += len(run.scores)
        rate = rows / max(time.perf_counter() - started, 1e-9)
        progress(f"nab [{len(runs)}/{len(names)}] {run.name}: {len(run.scores)} rows in "
                 f"{run.seconds:.1f} s ({rate:,.0f} rows/s overall)")

    if jobs <= 1:
        for name in names:
            done(_run_one(name, root, detector, out))
        return runs
    # spawn: a fresh interpreter per worker, no onnxruntime or BLAS threads forked mid-flight.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_one, n, root, detector, out) for n in names]
        for fut in as_completed(futures):
            done(fut.result())
    return runs


def read_results(path: Path, series: NabSeries) -> F64:
    """The anomaly_score column of one results CSV, checked row by row against its series."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ResultsError(f"{path} is missing: every scored series needs its CSV") from None
    if len(rows) != series.rows:
        raise ResultsError(f"{path}: {len(rows)} rows, the series has {series.rows}")
    try:
        stamps = [r["timestamp"] for r in rows]
        scores = np.asarray([float(r["anomaly_score"]) for r in rows])
    except (KeyError, ValueError) as exc:
        raise ResultsError(f"{path}: needs timestamp and numeric anomaly_score columns "
                           f"({exc})") from exc
    if tuple(stamps) != series.timestamps:
        raise ResultsError(f"{path}: timestamps differ from the series (rows out of order?)")
    return scores


@dataclass(frozen=True)
class Summary:
    """A corpus's normalised scores per profile, at a threshold and at the swept optimum."""

    files: int
    rows: int
    windows: int
    detections: int
    threshold: float
    scores: dict[str, float]
    swept: dict[str, tuple[float | None, float]]

    def to_json(self) -> dict[str, object]:
        """The JSON form the CLI prints."""
        return {"files": self.files, "rows": self.rows, "windows": self.windows,
                "detections": self.detections, "threshold": self.threshold,
                "scores": self.scores,
                "swept": {k: {"threshold": t, "score": s} for k, (t, s) in self.swept.items()}}


def summary(series: Iterable[NabSeries], scores: dict[str, F64],
            threshold: float = FIXED_THRESHOLD) -> Summary:
    """Normalised scores of every profile at ``threshold`` and at NAB's swept optimum."""
    files: dict[str, tuple[RowWeights, F64]] = {
        s.name: (row_weights(s.rows, s.windows, s.probation), scores[s.name]) for s in series}
    fixed: dict[str, float] = {}
    swept: dict[str, tuple[float | None, float]] = {}
    for name, prof in PROFILES.items():
        fixed[name] = round(score_corpus(files, threshold, prof).normalised, 4)
        best_t, best = sweep(files, prof)
        swept[name] = (best_t, round(best, 4))
    return Summary(files=len(files), rows=int(sum(len(w.tp) for w, _ in files.values())),
                   windows=sum(w.windows for w, _ in files.values()),
                   detections=int(sum(int((s >= threshold).sum()) for _, s in files.values())),
                   threshold=threshold, scores=fixed, swept=swept)


def stderr(line: str) -> None:
    """Progress goes to stderr, so stdout stays the result."""
    print(line, file=sys.stderr, flush=True)
