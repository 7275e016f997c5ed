"""The NAB corpus: 58 series with their labelled windows, loaded in row order.

A corpus directory has NAB's layout (``data/<category>/<series>.csv`` and
``labels/combined_windows.json``); the default is the copy bundled in ``evaluation/data/nab``.
Rows are kept exactly as the file has them: machine_temperature has duplicated and
backward-stepping timestamps, and a replay must see the rows in file order.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

BUNDLED = Path(__file__).resolve().parent / "data" / "nab"
PROBATION_SHARE = 0.15
PROBATION_CAP = 750  # NAB: 15 % of the file, at most 15 % of 5,000 rows


class CorpusError(ValueError):
    """The corpus directory is not laid out like NAB's, or a label does not match its file."""


@dataclass(frozen=True)
class NabSeries:
    """One NAB file: its rows in file order and its scoring windows as row ranges."""

    name: str  # path relative to data/, e.g. "realKnownCause/nyc_taxi.csv"
    timestamps: tuple[str, ...]  # as written in the file
    value_text: tuple[str, ...]  # as written in the file (output CSVs repeat them unchanged)
    epoch_ms: npt.NDArray[np.int64]  # naive times read as UTC
    values: npt.NDArray[np.float64]
    windows: tuple[tuple[int, int], ...]  # inclusive first and last row of each window
    labels: tuple[int, ...]  # row of each point label (combined_labels.json), if loaded

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.values)

    @property
    def probation(self) -> int:
        """Rows NAB ignores at the start (and the only rows a detector may fit on)."""
        return probation_rows(self.rows)


def probation_rows(n: int) -> int:
    """NAB's probationary period of an n-row file: min(floor(0.15 n), 750)."""
    return int(min(math.floor(PROBATION_SHARE * n), PROBATION_CAP))


def to_epoch_ms(stamps: Sequence[str]) -> npt.NDArray[np.int64]:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]`` strings as epoch milliseconds (naive = UTC)."""
    try:
        return np.asarray(stamps, dtype="datetime64[ms]").astype(np.int64)
    except ValueError as exc:
        raise CorpusError(f"unreadable timestamp: {exc}") from exc


def _window_rows(name: str, epoch: npt.NDArray[np.int64],
                 limits: Sequence[Sequence[str]]) -> tuple[tuple[int, int], ...]:
    """Each window's first and last row: the first row at its start time, then the first row
    at its end time from there on (NAB's own rule, so duplicated times resolve the same way)."""
    out: list[tuple[int, int]] = []
    pos = 0
    for start_s, end_s in limits:
        start, end = to_epoch_ms([start_s, end_s])
        hits = np.flatnonzero(epoch[pos:] == start)
        if hits.size == 0:
            raise CorpusError(f"{name}: window start {start_s} is not a row of the file")
        first = pos + int(hits[0])
        hits = np.flatnonzero(epoch[first:] == end)
        if hits.size == 0:
            raise CorpusError(f"{name}: window end {end_s} is not a row after its start")
        last = first + int(hits[0])
        out.append((first, last))
        pos = last + 1
    return tuple(out)


def read_series(path: Path, name: str, windows: Sequence[Sequence[str]] = (),
                labels: Sequence[str] = ()) -> NabSeries:
    """One ``timestamp,value`` file with its windows (and point labels) as row indices."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "timestamp,value":
        raise CorpusError(f"{path}: expected a 'timestamp,value' header")
    stamps: list[str] = []
    texts: list[str] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        stamp, sep, text = line.partition(",")
        if not sep:
            raise CorpusError(f"{path}:{lineno}: expected 'timestamp,value'")
        stamps.append(stamp)
        texts.append(text.strip())
    epoch = to_epoch_ms(stamps)
    values = np.asarray([float(t) for t in texts], dtype=np.float64)
    label_rows: list[int] = []
    for stamp in labels:
        hits = np.flatnonzero(epoch == to_epoch_ms([stamp])[0])
        if hits.size == 0:
            raise CorpusError(f"{name}: label {stamp} is not a row of the file")
        label_rows.append(int(hits[0]))
    return NabSeries(name=name, timestamps=tuple(stamps), value_text=tuple(texts),
                     epoch_ms=epoch, values=values,
                     windows=_window_rows(name, epoch, windows), labels=tuple(label_rows))


def _labels_file(root: Path, file: str) -> dict[str, list[object]]:
    path = root / "labels" / file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path} is missing: --data must be a NAB checkout "
                          f"(data/ and labels/)") from None
    if not isinstance(data, dict):
        raise CorpusError(f"{path}: expected an object of file -> labels")
    return data


def corpus_names(root: Path | None = None, pattern: str | None = None) -> list[str]:
    """The series names of a corpus (sorted), optionally filtered by a glob on the name."""
    base = (root or BUNDLED) / "data"
    if not base.is_dir():
        raise CorpusError(f"{base} is not a directory: --data must be a NAB checkout")
    names = sorted(p.relative_to(base).as_posix() for p in base.glob("*/*.csv"))
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def load_series(name: str, root: Path | None = None) -> NabSeries:
    """One series of the corpus by its name, with its windows and point labels."""
    base = root or BUNDLED
    windows = _labels_file(base, "combined_windows.json")
    if name not in windows:
        raise CorpusError(f"{name} has no entry in combined_windows.json")
    labels_path = base / "labels" / "combined_labels.json"
    points = _labels_file(base, "combined_labels.json") if labels_path.exists() else {}
    return read_series(base / "data" / name, name,
                       windows=[list(map(str, w)) for w in windows[name]
                                if isinstance(w, list)],
                       labels=[str(s) for s in points.get(name, [])])


def load_corpus(root: Path | None = None, pattern: str | None = None) -> list[NabSeries]:
    """Every series of a corpus (or those whose name matches ``pattern``), sorted by name."""
    names = corpus_names(root, pattern)
    if not names:
        raise CorpusError(f"no series matches {pattern!r}")
    return [load_series(n, root) for n in names]
