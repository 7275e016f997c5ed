"""Applying a gateway's sync batch: exactly once per (gateway, batch_seq), in one transaction.

Readings are idempotent on their identity (device, boot, seq). The common path pays nothing
for that: a small table keeps, per (device, boot), the highest seq stored (the high-water
mark, locked for the transaction), and rows above it cannot exist yet, so they go into the
partitioned ``readings`` table with one plain ``INSERT … SELECT FROM unnest(columns)``: no
conflict check, no per-row work in Python. Only rows at or below the mark (a catch-up after
an outage, a backfill, a lost ack) take the ``ON CONFLICT DO NOTHING`` path, and the unique
index stays the safety net: if a fast insert ever meets a duplicate (two batches racing for a
new boot, a reading repeated inside a batch), it is rolled back to its savepoint and redone on
the slow path. The rollups are fed by the rows actually inserted (``RETURNING``), so they
never count a duplicate.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from cloud.db.pool import Conn
from cloud.exceptions import (
    ForbiddenGatewayError,
    GatewayNotFoundError,
    IngestError,
    InvalidBatchError,
)
from shared.batchcodec import DecodedBatch, ReadingColumns
from shared.schemas import Alert, BackfillRequest, DesiredState, SyncAck, SyncBatch

log = logging.getLogger(__name__)

_MAX_BIGINT = 2**63 - 1
_DAY_MS = 86_400_000
_MAX_DAYS = 1000  # distinct days one batch may touch (each may need a partition)
_PARTITION_LOCK = 0x736D61696E75  # advisory lock serialising partition creation
_known_days: dict[tuple[str, str, str], set[int]] = {}
_known_lock = threading.Lock()

_COLUMNS = ("d", "b", "s", "ts", "dts", "rcv", "t", "sc", "scr", "mv", "an", "rp")
_TYPES = ("text", "text", "bigint", "bigint", "bigint", "bigint", "text", "float8", "text",
          "text", "bool", "bool")
_ROLLUP = """
{name} AS (
    INSERT INTO {table} (device_id, metric, bucket, min, max, sum, count)
    SELECT device_id, metric, date_trunc({unit}, ts), min(v), max(v), sum(v), count(*)
    FROM m GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        min = least({table}.min, EXCLUDED.min), max = greatest({table}.max, EXCLUDED.max),
        sum = {table}.sum + EXCLUDED.sum, count = {table}.count + EXCLUDED.count
)"""
# A replayed old batch must not roll a device's type or gateway back to stale values.
_UPSERT_DEVICES = """
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
_UPSERT_EVENT = """
INSERT INTO devices (device_id, type, gateway_id, first_seen_at, last_seen_at, state, state_at,
                     boot_id, fw)
VALUES (%(device)s, coalesce(%(type)s, 'unknown'), %(gw)s, %(at)s, %(at)s, %(state)s, %(at)s,
        %(boot)s, %(fw)s)
ON CONFLICT (device_id) DO UPDATE SET
    state = EXCLUDED.state, state_at = EXCLUDED.state_at, boot_id = EXCLUDED.boot_id,
    fw = coalesce(EXCLUDED.fw, devices.fw), gateway_id = EXCLUDED.gateway_id
WHERE devices.state_at IS NULL OR devices.state_at <= EXCLUDED.state_at
"""
_UPSERT_HWM = """
INSERT INTO readings_hwm (device_id, boot_id, max_seq)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) ORDER BY 1, 2
ON CONFLICT (device_id, boot_id) DO UPDATE
    SET max_seq = greatest(readings_hwm.max_seq, EXCLUDED.max_seq)
"""
# Last writer wins on updated_ms: an older copy of an alert never overwrites a newer one.
_UPSERT_ALERT = """
INSERT INTO alerts (gateway_id, alert_id, device_id, opened_at, resolved_at, severity, state,
                    score, scorer, model_version, explanation, updated_ms)
VALUES (%(gw)s, %(alert_id)s, %(device)s,
        timestamptz 'epoch' + %(opened_ms)s::bigint * interval '1 ms',
        timestamptz 'epoch' + %(resolved_ms)s::bigint * interval '1 ms',
        %(severity)s, %(state)s, %(score)s, %(scorer)s, %(model_version)s,
        %(explanation)s, %(updated_ms)s)
ON CONFLICT (gateway_id, alert_id) DO UPDATE SET
    device_id = EXCLUDED.device_id, opened_at = EXCLUDED.opened_at,
    resolved_at = EXCLUDED.resolved_at, severity = EXCLUDED.severity, state = EXCLUDED.state,
    score = EXCLUDED.score, scorer = EXCLUDED.scorer, model_version = EXCLUDED.model_version,
    explanation = EXCLUDED.explanation, updated_ms = EXCLUDED.updated_ms
WHERE alerts.updated_ms < EXCLUDED.updated_ms
"""


