"""Rollups: min, max, sum and count of every metric per device and minute, and per hour.

Ingest does not upsert the rollup tables itself. Each batch aggregates the rows it really
inserted (never a duplicate) into per-minute deltas with numpy (a 5,000-reading batch of 100
devices gives a few hundred) and appends them to ``rollup_pending`` with one binary COPY, in
the batch's own transaction. A folder running in every cloud process moves the pending deltas
into ``readings_1m`` and ``readings_1h`` about once a second: the DELETE … RETURNING and both
upserts are one transaction, so each delta is folded exactly once. A second of batches then
costs one upsert per bucket instead of one per bucket and batch, and concurrent batches never
queue on each other's bucket rows. Queries (cloud.query.readings.bucketed) add the deltas still
pending, so their answers are exact at every moment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from psycopg_pool import ConnectionPool

from cloud.background.loop import BackgroundLoop
from cloud.db.pool import Conn
from cloud.ingest import binary_copy
from shared.batchcodec import ReadingColumns

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000
_FOLD_LOCK = 0x736D61696E76  # advisory lock: one fold at a time across all processes
FOLD_LIMIT = 200_000  # deltas per fold transaction

_COPY = ("COPY rollup_pending (bucket, min, max, sum, count, device_id, metric)"
         " FROM STDIN (FORMAT binary)")
_HEAD = np.dtype([
    ("nf", ">i2"), ("l_b", ">i4"), ("bucket", ">i8"), ("l_lo", ">i4"), ("lo", ">f8"),
    ("l_hi", ">i4"), ("hi", ">f8"), ("l_s", ">i4"), ("s", ">f8"), ("l_n", ">i4"), ("n", ">i8"),
])

# Both rollups from one batch of deltas; buckets in key order, like every writer of them.
# date_bin on the epoch, not date_trunc: the session's time zone must not move an hour.
_FOLD = """
WITH d AS (
    DELETE FROM rollup_pending
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM rollup_pending LIMIT %(limit)s))
    RETURNING device_id, metric, bucket, min, max, sum, count
), m AS (
    SELECT device_id, metric, bucket, min(min) AS lo, max(max) AS hi, sum(sum) AS s,
           sum(count)::bigint AS n
    FROM d GROUP BY 1, 2, 3
), r1 AS (
    INSERT INTO readings_1m (device_id, metric, bucket, min, max, sum, count)
    SELECT * FROM m ORDER BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        min = least(readings_1m.min, EXCLUDED.min), max = greatest(readings_1m.max, EXCLUDED.max),
        sum = readings_1m.sum + EXCLUDED.sum, count = readings_1m.count + EXCLUDED.count
), r2 AS (
    INSERT INTO readings_1h (device_id, metric, bucket, min, max, sum, count)
    SELECT device_id, metric, date_bin('1 hour', bucket, timestamptz 'epoch'), min(lo), max(hi),
           sum(s), sum(n)::bigint
    FROM m GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        min = least(readings_1h.min, EXCLUDED.min), max = greatest(readings_1h.max, EXCLUDED.max),
        sum = readings_1h.sum + EXCLUDED.sum, count = readings_1h.count + EXCLUDED.count
)
SELECT count(*) FROM d
"""


@dataclass(slots=True)
class Buckets:
    """Aggregates per (device code, metric code, bucket number); codes index the name lists."""

    device: npt.NDArray[np.int64]
    metric: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    sum: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]


def _starts(*keys: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """First index of each run of equal keys in arrays sorted by those keys."""
    change = np.zeros(len(keys[0]), dtype=bool)
    if len(change):
        change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def _reduce(device: npt.NDArray[np.int64], bucket: npt.NDArray[np.int64],
            columns: Sequence[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                    npt.NDArray[np.float64], npt.NDArray[np.int64]]],
            ) -> Buckets:
    """Merge rows sorted by (device, bucket): per metric (min, max, sum, count), NaN = none."""
    starts = _starts(device, bucket)
    parts: list[Buckets] = []
    for k, (lo, hi, total, n) in enumerate(columns):
        # fmin/fmax skip NaN (a row without this metric); an all-NaN run has count 0.
        count = np.add.reduceat(n, starts)
        keep = count > 0
        parts.append(Buckets(
            device[starts][keep], np.full(int(keep.sum()), k, np.int64), bucket[starts][keep],
            np.fmin.reduceat(lo, starts)[keep], np.fmax.reduceat(hi, starts)[keep],
            np.add.reduceat(total, starts)[keep], count[keep]))
    # Every reading has at least one metric, so there is at least one part.
    return Buckets(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in fields(Buckets)))


def aggregate(device_codes: npt.NDArray[np.int64], cols: ReadingColumns) -> Buckets:
    """Minute buckets of ``cols`` (all rows), devices given as integer codes."""
    minute = np.asarray(cols.ts_ms, dtype=np.int64) // _MINUTE_MS
    order = np.lexsort((minute, device_codes))
    dev, minute = device_codes[order], minute[order]
    columns = []
    for values in cols.metrics.values():
        # None becomes NaN: that reading simply lacks this metric.
        v = np.asarray(values, dtype=np.float64)[order]
        present = ~np.isnan(v)
        columns.append((v, v, np.where(present, v, 0.0), present.astype(np.int64)))
    return _reduce(dev, minute, columns)


def array_literal(values: Sequence[str] | Sequence[int]) -> str:
    """A PostgreSQL array literal of ``values`` (strings quoted), to pass as one text value.

    psycopg dumps a list element by element in Python, which costs more than the statement
    it feeds; one string is dumped at once and parsed by the server in C.
    """
    if not values or not isinstance(values[0], str):
        return "{" + ",".join(map(str, values)) + "}"
    text = '","'.join(values)  # type: ignore[arg-type]
    if "\\" in text or '"' in text:
        text = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"')  # type: ignore[union-attr]
                          for v in values)
    return '{"' + text + '"}'


def device_codes(devices: Sequence[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Each row's device as an index into the sorted list of distinct devices, and that list."""
    names = sorted(set(devices))
    index = {d: k for k, d in enumerate(names)}
    return np.fromiter(map(index.__getitem__, devices), dtype=np.int64,
                       count=len(devices)), names


