"""Writing a batch's readings into the partitioned ``readings`` table, each one exactly once.

A reading's identity is (device, boot, seq), whatever its ts (a device re-timed after a clock
sync sends stored readings again with another ts). Per (device, boot), ``readings_hwm`` keeps
the highest seq stored (the high-water mark), the set of seqs stored (a multirange: one range
per run of consecutive seqs) and the number of rows stored. Every batch first takes those
rows' locks, creating missing ones, in (device, boot) order: batches writing the same device
and boot queue there, including two racing for a new boot. Rows above the mark cannot be
stored yet, so they are streamed into ``readings`` with one binary COPY: no conflict check,
no per-row work in the database beyond storing. Only rows at or below the mark (a catch-up
after an outage, a backfill, a lost ack, a re-timed replay) take the slower ``INSERT``, which
skips seqs in the stored set; the unique index on (device, ts, boot, seq) stays a safety net
(cloud.ingest.batch redoes the batch with every row checked if it ever fires). Rollup deltas
(cloud.ingest.rollup) and the row counts come only from rows actually inserted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from cloud.db.pool import Conn
from cloud.ingest import binary_copy
from cloud.ingest.readings_copy import COPY, copy_payload, take_rows
from cloud.ingest.rollup import array_literal, device_codes, record
from shared.batchcodec import ReadingColumns

log = logging.getLogger(__name__)

# A device seen in a batch: (type, earliest ts, latest ts), the type as of the latest.
Seen = tuple[str, int, int]

_COLUMNS = ("d", "b", "s", "ts", "dts", "rcv", "t", "sc", "scr", "mv", "an", "rp")
_TYPES = ("text", "text", "bigint", "bigint", "bigint", "bigint", "text", "float8", "text",
          "text", "bool", "bool")
# Locks every mark row of the batch, inserting the missing ones, in one sorted pass; the
# WHERE false leaves existing rows unchanged (but locked). A plain SELECT … FOR UPDATE would
# not see, hence not lock, a boot another batch is creating at the same moment.
_LOCK_MARKS = """
INSERT INTO readings_hwm (device_id, boot_id, max_seq)
SELECT d, b, -1 FROM unnest(%s::text[], %s::text[]) AS u(d, b) ORDER BY 1, 2
ON CONFLICT (device_id, boot_id) DO UPDATE SET max_seq = readings_hwm.max_seq WHERE false
"""
# Read after the lock, in a statement of its own: its snapshot holds the latest versions.
_MARKS = """
SELECT device_id, boot_id, max_seq FROM readings_hwm
WHERE (device_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
# Marks and devices in one round trip. The marks' stored set is first cut at the old mark:
# seqs above it are not stored, whatever a restore left in the set. Devices in sorted order,
# like every writer; a replayed old batch must not roll a device's type or gateway back.
_UPSERT_DEVICES = """
WITH runs AS (
    SELECT d, b, range_agg(int8range(lo, hi, '[]')) AS r
    FROM unnest(%(rd)s::text[], %(rb)s::text[], %(rlo)s::bigint[], %(rhi)s::bigint[])
        AS u(d, b, lo, hi)
    GROUP BY 1, 2
), hwm AS (
    UPDATE readings_hwm h SET
        seqs = h.seqs * int8multirange(int8range(NULL, h.max_seq, '[]')) + runs.r,
        max_seq = greatest(h.max_seq, u.top), n_rows = h.n_rows + u.n
    FROM unnest(%(hd)s::text[], %(hb)s::text[], %(hs)s::bigint[], %(hn)s::bigint[])
        AS u(d, b, top, n)
    JOIN runs USING (d, b)
    WHERE h.device_id = u.d AND h.boot_id = u.b
)
INSERT INTO devices (device_id, type, gateway_id, first_seen_at, last_seen_at)
SELECT d, t, %(gw)s, timestamptz 'epoch' + lo * interval '1 ms',
       timestamptz 'epoch' + hi * interval '1 ms'
FROM unnest(%(d)s::text[], %(t)s::text[], %(lo)s::bigint[], %(hi)s::bigint[]) AS u(d, t, lo, hi)
ORDER BY d
ON CONFLICT (device_id) DO UPDATE SET
    type = CASE WHEN EXCLUDED.last_seen_at >= devices.last_seen_at
                THEN EXCLUDED.type ELSE devices.type END,
    gateway_id = CASE WHEN EXCLUDED.last_seen_at >= devices.last_seen_at
                      THEN EXCLUDED.gateway_id ELSE devices.gateway_id END,
    first_seen_at = least(devices.first_seen_at, EXCLUDED.first_seen_at),
    last_seen_at = greatest(devices.last_seen_at, EXCLUDED.last_seen_at)
"""


def _copy_fast(conn: Conn, cols: ReadingColumns, gateway_id: str, batch_seq: int) -> int:
    """COPY rows known to be new straight into ``readings``; their rollup deltas follow."""
    binary_copy.copy_in(conn, COPY, copy_payload(cols, gateway_id, batch_seq))
    record(conn, cols)
    return len(cols)


# -- slow path: identity checks in the database --------------------------------------------


def _pick(cols: ReadingColumns, idx: Sequence[int]) -> dict[str, Any]:
    """Parameter arrays of the rows ``idx``."""
    def take(values: list[Any]) -> list[Any]:
        return [values[i] for i in idx]

    columns: tuple[list[Any], ...] = (
        cols.device, cols.boot, cols.seq, cols.ts_ms, cols.device_ts_ms, cols.received_ms,
        cols.type, cols.score, cols.scorer, cols.model_version, cols.anomalous, cols.replay)
    out: dict[str, Any] = {name: take(v) for name, v in zip(_COLUMNS, columns, strict=True)}
    for k, values in enumerate(cols.metrics.values()):
        out[f"m{k}"] = take(values)
    return out


def _insert_sql(metric_names: Sequence[str]) -> sql.Composed:
    cols = [*_COLUMNS, *(f"m{k}" for k in range(len(metric_names)))]
    types = [*_TYPES, *("float8" for _ in metric_names)]
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(c), sql.SQL(t))
        for c, t in zip(cols, types, strict=True))
    pairs = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(name), sql.Identifier(f"m{k}"))
        for k, name in enumerate(metric_names))
    # The stored set decides, not the unique index: a re-timed copy has another ts. The
    # caller holds the marks' locks, so the set cannot change under this statement.
    return sql.SQL("""
WITH ins AS (
    INSERT INTO readings (device_id, boot_id, seq, ts, device_ts, received_at, gateway_id,
                          batch_seq, type, metrics, score, scorer, model_version, anomalous,
                          replay)
    SELECT d, b, s, timestamptz 'epoch' + ts * interval '1 ms',
           timestamptz 'epoch' + dts * interval '1 ms',
           timestamptz 'epoch' + rcv * interval '1 ms', {gw}, {bs}, t,
           jsonb_strip_nulls(jsonb_build_object({pairs})), sc, scr, mv, an, rp
    FROM unnest({arrays}) AS u({names})
    WHERE NOT EXISTS (SELECT 1 FROM readings_hwm h WHERE h.device_id = u.d
                      AND h.boot_id = u.b AND u.s <= h.max_seq AND h.seqs @> u.s)
    ON CONFLICT DO NOTHING
    RETURNING device_id, boot_id, ts, metrics
), m AS (
    SELECT device_id, ts, e.key AS metric, e.value::double precision AS v
    FROM ins, jsonb_each(ins.metrics) AS e
), r AS (
    INSERT INTO rollup_pending (device_id, metric, bucket, min, max, sum, count)
    SELECT device_id, metric, date_bin('1 minute', ts, timestamptz 'epoch'), min(v), max(v),
           sum(v), count(*)
    FROM m GROUP BY 1, 2, 3
)
SELECT device_id, boot_id, count(*) FROM ins GROUP BY 1, 2""").format(
        gw=sql.Placeholder("gw"), bs=sql.Placeholder("bs"), pairs=pairs, arrays=arrays,
        names=sql.SQL(", ").join(map(sql.Identifier, cols)),
    )


