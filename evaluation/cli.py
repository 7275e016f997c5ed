"""``smaint eval``: the product's detector measured on real labelled data (docs/evaluation.md).

- ``smaint eval nab --out DIR [--data DIR] [--detector NAME] [--files GLOB]``: run a detector
  over the NAB corpus, write one results CSV per series, print NAB's three scores at the
  fixed threshold 0.5 (and the swept optimum for reference), a JSON object last.
- ``smaint eval nab-score --results DIR``: score a folder of such CSVs (any detector's).
- ``smaint eval [--json]``: the product and the baselines on the bundled labelled sets:
  precision, recall, F1, lead time and false alerts per device-day.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation import detectors, labelled
from evaluation.events import event_figures
from evaluation.nab import BUNDLED, CorpusError, corpus_names, load_series
from evaluation.nab_run import (
    FIXED_THRESHOLD,
    ResultsError,
    Summary,
    read_results,
    run_corpus,
    stderr,
    summary,
)

LABELLED_DETECTORS = ("deployed", "fallback", "static", "rollingz")
Figures = dict[str, float | int | None]


@dataclass(frozen=True)
class SetResult:
    """One labelled set's figures per detector."""

    devices: int
    rows: int
    definition: str
    detectors: dict[str, Figures]


_PROFILE_LABELS = {"standard": "standard", "reward_low_FP_rate": "low FP",
                   "reward_low_FN_rate": "low FN"}


def _nab_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help=f"NAB checkout (data/, labels/); default: the bundled copy {BUNDLED}")
    parser.add_argument("--files", default=None, metavar="GLOB",
                        help="only series whose name matches, e.g. 'realKnownCause/*'")
    parser.add_argument("--threshold", type=float, default=FIXED_THRESHOLD,
                        help="a row is a detection at or above this score (default 0.5: the "
                             "product's alert openings)")


def _print_nab(title: str, result: Summary, **extra: object) -> None:
    print(title)
    print(f"{'profile':<10}{'@' + str(result.threshold):>10}{'swept':>10}  threshold")
    for key, label in _PROFILE_LABELS.items():
        best_t, best = result.swept[key]
        shown = "never alarm" if best_t is None else f"{best_t:.6g}"
        print(f"{label:<10}{result.scores[key]:>10.2f}{best:>10.2f}  {shown}")
    print(json.dumps({**result.to_json(), **extra}, sort_keys=True))


def _nab(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smaint eval nab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _nab_args(parser)
    parser.add_argument("--out", type=Path, required=True, help="results folder to write")
    parser.add_argument("--detector", default="deployed", choices=detectors.DETECTORS)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: 2, or 1 on a one-core machine)")
    args = parser.parse_args(argv)
    names = corpus_names(args.data, args.files)
    if not names:
        parser.error(f"no NAB series matches {args.files!r}")
    t0 = time.perf_counter()
    runs = run_corpus(names, args.data, args.detector, args.out, jobs=args.jobs,
                      progress=stderr)
    series = [load_series(n, args.data) for n in names]
    result = summary(series, {n: r.scores for n, r in runs.items()}, args.threshold)
    _print_nab(f"NAB, detector {args.detector}: {len(names)} series, results in {args.out}",
               result, detector=args.detector, out=str(args.out),
               seconds=round(time.perf_counter() - t0, 1))
    return 0


def _nab_score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smaint eval nab-score",
                                     description="score a folder of NAB results CSVs")
    _nab_args(parser)
    parser.add_argument("--results", type=Path, required=True,
                        help="folder of <category>/<series>.csv results (timestamp,value,"
                             "anomaly_score)")
    args = parser.parse_args(argv)
    names = corpus_names(args.data, args.files)
    series = [load_series(n, args.data) for n in names]
    scores = {s.name: read_results(args.results / s.name, s) for s in series}
    _print_nab(f"NAB results in {args.results}: {len(names)} series",
               summary(series, scores, args.threshold), results=str(args.results))
    return 0


def _labelled(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="smaint eval", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--sets", default=",".join(labelled.SETS),
                        help=f"comma-separated, from {','.join(labelled.SETS)}")
    parser.add_argument("--detectors", default=",".join(LABELLED_DETECTORS),
                        help=f"comma-separated, from {','.join(LABELLED_DETECTORS)}")
    parser.add_argument("--devices", type=int, default=None,
                        help="only the first N devices of each set (a quick run)")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    dets = [d for d in args.detectors.split(",") if d]
    for d in dets:
        if d not in LABELLED_DETECTORS:
            parser.error(f"unknown detector {d!r}; choose from {','.join(LABELLED_DETECTORS)}")
    for s in sets:
        if s not in labelled.SETS:
            parser.error(f"unknown set {s!r}; choose from {','.join(labelled.SETS)}")
    t0 = time.perf_counter()
    out: dict[str, SetResult] = {}
    for name in sets:
        data = labelled.load(name, args.devices)
        rows = sum(len(d.values) for d in data.devices)
        per: dict[str, Figures] = {}
        for det in dets:
            started = time.perf_counter()
            scores = detectors.run(det, data.devices, data.profile, data.metrics,
                                   fleet_model=data.fleet_model)
            seconds = time.perf_counter() - started
            stderr(f"eval {name}: {det} over {len(data.devices)} devices, {rows} rows in "
                   f"{seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s)")
            per[det] = event_figures(data, [s >= FIXED_THRESHOLD for s in scores])
        out[name] = SetResult(len(data.devices), rows, data.definition, per)
    _print_labelled(out)
    if args.json:
        print(json.dumps({"sets": {k: asdict(v) for k, v in out.items()},
                          "seconds": round(time.perf_counter() - t0, 1)}, sort_keys=True))
    return 0


def _fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}" if math.isfinite(x) else str(x)
    return str(x)


def _print_labelled(out: dict[str, SetResult]) -> None:
    cols = ("precision", "recall", "f1", "lead_readings_median", "lead_hours_median",
            "false_alerts_per_device_day")
    heads = ("precision", "recall", "F1", "lead (rd)", "lead (h)", "false/dev-day")
    for name, body in out.items():
        print(f"{name}: {body.devices} devices, {body.rows} rows ({body.definition})")
        print(f"  {'detector':<10}" + "".join(f"{h:>14}" for h in heads))
        for det, fig in body.detectors.items():
            print(f"  {det:<10}" + "".join(f"{_fmt(fig[c]):>14}" for c in cols))


def main(argv: list[str]) -> int:
    """``smaint eval ...``: dispatch to nab, nab-score or the labelled sets."""
    try:
        if argv and argv[0] == "nab":
            return _nab(argv[1:])
        if argv and argv[0] == "nab-score":
            return _nab_score(argv[1:])
        return _labelled(argv)
    except (CorpusError, ResultsError, detectors.UnknownDetectorError) as exc:
        stderr(f"smaint eval: {exc}")
        return 2
