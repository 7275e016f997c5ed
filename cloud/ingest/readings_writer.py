"""Writing a batch's readings into the partitioned ``readings`` table, each one exactly once.

A reading's identity is (device, boot, seq), whatever its ts (a device re-timed after a clock
sync sends stored readings again with another ts). Per (device, boot), ``readings_hwm`` keeps
the highest seq stored (the high-water mark) and the number of rows stored, and
``readings_seq_gaps`` the seqs at or below the mark that are not stored (readings lost on the
way, or not uploaded yet). Every batch first locks its marks, creating missing ones, in
(device, boot) order: batches writing the same device and boot queue there, including two
racing for a new boot. Rows above the mark cannot be stored yet, so they are streamed into
``readings`` with one binary COPY: no conflict check, no per-row work in the database beyond
storing. Only rows at or below the mark (a catch-up after an outage, a backfill, a lost ack, a
re-timed replay) are looked up in the gaps, and those a gap holds take the slower ``INSERT``;
the unique index on (device, ts, boot, seq) stays a safety net (cloud.ingest.batch redoes the
batch with every row checked if it ever fires). Gaps are written only when seqs are missing.
Rollup deltas (cloud.ingest.rollup) and the row counts come only from rows actually inserted.
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

_COLUMNS = ("d", "b", "s", "ts", "dts", "rcv", "t", "sc", "scr", "mv", "an", "rp", "og", "nt")
_TYPES = ("text", "text", "bigint", "bigint", "bigint", "bigint", "text", "float8", "text",
          "text", "bool", "bool", "text", "text")
# Locks every mark row of the batch, inserting the missing ones, in one sorted pass; the
# WHERE false leaves existing rows unchanged (but locked). A plain SELECT … FOR UPDATE would
# not see, hence not lock, a boot another batch is creating at the same moment.
_LOCK_MARKS = """
INSERT INTO readings_hwm (device_id, boot_id, max_seq)
SELECT d, b, -1 FROM unnest(%s::text[], %s::text[]) AS u(d, b) ORDER BY 1, 2
ON CONFLICT (device_id, boot_id) DO UPDATE SET max_seq = readings_hwm.max_seq WHERE false
"""
# Read after the lock, in a statement of its own: its snapshot holds the latest versions.
# Gaps above a mark can only be left by a restore that moved the mark back: dropped here,
# before this batch adds gaps above the mark.
_MARKS = """
WITH u AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS u(d, b)), stale AS (
    DELETE FROM readings_seq_gaps g USING readings_hwm h, u
    WHERE h.device_id = u.d AND h.boot_id = u.b AND g.device_id = u.d AND g.boot_id = u.b
      AND g.lo > h.max_seq
)
SELECT device_id, boot_id, max_seq FROM readings_hwm h, u
WHERE h.device_id = u.d AND h.boot_id = u.b
"""
_GAPS = """
SELECT g.device_id, g.boot_id, g.lo, g.hi
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS u(d, b, lo, hi)
JOIN readings_seq_gaps g ON g.device_id = u.d AND g.boot_id = u.b AND g.lo <= u.hi
                            AND g.hi >= u.lo