def _insert(conn: Conn, cols: ReadingColumns, idx: Sequence[int], *,
            gateway_id: str, batch_seq: int) -> dict[tuple[str, str], int]:
    """Insert the rows ``idx`` not stored yet; rows inserted per (device, boot)."""
    params = _pick(cols, idx)
    params.update(gw=gateway_id, bs=batch_seq)
    rows = conn.execute(_insert_sql(list(cols.metrics)), params).fetchall()
    return {(d, b): int(n) for d, b, n in rows}


# -- the batch ------------------------------------------------------------------------------


def insert_readings(conn: Conn, cols: ReadingColumns, gateway_id: str, batch_seq: int, *,
                    checked: bool = False, seen: Mapping[str, Seen] | None = None) -> int:
    """Insert the readings not stored yet, inside the caller's transaction; returns how many.

    Rows above the high-water mark are COPY'd without checks. With ``checked=True`` (the
    redo after a UniqueViolation) every row goes through the checked ``INSERT``. ``seen``
    adds devices known from elsewhere in the batch (aggregates) to the device registry.
    """
    n = len(cols)
    if n == 0:
        if seen:
            _upsert_devices(conn, gateway_id, dict(seen), None)
        return 0
    pair_of: dict[tuple[str, str], int] = {
        p: k for k, p in enumerate(sorted(set(zip(cols.device, cols.boot, strict=True))))}
    pairs = list(pair_of)
    code = np.fromiter(map(pair_of.__getitem__, zip(cols.device, cols.boot, strict=True)),
                       dtype=np.int64, count=n)
    seq = np.asarray(cols.seq, dtype=np.int64)
    devs, boots = array_literal([p[0] for p in pairs]), array_literal([p[1] for p in pairs])
    conn.execute(_LOCK_MARKS, (devs, boots), prepare=True)
    mark = np.full(len(pairs), -1, dtype=np.int64)
    for d, b, m in conn.execute(_MARKS, (devs, boots), prepare=True):
        mark[pair_of[(d, b)]] = m
    # seq < 2**32 and fewer than 2**31 pairs: one int64 key per identity.
    key = code << 32 | seq
    # Gateways send batches sorted by (device, boot, seq): then a look at neighbours suffices.
    if bool(np.all(key[1:] > key[:-1])):
        keep = np.arange(n)
    else:
        # A reading repeated inside the batch (perhaps with another ts): its first copy.
        keep = np.sort(np.unique(key, return_index=True)[1])
    fresh = seq[keep] > mark[code[keep]]
    fast: list[int] = [] if checked else keep[fresh].tolist()
    slow: list[int] = keep.tolist() if checked else keep[~fresh].tolist()
    per_pair = np.bincount(code[fast], minlength=len(pairs)) if fast else np.zeros(
        len(pairs), dtype=np.int64)
    inserted = _copy_fast(conn, take_rows(cols, fast), gateway_id, batch_seq) if fast else 0
    if slow:
        for p, k in _insert(conn, cols, slow, gateway_id=gateway_id,
                            batch_seq=batch_seq).items():
            per_pair[pair_of[p]] += k
            inserted += k
    _upsert_devices(conn, gateway_id, _seen(cols, seen), {
        "hd": devs, "hb": boots, "hs": array_literal(_tops(code, seq, len(pairs)).tolist()),
        "hn": array_literal(per_pair.tolist()), **_runs(pairs, np.unique(key))})
    return inserted