def check_batch(batch: SyncBatch) -> None:
    """Reject what the schema lets through but the database cannot hold faithfully."""
    if batch.batch_seq > _MAX_BIGINT:
        raise InvalidBatchError(f"batch_seq {batch.batch_seq} is out of range")
    for i, r in enumerate(batch.readings):
        if r.score is not None and not math.isfinite(r.score):
            raise InvalidBatchError(f"readings[{i}].score is not a finite number")
        # PostgreSQL text cannot hold NUL; the other strings are pattern-checked already.
        if "\x00" in r.type or "\x00" in (r.model_version or ""):
            raise InvalidBatchError(f"readings[{i}] holds a NUL character")
    _check_alerts(batch.alerts)


def _check_alerts(alerts: Sequence[Alert]) -> None:
    for i, a in enumerate(alerts):
        if not math.isfinite(a.score) or not all(map(math.isfinite, a.explanation.values())):
            raise InvalidBatchError(f"alerts[{i}] holds a number that is not finite")
        if "\x00" in (a.model_version or ""):
            raise InvalidBatchError(f"alerts[{i}] holds a NUL character")


def ensure_partitions(conn: Conn, ts_ms: Sequence[int]) -> None:
    """Create the daily partitions ``ts_ms`` needs, in a short transaction of its own."""
    if not ts_ms:
        return
    key = (conn.info.host, str(conn.info.port), conn.info.dbname)
    days = {t // _DAY_MS for t in ts_ms}
    if len(days) > _MAX_DAYS:
        raise InvalidBatchError(f"batch spans {len(days)} days; at most {_MAX_DAYS}")
    with _known_lock:
        missing = days - _known_days.get(key, set())
    if not missing:
        return
    # Its own transaction: creating a partition locks the parent table, which the batch
    # transaction must not hold while it writes.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        conn.execute(
            "SELECT readings_ensure_partitions(array_agg(date '1970-01-01' + d))"
            " FROM unnest(%s::int[]) d", (sorted(missing),))
    with _known_lock:
        _known_days.setdefault(key, set()).update(missing)


def apply_batch(conn: Conn, batch: SyncBatch | DecodedBatch, gateway_id: str) -> SyncAck:
    """Apply ``batch`` uploaded by ``gateway_id`` in one transaction; the ack follows commit."""
    if batch.gateway != gateway_id:
        raise ForbiddenGatewayError(gateway_id, batch.gateway)
    if isinstance(batch, SyncBatch):
        check_batch(batch)
        batch = DecodedBatch.from_batch(batch)
    else:
        _check_alerts(batch.alerts)
    if conn.info.transaction_status != TransactionStatus.IDLE:
        # A surrounding transaction would turn our commit into a savepoint: the ack would lie.
        raise IngestError("apply_batch needs a connection outside a transaction")
    ensure_partitions(conn, batch.readings.ts_ms)
    n = len(batch.readings)
    with conn.transaction():
        fresh = conn.execute(
            "INSERT INTO sync_batches (gateway_id, batch_seq, n_readings, n_alerts)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING true",
            (gateway_id, batch.batch_seq, n, len(batch.alerts)),
        ).fetchone()
        ack = _apply(conn, batch, gateway_id) if fresh else _stored_ack(conn, batch, gateway_id)
        ack.desired = desired_state(conn, gateway_id)
    # Logged only now: the transaction block has committed.
    log.info(
        "%s batch %s/%d: %d readings (%d new, %d duplicate), %d alerts upserted",
        "applied" if ack.first_time else "re-acknowledged", gateway_id, batch.batch_seq,
        n, ack.readings_inserted, ack.readings_duplicate, ack.alerts_upserted,
    )
    return ack


