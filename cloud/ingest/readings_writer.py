"""Writing a batch's readings into the partitioned ``readings`` table, each one exactly once.

Readings are idempotent on their identity (device, boot, seq). The common path pays nothing
for that: a small table keeps, per (device, boot), the highest seq stored (the high-water
mark, locked for the transaction), and rows above it cannot exist yet, so they are streamed
into ``readings`` with one binary COPY: no conflict check, no per-row work in the database
beyond storing. Only rows at or below the mark (a catch-up after an outage, a backfill, a
lost ack) take the ``INSERT … ON CONFLICT DO NOTHING`` path, and the unique index stays the
safety net: if the COPY ever meets a duplicate (two batches racing for a new boot), the
batch's transaction is rolled back and redone with conflict checks (cloud.ingest.batch). Rollup
deltas (cloud.ingest.rollup) come only from rows actually inserted: a duplicate is never counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from psycopg import sql

from cloud.db.pool import Conn
from cloud.ingest.rollup import array_literal, device_codes, record
from shared.batchcodec import ReadingColumns

log = logging.getLogger(__name__)

_COLUMNS = ("d", "b", "s", "ts", "dts", "rcv", "t", "sc", "scr", "mv", "an", "rp")
_TYPES = ("text", "text", "bigint", "bigint", "bigint", "bigint", "text", "float8", "text",
          "text", "bool", "bool")
# Devices and high-water marks in one round trip. An unreferenced data-modifying CTE runs
# after the main statement: devices, then marks, each in sorted order, like every writer.
# A replayed old batch must not roll a device's type or gateway back to stale values.
_UPSERT_DEVICES = """
WITH hwm AS (
    INSERT INTO readings_hwm (device_id, boot_id, max_seq)
    SELECT * FROM unnest(%(hd)s::text[], %(hb)s::text[], %(hs)s::bigint[]) ORDER BY 1, 2
    ON CONFLICT (device_id, boot_id) DO UPDATE
        SET max_seq = greatest(readings_hwm.max_seq, EXCLUDED.max_seq)
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

# -- binary COPY ----------------------------------------------------------------------------

_COPY = (
    "COPY readings (seq, ts, received_at, batch_seq, anomalous, replay, device_ts, score,"
    " metrics, device_id, boot_id, gateway_id, type, scorer, model_version)"
    " FROM STDIN (FORMAT binary)"
)
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"  # field length -1
_PG_EPOCH_MS = 946_684_800_000  # timestamptz travels as microseconds since 2000-01-01 UTC
# The fixed-width start of every row, built for all rows at once; the row goes on with its
# metrics JSON and the text fields (few distinct combinations per batch, encoded once each).
_HEAD = np.dtype([
    ("nf", ">i2"), ("l_seq", ">i4"), ("seq", ">i8"), ("l_ts", ">i4"), ("ts", ">i8"),
    ("l_rcv", ">i4"), ("rcv", ">i8"), ("l_bs", ">i4"), ("bs", ">i8"),
    ("l_an", ">i4"), ("an", "u1"), ("l_rp", ">i4"), ("rp", "u1"),
    ("l_dts", ">i4"), ("dts", ">i8"), ("l_sc", ">i4"), ("sc", ">f8"),
    ("l_m", ">i4"), ("jsonb_version", "u1"),
])
_AT = {name: _HEAD.fields[name][1] for name in ("l_dts", "l_sc", "l_m")}  # type: ignore[index]


def _metrics_json(cols: ReadingColumns) -> list[bytes]:
    """Each row's metrics object as JSON text."""
    if not cols.metrics or not len(cols):
        return [b"{}"] * len(cols)
    # orjson writes a whole column's numbers (shortest round-trip form, as repr) in one C
    # call; splitting that list and joining the pieces per row costs a third of formatting
    # each row in Python. Metric names are pattern-checked ([a-z][a-z0-9_]*): no escaping.
    pieces: list[Iterable[bytes]] = []
    for k, (name, values) in enumerate(cols.metrics.items()):
        pieces.append(repeat(('{"' if k == 0 else ',"').encode() + name.encode() + b'":'))
        pieces.append(orjson.dumps(values)[1:-1].split(b","))
    pieces.append(repeat(b"}"))
    out = list(map(b"".join, zip(*pieces, strict=False)))  # the repeats are endless
    if any(None in v for v in cols.metrics.values()):
        # A reading without some metric leaves that key out (orjson wrote null there).
        names = list(cols.metrics)
        for i, row in enumerate(zip(*cols.metrics.values(), strict=True)):
            if None in row:
                out[i] = orjson.dumps({n: x for n, x in zip(names, row, strict=True)
                                       if x is not None})
    return out


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return len(data).to_bytes(4, "big") + data


def copy_payload(cols: ReadingColumns, gateway_id: str, batch_seq: int) -> bytes:
    """``cols`` as one binary COPY stream for ``_COPY``, built column-wise (no per-row calls)."""
    n = len(cols)
    head = np.zeros(n, dtype=_HEAD)
    head["nf"] = 15
    for name, size in (("l_seq", 8), ("l_ts", 8), ("l_rcv", 8), ("l_bs", 8), ("l_an", 1),
                       ("l_rp", 1), ("l_dts", 8), ("l_sc", 8)):
        head[name] = size
    head["seq"] = cols.seq
    head["ts"] = (np.asarray(cols.ts_ms, dtype=np.int64) - _PG_EPOCH_MS) * 1000
    head["rcv"] = (np.asarray(cols.received_ms, dtype=np.int64) - _PG_EPOCH_MS) * 1000
    head["bs"] = batch_seq
    head["an"] = cols.anomalous
    head["rp"] = cols.replay
    no_dts = None in cols.device_ts_ms
    dts = [0 if d is None else d for d in cols.device_ts_ms] if no_dts else cols.device_ts_ms
    head["dts"] = (np.asarray(dts, dtype=np.int64) - _PG_EPOCH_MS) * 1000
    head["sc"] = np.asarray(cols.score, dtype=np.float64)  # None -> NaN, patched below
    metrics = _metrics_json(cols)
    head["l_m"] = np.fromiter(map(len, metrics), dtype=np.int32, count=n) + 1
    head["jsonb_version"] = 1
    heads: list[bytes] = head.view(f"V{_HEAD.itemsize}").tolist()
    if no_dts or None in cols.score:
        for i, (d, s) in enumerate(zip(cols.device_ts_ms, cols.score, strict=True)):
            if d is None or s is None:
                h = heads[i]
                heads[i] = b"".join((
                    h[:_AT["l_dts"]], _NULL if d is None else h[_AT["l_dts"]:_AT["l_sc"]],
                    _NULL if s is None else h[_AT["l_sc"]:_AT["l_m"]], h[_AT["l_m"]:]))
    gw = _text(gateway_id)
    keys = set(zip(cols.device, cols.boot, cols.type, cols.scorer, cols.model_version,
                   strict=True))
    texts = {k: b"".join((_text(k[0]), _text(k[1]), gw, _text(k[2]), _text(k[3]), _text(k[4])))
             for k in keys}
    tails = map(texts.__getitem__, zip(cols.device, cols.boot, cols.type, cols.scorer,
                                       cols.model_version, strict=True))
    rows = chain.from_iterable(zip(heads, metrics, tails, strict=True))
    return b"".join(chain((_SIGNATURE,), rows, (_TRAILER,)))


def _take(cols: ReadingColumns, idx: Sequence[int]) -> ReadingColumns:
    """The rows ``idx`` of ``cols`` (in that order)."""
    if len(idx) == len(cols):
        return cols
    get = itemgetter(*idx)

    def take(values: list[Any]) -> list[Any]:
        return list(get(values)) if len(idx) > 1 else [values[idx[0]]]

    return ReadingColumns(
        device=take(cols.device), boot=take(cols.boot), seq=take(cols.seq),
        type=take(cols.type), ts_ms=take(cols.ts_ms), device_ts_ms=take(cols.device_ts_ms),
        received_ms=take(cols.received_ms),
        metrics={m: take(v) for m, v in cols.metrics.items()}, score=take(cols.score),
        scorer=take(cols.scorer), model_version=take(cols.model_version),
        anomalous=take(cols.anomalous), replay=take(cols.replay))


def _copy_fast(conn: Conn, cols: ReadingColumns, gateway_id: str, batch_seq: int) -> int:
    """COPY rows known to be new straight into ``readings``; their rollup deltas follow."""
    payload = copy_payload(cols, gateway_id, batch_seq)
    with conn.cursor() as cur, cur.copy(_COPY) as copy:
        copy.write(payload)
    record(conn, cols)
    return len(cols)


# -- slow path: conflict checks in the database --------------------------------------------


def _pick(cols: ReadingColumns, idx: Sequence[int] | None) -> dict[str, Any]:
    """Parameter arrays of the rows ``idx`` (all rows when None)."""
    def take(values: list[Any]) -> list[Any]:
        return values if idx is None else [values[i] for i in idx]

    columns: tuple[list[Any], ...] = (
        cols.device, cols.boot, cols.seq, cols.ts_ms, cols.device_ts_ms, cols.received_ms,
        cols.type, cols.score, cols.scorer, cols.model_version, cols.anomalous, cols.replay)
    out: dict[str, Any] = {name: take(v) for name, v in zip(_COLUMNS, columns, strict=True)}
    for k, values in enumerate(cols.metrics.values()):
        out[f"m{k}"] = take(values)
    return out


def _insert_sql(metric_names: Sequence[str], on_conflict: bool) -> sql.Composed:
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
                          replay)
    SELECT d, b, s, timestamptz 'epoch' + ts * interval '1 ms',
           timestamptz 'epoch' + dts * interval '1 ms',
           timestamptz 'epoch' + rcv * interval '1 ms', {gw}, {bs}, t,
           jsonb_strip_nulls(jsonb_build_object({pairs})), sc, scr, mv, an, rp
    FROM unnest({arrays}) AS u({names})
    {conflict}
    RETURNING device_id, ts, metrics
), m AS (
    SELECT device_id, ts, e.key AS metric, e.value::double precision AS v
    FROM ins, jsonb_each(ins.metrics) AS e
), r AS (
    INSERT INTO rollup_pending (device_id, metric, bucket, min, max, sum, count)
    SELECT device_id, metric, date_bin('1 minute', ts, timestamptz 'epoch'), min(v), max(v),
           sum(v), count(*)
    FROM m GROUP BY 1, 2, 3
)
SELECT count(*) FROM ins""").format(
        gw=sql.Placeholder("gw"), bs=sql.Placeholder("bs"), pairs=pairs, arrays=arrays,
        names=sql.SQL(", ").join(map(sql.Identifier, cols)),
        conflict=sql.SQL("ON CONFLICT DO NOTHING" if on_conflict else ""),
    )


def _insert(conn: Conn, cols: ReadingColumns, idx: Sequence[int] | None, *,
            gateway_id: str, batch_seq: int) -> int:
    """Insert the rows ``idx`` (all when None) skipping stored ones; rollup deltas from
    RETURNING."""
    params = _pick(cols, idx)
    params.update(gw=gateway_id, bs=batch_seq)
    row = conn.execute(_insert_sql(list(cols.metrics), on_conflict=True), params).fetchone()
    return int(row[0]) if row else 0


# -- the batch ------------------------------------------------------------------------------


def insert_readings(conn: Conn, cols: ReadingColumns, gateway_id: str, batch_seq: int, *,
                    checked: bool = False) -> int:
    """Insert the readings not stored yet, inside the caller's transaction; returns how many.

    Rows above the high-water mark are COPY'd without conflict checks. If another batch raced
    us to a new (device, boot), the COPY raises UniqueViolation and the caller's whole
    transaction rolls back; it then calls again with ``checked=True``, which puts every row
    through ``ON CONFLICT DO NOTHING``. (A savepoint around the COPY would avoid the redo, at
    two extra round trips on every batch for a race that is rare.)
    """
    n = len(cols)
    if n == 0:
        return 0
    pair_of: dict[tuple[str, str], int] = {
        p: k for k, p in enumerate(sorted(set(zip(cols.device, cols.boot, strict=True))))}
    pairs = list(pair_of)
    code = np.fromiter(map(pair_of.__getitem__, zip(cols.device, cols.boot, strict=True)),
                       dtype=np.int64, count=n)
    seq = np.asarray(cols.seq, dtype=np.int64)
    top = np.full(len(pairs), -1, dtype=np.int64)
    np.maximum.at(top, code, seq)
    mark = np.full(len(pairs), -1, dtype=np.int64)
    devs, boots = array_literal([p[0] for p in pairs]), array_literal([p[1] for p in pairs])
    # Locked in (device, boot) order, like every writer: batches touching the same devices
    # queue here instead of deadlocking.
    for d, b, m in conn.execute(
            "SELECT device_id, boot_id, max_seq FROM readings_hwm"
            " WHERE (device_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY 1, 2 FOR UPDATE",
            (devs, boots), prepare=True):
        mark[pair_of[(d, b)]] = m
    # seq < 2**32 and fewer than 2**31 pairs: one int64 key per identity.
    key = code << 32 | seq
    # Gateways send batches sorted by (device, boot, seq): then a look at neighbours suffices.
    unique = bool(np.all(key[1:] > key[:-1])) or len(np.unique(key)) == n
    fresh = seq > mark[code]
    direct = unique and not checked
    fast: list[int] = np.flatnonzero(fresh).tolist() if direct else []
    slow: list[int] | None = np.flatnonzero(~fresh).tolist() if direct else None
    inserted = _copy_fast(conn, _take(cols, fast), gateway_id, batch_seq) if fast else 0
    if slow is None or slow:
        inserted += _insert(conn, cols, slow, gateway_id=gateway_id, batch_seq=batch_seq)
    _upsert_devices(conn, cols, gateway_id, {
        "hd": devs, "hb": boots, "hs": array_literal(top.tolist())})
    return inserted


def _upsert_devices(conn: Conn, cols: ReadingColumns, gateway_id: str,
                    marks: dict[str, str]) -> None:
    """First/last seen and the latest type of each device, and the new high-water marks."""
    codes, names = device_codes(cols.device)
    ts = np.asarray(cols.ts_ms, dtype=np.int64)
    # By device, then time, then position: a device's last row is its latest reading
    # (the later one of equal times).
    order = np.lexsort((np.arange(len(ts)), ts, codes))
    ends: npt.NDArray[np.intp] = np.searchsorted(codes[order], np.arange(len(names)),
                                                 side="right") - 1
    starts = np.searchsorted(codes[order], np.arange(len(names)), side="left")
    first, last = order[starts], order[ends]
    conn.execute(_UPSERT_DEVICES, {
        "gw": gateway_id, "d": array_literal(names),
        "t": array_literal([cols.type[i] for i in last.tolist()]),
        "lo": array_literal(ts[first].tolist()), "hi": array_literal(ts[last].tolist()),
        **marks}, prepare=True)