def _tops(code: npt.NDArray[np.int64], seq: npt.NDArray[np.int64],
          n_pairs: int) -> npt.NDArray[np.int64]:
    """The highest seq of each (device, boot) code."""
    top = np.full(n_pairs, -1, dtype=np.int64)
    np.maximum.at(top, code, seq)
    return top


def _runs(pairs: Sequence[tuple[str, str]], keys: npt.NDArray[np.int64]) -> dict[str, str]:
    """Runs of consecutive seqs among the sorted identity keys, as parameter arrays: after
    the batch every one of them is stored (now or before)."""
    code, seq = keys >> 32, keys & 0xFFFFFFFF
    starts = np.flatnonzero(np.r_[True, (np.diff(seq) != 1) | (np.diff(code) != 0)])
    ends = np.r_[starts[1:], len(keys)] - 1
    run_pairs = [pairs[c] for c in code[starts].tolist()]
    return {"rd": array_literal([p[0] for p in run_pairs]),
            "rb": array_literal([p[1] for p in run_pairs]),
            "rlo": array_literal(seq[starts].tolist()), "rhi": array_literal(seq[ends].tolist())}


def _seen(cols: ReadingColumns, also: Mapping[str, Seen] | None) -> dict[str, Seen]:
    """Per device: the type of its latest reading, its earliest and latest ts."""
    codes, names = device_codes(cols.device)
    ts = np.asarray(cols.ts_ms, dtype=np.int64)
    # By device, then time, then position: a device's last row is its latest reading
    # (the later one of equal times).
    order = np.lexsort((np.arange(len(ts)), ts, codes))
    ends: npt.NDArray[np.intp] = np.searchsorted(codes[order], np.arange(len(names)),
                                                 side="right") - 1
    starts = np.searchsorted(codes[order], np.arange(len(names)), side="left")
    first, last = order[starts].tolist(), order[ends].tolist()
    out = {d: (cols.type[j], int(ts[i]), int(ts[j]))
           for d, i, j in zip(names, first, last, strict=True)}
    for d, s in (also or {}).items():
        out[d] = merge_seen(out[d], s) if d in out else s
    return out


def merge_seen(a: Seen, b: Seen) -> Seen:
    """Two sightings of one device as one: the type of the later."""
    return (b[0] if b[2] >= a[2] else a[0], min(a[1], b[1]), max(a[2], b[2]))


def _upsert_devices(conn: Conn, gateway_id: str, seen: dict[str, Seen],
                    marks: dict[str, str] | None) -> None:
    """First/last seen and the latest type of each device, and the marks' new state."""
    names = sorted(seen)
    empty = array_literal([])
    conn.execute(_UPSERT_DEVICES, {
        "gw": gateway_id, "d": array_literal(names),
        "t": array_literal([seen[d][0] for d in names]),
        "lo": array_literal([seen[d][1] for d in names]),
        "hi": array_literal([seen[d][2] for d in names]),
        **(marks or dict.fromkeys(("hd", "hb", "hs", "hn", "rd", "rb", "rlo", "rhi"), empty))},
        prepare=True)