def desired_state(conn: Conn, gateway_id: str) -> DesiredState:
    """What ``gateway_id`` should run: its config, models and open backfill requests."""
    row = conn.execute(
        "SELECT config_version, desired_config, desired_models FROM gateways"
        " WHERE gateway_id = %s", (gateway_id,)).fetchone()
    backfill = [
        BackfillRequest(id=i, since_ms=lo, until_ms=hi)
        for i, lo, hi in conn.execute(
            "SELECT id, (extract(epoch FROM since_at) * 1000)::bigint,"
            " (extract(epoch FROM until_at) * 1000)::bigint FROM backfill_requests"
            " WHERE gateway_id = %s AND completed_at IS NULL ORDER BY id LIMIT 100",
            (gateway_id,))
    ]
    if row is None:
        return DesiredState(backfill=backfill)
    return DesiredState(config_version=row[0], config=row[1], models=row[2], backfill=backfill)


def _apply(conn: Conn, batch: DecodedBatch, gateway_id: str) -> SyncAck:
    """Write a batch seen for the first time; its sync_batches row is already inserted."""
    # Alerts and device events first: they matter most, and they are small.
    upserted = _upsert_alerts(conn, batch.alerts, gateway_id)
    for e in batch.events:
        conn.execute(_UPSERT_EVENT, {
            "device": e.device, "type": e.type, "gw": gateway_id, "state": e.state,
            "boot": e.boot, "fw": e.fw,
            "at": _ts(e.at_ms)})
    inserted = _insert_readings(conn, batch.readings, gateway_id, batch.batch_seq)
    conn.execute(
        "UPDATE sync_batches SET n_inserted = %s, n_alerts = %s"
        " WHERE gateway_id = %s AND batch_seq = %s",
        (inserted, upserted, gateway_id, batch.batch_seq),
    )
    state = Jsonb(batch.state.model_dump(mode="json")) if batch.state else None
    conn.execute(
        "UPDATE gateways SET last_seen_at = now(),"
        " reported_state = coalesce(%s, reported_state),"
        " reported_at = CASE WHEN %s THEN now() ELSE reported_at END WHERE gateway_id = %s",
        (state, state is not None, gateway_id))
    if batch.backfill_done:
        conn.execute(
            "UPDATE backfill_requests SET completed_at = now() WHERE gateway_id = %s"
            " AND id = ANY(%s) AND completed_at IS NULL", (gateway_id, batch.backfill_done))
    return SyncAck(
        gateway=gateway_id, batch_seq=batch.batch_seq, first_time=True,
        readings_inserted=inserted, readings_duplicate=len(batch.readings) - inserted,
        alerts_upserted=upserted,
    )


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _stored_ack(conn: Conn, batch: DecodedBatch, gateway_id: str) -> SyncAck:
    """The ack of a batch applied before, rebuilt from what its first application recorded."""
    row = conn.execute(
        "SELECT n_readings, n_inserted, n_alerts FROM sync_batches"
        " WHERE gateway_id = %s AND batch_seq = %s",
        (gateway_id, batch.batch_seq),
    ).fetchone()
    if row is None:  # only if someone deleted it in between
        raise IngestError(f"batch {gateway_id}/{batch.batch_seq} vanished while acknowledged")
    n_readings, n_inserted, n_alerts = row
    if n_readings != len(batch.readings):
        log.warning(
            "batch %s/%d re-sent with %d readings, first applied with %d; keeping the first",
            gateway_id, batch.batch_seq, len(batch.readings), n_readings,
        )
    return SyncAck(
        gateway=gateway_id, batch_seq=batch.batch_seq, first_time=False,
        readings_inserted=n_inserted, readings_duplicate=n_readings - n_inserted,
        alerts_upserted=n_alerts,
    )


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
), {r1}, {r2}
SELECT count(*) FROM ins""").format(
        gw=sql.Placeholder("gw"), bs=sql.Placeholder("bs"), pairs=pairs, arrays=arrays,
        names=sql.SQL(", ").join(map(sql.Identifier, cols)),
        conflict=sql.SQL("ON CONFLICT DO NOTHING" if on_conflict else ""),
        r1=sql.SQL(_ROLLUP).format(name=sql.Identifier("r1"),
                                   table=sql.Identifier("readings_1m"), unit=sql.Literal("minute")),
        r2=sql.SQL(_ROLLUP).format(name=sql.Identifier("r2"),
                                   table=sql.Identifier("readings_1h"), unit=sql.Literal("hour")),
    )


def _insert(conn: Conn, cols: ReadingColumns, idx: Sequence[int] | None, *,
            on_conflict: bool, gateway_id: str, batch_seq: int) -> int:
    params = _pick(cols, idx)
    params.update(gw=gateway_id, bs=batch_seq)
    row = conn.execute(_insert_sql(list(cols.metrics), on_conflict), params).fetchone()
    return int(row[0]) if row else 0


_COPY = (
    "COPY readings (device_id, boot_id, seq, ts, device_ts, received_at, gateway_id, batch_seq,"
    " type, metrics, score, scorer, model_version, anomalous, replay) FROM STDIN"
)
_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _metrics_json(cols: ReadingColumns, idx: Sequence[int]) -> list[str]:
    """Each row's metrics object as JSON text (repr of a float is valid, shortest JSON)."""
    names = list(cols.metrics)
    values = list(cols.metrics.values())
    template = "{" + ",".join(f'"{n}":%r' for n in names) + "}"
    out = []
    for i in idx:
        row = tuple(v[i] for v in values)
        if None in row:
            out.append(json.dumps({n: x for n, x in zip(names, row, strict=True)
                                   if x is not None}, separators=(",", ":")))
        else:
            out.append(template % row)
    return out