"""
_DROP_GAPS = """
DELETE FROM readings_seq_gaps g USING unnest(%s::text[], %s::text[], %s::bigint[]) AS u(d, b, lo)
WHERE g.device_id = u.d AND g.boot_id = u.b AND g.lo = u.lo
"""
_ADD_GAPS = """
INSERT INTO readings_seq_gaps (device_id, boot_id, lo, hi)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[])
"""
# Marks and devices in one round trip. Devices in sorted order, like every writer; a replayed
# old batch must not roll a device's type or gateway back.
_UPSERT_DEVICES = """
WITH hwm AS (
    UPDATE readings_hwm h SET max_seq = greatest(h.max_seq, u.top), n_rows = h.n_rows + u.n
    FROM unnest(%(hd)s::text[], %(hb)s::text[], %(hs)s::bigint[], %(hn)s::bigint[])
        AS u(d, b, top, n)
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
        cols.type, cols.score, cols.scorer, cols.model_version, cols.anomalous, cols.replay,
        cols.origin, cols.note)
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
    return sql.SQL("""
WITH ins AS (
    INSERT INTO readings (device_id, boot_id, seq, ts, device_ts, received_at, gateway_id,
                          batch_seq, type, metrics, score, scorer, model_version, anomalous,
                          replay, origin, note)
    SELECT d, b, s, timestamptz 'epoch' + ts * interval '1 ms',
           timestamptz 'epoch' + dts * interval '1 ms',
           timestamptz 'epoch' + rcv * interval '1 ms', {gw}, {bs}, t,
           jsonb_strip_nulls(jsonb_build_object({pairs})), sc, scr, mv, an, rp, og, nt
    FROM unnest({arrays}) AS u({names})
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
    redo after a UniqueViolation) they go through ``INSERT … ON CONFLICT`` too. ``seen``
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
    above, below = keep[fresh], keep[~fresh]
    gaps = _Gaps(pairs)
    gaps.open_above(np.sort(key[above]), mark)
    if len(below):
        below = below[gaps.fill(conn, key[below])]
    fast: list[int] = [] if checked else above.tolist()
    slow: list[int] = np.sort(np.r_[above, below]).tolist() if checked else below.tolist()
    per_pair = np.bincount(code[fast], minlength=len(pairs)) if fast else np.zeros(
        len(pairs), dtype=np.int64)
    inserted = _copy_fast(conn, take_rows(cols, fast), gateway_id, batch_seq) if fast else 0
    if slow:
        for p, k in _insert(conn, cols, slow, gateway_id=gateway_id,
                            batch_seq=batch_seq).items():
            per_pair[pair_of[p]] += k
            inserted += k
    gaps.write(conn)
    _upsert_devices(conn, gateway_id, _seen(cols, seen), {
        "hd": devs, "hb": boots, "hs": array_literal(_tops(code, seq, len(pairs)).tolist()),
        "hn": array_literal(per_pair.tolist())})
    return inserted


def _tops(code: npt.NDArray[np.int64], seq: npt.NDArray[np.int64],
          n_pairs: int) -> npt.NDArray[np.int64]:
    """The highest seq of each (device, boot) code."""
    top = np.full(n_pairs, -1, dtype=np.int64)
    np.maximum.at(top, code, seq)
    return top


_LOW = 0xFFFFFFFF


class _Gaps:
    """The changes a batch makes to its (device, boot)s' gaps, written in two statements."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.drop: list[tuple[int, int]] = []  # (pair code, lo) of gaps filled
        self.add: list[tuple[int, int, int]] = []  # (pair code, lo, hi) of new gaps

    def open_above(self, keys: npt.NDArray[np.int64], mark: npt.NDArray[np.int64]) -> None:
        """Gaps the sorted identity keys above the marks leave: before and between them."""
        if not len(keys):
            return
        code, seq = keys >> 32, keys & _LOW
        prev = np.r_[-1, seq[:-1]]
        first = np.r_[True, code[1:] != code[:-1]]
        prev[first] = mark[code[first]]
        hole = np.flatnonzero(seq > prev + 1)
        self.add += zip(code[hole].tolist(), (prev[hole] + 1).tolist(),
                        (seq[hole] - 1).tolist(), strict=True)

    def fill(self, conn: Conn, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Which identity keys at or below their marks a stored gap holds (not stored yet);
        those gaps are split around them."""
        code, seq = keys >> 32, keys & _LOW
        lo = np.full(len(self.pairs), _LOW, dtype=np.int64)
        hi = np.full(len(self.pairs), -1, dtype=np.int64)
        np.minimum.at(lo, code, seq)
        np.maximum.at(hi, code, seq)
        ask = np.flatnonzero(hi >= 0).tolist()
        pair_of = {p: k for k, p in enumerate(self.pairs)}
        rows = sorted((pair_of[(d, b)], g_lo, g_hi) for d, b, g_lo, g_hi in conn.execute(
            _GAPS, (array_literal([self.pairs[k][0] for k in ask]),
                    array_literal([self.pairs[k][1] for k in ask]),
                    array_literal(lo[ask].tolist()), array_literal(hi[ask].tolist())),
            prepare=True))
        if not rows:
            return np.zeros(len(keys), dtype=bool)
        g = np.array(rows, dtype=np.int64).reshape(-1, 3)
        at = np.searchsorted(g[:, 0] << 32 | g[:, 1], keys, side="right") - 1
        ok = at >= 0
        ok[ok] = (g[at[ok], 0] == code[ok]) & (g[at[ok], 2] >= seq[ok])
        filled: dict[int, list[int]] = {}
        for i, s in zip(at[ok].tolist(), seq[ok].tolist(), strict=True):
            filled.setdefault(i, []).append(s)
        for i, seqs in filled.items():
            c, g_lo, g_hi = rows[i]
            self.drop.append((c, g_lo))
            start = g_lo
            for s in sorted(seqs):  # distinct: the caller kept one copy per identity
                if s > start:
                    self.add.append((c, start, s - 1))
                start = s + 1
            if start <= g_hi:
                self.add.append((c, start, g_hi))
        return ok

    def write(self, conn: Conn) -> None:
        """Drop the filled gaps, then add the new ones (a piece may keep a dropped gap's lo)."""
        if self.drop:
            conn.execute(_DROP_GAPS, (
                array_literal([self.pairs[c][0] for c, _ in self.drop]),
                array_literal([self.pairs[c][1] for c, _ in self.drop]),
                array_literal([lo for _, lo in self.drop])), prepare=True)
        if self.add:
            conn.execute(_ADD_GAPS, (
                array_literal([self.pairs[c][0] for c, _, _ in self.add]),
                array_literal([self.pairs[c][1] for c, _, _ in self.add]),
                array_literal([lo for _, lo, _ in self.add]),
                array_literal([hi for _, _, hi in self.add])), prepare=True)


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
        **(marks or dict.fromkeys(("hd", "hb", "hs", "hn"), empty))},
        prepare=True)
