"""Folding freshly stored readings into the per-minute and per-hour rollups.

The rows of one batch are aggregated here with numpy (a 5,000-reading batch of 100 devices
folds into a few hundred minute buckets), so the database only upserts the buckets. Callers
pass only rows that were really inserted: a duplicate must never be counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from cloud.db.pool import Conn
from shared.batchcodec import ReadingColumns

_MINUTE_MS = 60_000

# Both tables in one round trip. Devices and metrics travel as small name arrays plus
# per-bucket codes, numbers as array literals: dumping thousands of Python numbers one by one
# through the driver costs more than the upsert itself.
_UPSERT = """
WITH r1 AS (
    INSERT INTO readings_1m (device_id, metric, bucket, min, max, sum, count)
    SELECT (%(dn)s::text[])[d + 1], (%(mn)s::text[])[m + 1],
           timestamptz 'epoch' + b * interval '1 minute', lo, hi, s, n
    FROM unnest(%(d1)s::int[], %(m1)s::int[], %(b1)s::bigint[], %(lo1)s::float8[],
                %(hi1)s::float8[], %(s1)s::float8[], %(n1)s::bigint[]) AS u(d, m, b, lo, hi, s, n)
    ORDER BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        min = least(readings_1m.min, EXCLUDED.min), max = greatest(readings_1m.max, EXCLUDED.max),
        sum = readings_1m.sum + EXCLUDED.sum, count = readings_1m.count + EXCLUDED.count
), r2 AS (
    INSERT INTO readings_1h (device_id, metric, bucket, min, max, sum, count)
    SELECT (%(dn)s::text[])[d + 1], (%(mn)s::text[])[m + 1],
           timestamptz 'epoch' + b * interval '1 hour', lo, hi, s, n
    FROM unnest(%(d2)s::int[], %(m2)s::int[], %(b2)s::bigint[], %(lo2)s::float8[],
                %(hi2)s::float8[], %(s2)s::float8[], %(n2)s::bigint[]) AS u(d, m, b, lo, hi, s, n)
    ORDER BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        min = least(readings_1h.min, EXCLUDED.min), max = greatest(readings_1h.max, EXCLUDED.max),
        sum = readings_1h.sum + EXCLUDED.sum, count = readings_1h.count + EXCLUDED.count
)
SELECT 1
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
            ) -> tuple[Buckets, list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                            npt.NDArray[np.float64], npt.NDArray[np.int64]]]]:
    """Merge rows sorted by (device, bucket): per metric (min, max, sum, count), NaN = none."""
    starts = _starts(device, bucket)
    per_metric = []
    parts: list[Buckets] = []
    for k, (lo, hi, total, n) in enumerate(columns):
        # fmin/fmax skip NaN (a row without this metric); an all-NaN run has count 0.
        agg = (np.fmin.reduceat(lo, starts), np.fmax.reduceat(hi, starts),
               np.add.reduceat(total, starts), np.add.reduceat(n, starts))
        per_metric.append(agg)
        keep = agg[3] > 0
        parts.append(Buckets(device[starts][keep], np.full(int(keep.sum()), k, np.int64),
                             bucket[starts][keep], agg[0][keep], agg[1][keep], agg[2][keep],
                             agg[3][keep]))
    # Every reading has at least one metric, so there is at least one part.
    merged = Buckets(*(np.concatenate([getattr(p, f.name) for p in parts])
                       for f in fields(Buckets)))
    return merged, per_metric


def aggregate(device_codes: npt.NDArray[np.int64], cols: ReadingColumns
              ) -> tuple[Buckets, Buckets]:
    """Minute and hour buckets of ``cols`` (all rows), devices given as integer codes."""
    minute = np.asarray(cols.ts_ms, dtype=np.int64) // _MINUTE_MS
    order = np.lexsort((minute, device_codes))
    dev, minute = device_codes[order], minute[order]
    columns = []
    for values in cols.metrics.values():
        # None becomes NaN: that reading simply lacks this metric.
        v = np.asarray(values, dtype=np.float64)[order]
        present = ~np.isnan(v)
        columns.append((v, v, np.where(present, v, 0.0), present.astype(np.int64)))
    minutes, per_metric = _reduce(dev, minute, columns)
    starts = _starts(dev, minute)
    hours, _ = _reduce(dev[starts], minute[starts] // 60, per_metric)
    return minutes, hours


def _literal(values: npt.NDArray[np.int64] | npt.NDArray[np.float64]) -> str:
    """An array literal (repr of a float is exact; the values are finite)."""
    return "{" + ",".join(map(repr, values.tolist())) + "}"


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


def fold(conn: Conn, cols: ReadingColumns) -> None:
    """Add the rows of ``cols`` (all freshly inserted) to readings_1m and readings_1h."""
    if not len(cols):
        return
    codes, names = device_codes(cols.device)
    minutes, hours = aggregate(codes, cols)
    params: dict[str, object] = {"dn": array_literal(names),
                                 "mn": array_literal(list(cols.metrics))}
    for suffix, b in (("1", minutes), ("2", hours)):
        params.update({
            f"d{suffix}": _literal(b.device), f"m{suffix}": _literal(b.metric),
            f"b{suffix}": _literal(b.bucket), f"lo{suffix}": _literal(b.min),
            f"hi{suffix}": _literal(b.max), f"s{suffix}": _literal(b.sum),
            f"n{suffix}": _literal(b.count)})
    # Prepared on first use (not psycopg's fifth): a pooled connection sees few batches.
    conn.execute(_UPSERT, params, prepare=True)