class _TimeText:
    """Epoch milliseconds as timestamptz text; readings of a batch share few seconds: cached."""

    def __init__(self) -> None:
        self._seconds: dict[int, str] = {}

    def __call__(self, ms: int | None) -> str:
        if ms is None:
            return "\\N"
        sec, frac = divmod(ms, 1000)
        text = self._seconds.get(sec)
        if text is None:
            text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
            self._seconds[sec] = text
        return f"{text}.{frac:03d}+00"


def _text(value: str | None) -> str:
    """A free-text value in COPY text format (ids are pattern-checked and need no escaping)."""
    return "\\N" if value is None else value.translate(_ESCAPES)


def _copy_fast(conn: Conn, cols: ReadingColumns, idx: Sequence[int], gateway_id: str,
               batch_seq: int) -> int:
    """COPY rows known to be new straight into ``readings``, then fold them into the rollups.

    The COPY text is built here in one pass (a per-row adapter call costs more than the
    database's own work); ids are pattern-checked, other strings escaped.
    """
    metrics = _metrics_json(cols, idx)
    ts = _TimeText()
    types = {t: _text(t) for t in set(cols.type)}
    versions = {v: _text(v) for v in set(cols.model_version)}
    flag = ("f", "t")
    scores = [_NULL if cols.score[i] is None else repr(cols.score[i]) for i in idx]
    lines = [
        f"{cols.device[i]}\t{cols.boot[i]}\t{cols.seq[i]}\t{ts(cols.ts_ms[i])}\t"
        f"{ts(cols.device_ts_ms[i])}\t{ts(cols.received_ms[i])}\t{gateway_id}\t{batch_seq}\t"
        f"{types[cols.type[i]]}\t{metrics[k]}\t"
        f"{scores[k]}\t{cols.scorer[i]}\t"
        f"{versions[cols.model_version[i]]}\t{flag[cols.anomalous[i]]}\t{flag[cols.replay[i]]}\n"
        for k, i in enumerate(idx)
    ]
    with conn.cursor() as cur, cur.copy(_COPY) as copy:
        copy.write("".join(lines))
    _rollup(conn, cols, idx)
    return len(idx)