def record(conn: Conn, cols: ReadingColumns) -> int:
    """Append the per-minute deltas of ``cols`` (all freshly inserted) to rollup_pending."""
    if not len(cols):
        return 0
    codes, names = device_codes(cols.device)
    b = aggregate(codes, cols)
    n = len(b.count)
    head = np.zeros(n, dtype=_HEAD)
    head["nf"] = 7
    for name in ("l_b", "l_lo", "l_hi", "l_s", "l_n"):
        head[name] = 8
    head["bucket"] = binary_copy.pg_timestamps(b.bucket * _MINUTE_MS)
    head["lo"], head["hi"], head["s"], head["n"] = b.min, b.max, b.sum, b.count
    devices = [binary_copy.text(d) for d in names]
    metrics = [binary_copy.text(m) for m in cols.metrics]
    tails = map(bytes.__add__, map(devices.__getitem__, b.device.tolist()),
                map(metrics.__getitem__, b.metric.tolist()))
    rows = map(bytes.__add__, binary_copy.heads(head), tails)
    binary_copy.copy_in(conn, _COPY, binary_copy.payload(rows))
    return n


def fold_pending(conn: Conn, limit: int = FOLD_LIMIT) -> int:
    """Fold up to ``limit`` pending deltas into the rollups; 0 if another fold is running."""
    with conn.transaction():
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_FOLD_LOCK,)).fetchone()
        if not row or not row[0]:
            return 0
        done = conn.execute(_FOLD, {"limit": limit}, prepare=True).fetchone()
    return int(done[0]) if done else 0


class RollupFolder:
    """Folds pending rollup deltas every ``interval_s`` in a background thread."""

    def __init__(self, pool: ConnectionPool, interval_s: float) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.folded = 0
        # A fresh fold every interval, and one last fold on stop.
        self._loop = BackgroundLoop("rollup folder", self._step, interval_s, final_step=True)

    def start(self) -> None:
        """Start folding in a daemon thread."""
        self._loop.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fold what is pending one last time, then end the thread."""
        self._loop.stop(timeout_s)

    def fold_all(self) -> int:
        """Fold until nothing is pending (or another process holds the fold)."""
        total = 0
        with self.pool.connection() as conn:
            while (n := fold_pending(conn)) > 0:
                total += n
                if n < FOLD_LIMIT:
                    break
        self.folded += total
        return total

    def _step(self) -> bool:
        self.fold_all()
        return False  # fold_all emptied the queue: wait for the next interval