_UPSERT_ROLLUP = """
INSERT INTO {table} (device_id, metric, bucket, min, max, sum, count)
SELECT d, m, timestamptz 'epoch' + b * interval '1 minute', lo, hi, s, n
FROM unnest(%(d)s::text[], %(m)s::text[], %(b)s::bigint[], %(lo)s::float8[], %(hi)s::float8[],
            %(s)s::float8[], %(n)s::bigint[]) AS u(d, m, b, lo, hi, s, n)
ORDER BY 1, 2, 3
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
    min = least({table}.min, EXCLUDED.min), max = greatest({table}.max, EXCLUDED.max),
    sum = {table}.sum + EXCLUDED.sum, count = {table}.count + EXCLUDED.count
"""


def _rollup(conn: Conn, cols: ReadingColumns, idx: Sequence[int]) -> None:
    """Fold new rows into readings_1m and readings_1h, aggregated here first (few rows)."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i in idx:
        groups.setdefault((cols.device[i], cols.ts_ms[i] // 60_000), []).append(i)
    minute: list[tuple[str, str, int, float, float, float, int]] = []
    for (dev, m), members in groups.items():
        for name, values in cols.metrics.items():
            vs = [v for v in (values[i] for i in members) if v is not None]
            if vs:
                minute.append((dev, name, m, min(vs), max(vs), math.fsum(vs), len(vs)))
    hour: dict[tuple[str, str, int], list[float]] = {}
    for dev, name, m, lo, hi, total, n in minute:
        agg = hour.get((dev, name, m // 60 * 60))
        if agg is None:
            hour[(dev, name, m // 60 * 60)] = [lo, hi, total, n]
        else:
            agg[0], agg[1] = min(agg[0], lo), max(agg[1], hi)
            agg[2] += total
            agg[3] += n
    for table, rows in (("readings_1m", minute),
                        ("readings_1h", [(*k, *v) for k, v in hour.items()])):
        cols7 = list(zip(*rows, strict=True)) if rows else [()] * 7
        conn.execute(sql.SQL(_UPSERT_ROLLUP).format(table=sql.Identifier(table)),
                     dict(zip(("d", "m", "b", "lo", "hi", "s", "n"), map(list, cols7),
                              strict=True)))


def _insert_readings(conn: Conn, cols: ReadingColumns, gateway_id: str, batch_seq: int) -> int:
    """Insert the readings not stored yet; returns how many were new."""
    n = len(cols)
    if n == 0:
        return 0
    top: dict[tuple[str, str], int] = {}
    for key, s in zip(zip(cols.device, cols.boot, strict=True), cols.seq, strict=True):
        if s > top.get(key, -1):
            top[key] = s
    pairs = sorted(top)
    hwm = {
        (d, b): int(m) for d, b, m in conn.execute(
            "SELECT device_id, boot_id, max_seq FROM readings_hwm"
            " WHERE (device_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY 1, 2 FOR UPDATE",
            ([p[0] for p in pairs], [p[1] for p in pairs]))
    }
    unique = len(set(zip(cols.device, cols.boot, cols.seq, strict=True))) == n
    if not unique:
        fast: list[int] = []
        slow: list[int] | None = None
    elif not hwm:
        fast, slow = list(range(n)), []
    else:
        fast, slow = [], []
        for i, (d, b, s) in enumerate(zip(cols.device, cols.boot, cols.seq, strict=True)):
            (fast if s > hwm.get((d, b), -1) else slow).append(i)
    inserted = 0
    if fast:
        try:
            with conn.transaction():
                inserted = _copy_fast(conn, cols, fast, gateway_id, batch_seq)
        except psycopg.errors.UniqueViolation:
            # A race for a new (device, boot): redo these rows with conflict checks.
            log.info("batch %s/%d met concurrent rows; slow path", gateway_id, batch_seq)
            inserted = 0
            slow = None
    if slow is None or slow:
        inserted += _insert(conn, cols, slow, on_conflict=True, gateway_id=gateway_id,
                            batch_seq=batch_seq)
    conn.execute(_UPSERT_HWM, ([p[0] for p in pairs], [p[1] for p in pairs],
                               [top[p] for p in pairs]))
    _upsert_devices(conn, cols, gateway_id)
    return inserted


def _upsert_devices(conn: Conn, cols: ReadingColumns, gateway_id: str) -> None:
    latest: dict[str, tuple[int, int, str]] = {}
    for d, t, ts in zip(cols.device, cols.type, cols.ts_ms, strict=True):
        lo, hi, typ = latest.get(d, (ts, ts, t))
        latest[d] = (min(lo, ts), max(hi, ts), t if ts >= hi else typ)
    devs = sorted(latest)
    conn.execute(_UPSERT_DEVICES, {
        "gw": gateway_id, "d": devs, "t": [latest[d][2] for d in devs],
        "lo": [latest[d][0] for d in devs], "hi": [latest[d][1] for d in devs]})


def _latest(alerts: Iterable[Alert]) -> list[Alert]:
    """One copy per alert id, the newest: one statement may not update a row twice."""
    newest: dict[str, Alert] = {}
    for a in alerts:
        if a.alert_id not in newest or a.updated_ms > newest[a.alert_id].updated_ms:
            newest[a.alert_id] = a
    return [newest[k] for k in sorted(newest)]


def _upsert_alerts(conn: Conn, alerts: list[Alert], gateway_id: str) -> int:
    """Upsert alerts, last writer wins; returns how many rows were inserted or changed."""
    if not alerts:
        return 0
    params = [
        {
            "gw": gateway_id, "alert_id": a.alert_id, "device": a.device,
            "opened_ms": a.opened_ms, "resolved_ms": a.resolved_ms, "severity": a.severity,
            "state": a.state, "score": a.score, "scorer": a.scorer,
            "model_version": a.model_version, "explanation": Jsonb(a.explanation),
            "updated_ms": a.updated_ms,
        }
        for a in _latest(alerts)
    ]
    with conn.cursor() as cur:
        cur.executemany(_UPSERT_ALERT, params)
        return cur.rowcount


def request_backfill(conn: Conn, gateway_id: str, since: datetime, until: datetime) -> int:
    """Ask ``gateway_id`` to upload [since, until) again; returns the request id."""
    if until <= since:
        raise ValueError("until must be after since")
    with conn.transaction():
        if conn.execute("SELECT 1 FROM gateways WHERE gateway_id = %s",
                        (gateway_id,)).fetchone() is None:
            raise GatewayNotFoundError(gateway_id)
        row = conn.execute(
            "INSERT INTO backfill_requests (gateway_id, since_at, until_at) VALUES (%s, %s, %s)"
            " RETURNING id", (gateway_id, since, until)).fetchone()
    assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
    log.info("backfill %d requested from gateway %s: %s .. %s", row[0], gateway_id, since, until)
    return int(row[0])
