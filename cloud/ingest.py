"""Applying a gateway's SyncBatch: exactly once per (gateway, batch_seq), in one transaction.

Readings are idempotent on their identity (device, boot, seq), so a reading re-sent inside a
later batch (after a lost ack, a gateway restore, a backfill) is counted as a duplicate and
never stored twice. The batch row is written first: a retried batch finds it and changes
nothing, and two concurrent copies of one batch serialise on its primary key.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable

from psycopg.pq import TransactionStatus

from cloud.db.pool import Conn
from cloud.exceptions import ForbiddenGatewayError, IngestError, InvalidBatchError
from shared.schemas import Alert, Reading, SyncAck, SyncBatch

log = logging.getLogger(__name__)

_MAX_BIGINT = 2**63 - 1

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS sync_stage (
    device_id text, boot_id text, seq bigint, ts_ms bigint, device_ts_ms bigint,
    received_ms bigint, type text, metrics jsonb, score double precision, scorer text,
    model_version text, anomalous boolean, replay boolean
) ON COMMIT DELETE ROWS
"""
_STAGE_COPY = (
    "COPY sync_stage (device_id, boot_id, seq, ts_ms, device_ts_ms, received_ms, type,"
    " metrics, score, scorer, model_version, anomalous, replay) FROM STDIN"
)
# ORDER BY gives concurrent batches with overlapping rows the same lock order (no deadlock).
_INSERT_READINGS = """
INSERT INTO readings (device_id, boot_id, seq, ts, device_ts, received_at, gateway_id,
                      batch_seq, type, metrics, score, scorer, model_version, anomalous, replay)
SELECT device_id, boot_id, seq,
       timestamptz 'epoch' + ts_ms * interval '1 ms',
       timestamptz 'epoch' + device_ts_ms * interval '1 ms',
       timestamptz 'epoch' + received_ms * interval '1 ms',
       %(gw)s, %(batch_seq)s, type, metrics, score, scorer, model_version, anomalous, replay
FROM sync_stage
ORDER BY device_id, boot_id, seq
ON CONFLICT ON CONSTRAINT readings_identity DO NOTHING
"""
# A replayed old batch must not roll a device's type or gateway back to stale values.
_UPSERT_DEVICES = """
INSERT INTO devices (device_id, type, gateway_id, first_seen_at, last_seen_at)
SELECT device_id, (array_agg(type ORDER BY ts_ms DESC))[1], %(gw)s,
       timestamptz 'epoch' + min(ts_ms) * interval '1 ms',
       timestamptz 'epoch' + max(ts_ms) * interval '1 ms'
FROM sync_stage
GROUP BY device_id
ORDER BY device_id
ON CONFLICT (device_id) DO UPDATE SET
    type = CASE WHEN EXCLUDED.last_seen_at >= devices.last_seen_at
                THEN EXCLUDED.type ELSE devices.type END,
    gateway_id = CASE WHEN EXCLUDED.last_seen_at >= devices.last_seen_at
                      THEN EXCLUDED.gateway_id ELSE devices.gateway_id END,
    first_seen_at = least(devices.first_seen_at, EXCLUDED.first_seen_at),
    last_seen_at = greatest(devices.last_seen_at, EXCLUDED.last_seen_at)
"""
# Last writer wins on updated_ms: an older copy of an alert never overwrites a newer one.
_UPSERT_ALERT = """
INSERT INTO alerts (gateway_id, alert_id, device_id, opened_at, resolved_at, severity, state,
                    score, scorer, model_version, explanation, updated_ms)
VALUES (%(gw)s, %(alert_id)s, %(device)s,
        timestamptz 'epoch' + %(opened_ms)s::bigint * interval '1 ms',
        timestamptz 'epoch' + %(resolved_ms)s::bigint * interval '1 ms',
        %(severity)s, %(state)s, %(score)s, %(scorer)s, %(model_version)s,
        %(explanation)s::jsonb, %(updated_ms)s)
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
    for i, a in enumerate(batch.alerts):
        if not math.isfinite(a.score) or not all(map(math.isfinite, a.explanation.values())):
            raise InvalidBatchError(f"alerts[{i}] holds a number that is not finite")
        if "\x00" in (a.model_version or ""):
            raise InvalidBatchError(f"alerts[{i}] holds a NUL character")


def apply_batch(conn: Conn, batch: SyncBatch, gateway_id: str) -> SyncAck:
    """Apply ``batch`` uploaded by ``gateway_id`` in one transaction; the ack follows commit."""
    if batch.gateway != gateway_id:
        raise ForbiddenGatewayError(gateway_id, batch.gateway)
    check_batch(batch)
    if conn.info.transaction_status != TransactionStatus.IDLE:
        # A surrounding transaction would turn our commit into a savepoint: the ack would lie.
        raise IngestError("apply_batch needs a connection outside a transaction")
    with conn.transaction():
        fresh = conn.execute(
            "INSERT INTO sync_batches (gateway_id, batch_seq, n_readings, n_alerts)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING true",
            (gateway_id, batch.batch_seq, len(batch.readings), len(batch.alerts)),
        ).fetchone()
        ack = _apply(conn, batch, gateway_id) if fresh else _stored_ack(conn, batch, gateway_id)
    # Logged only now: the transaction block has committed.
    log.info(
        "%s batch %s/%d: %d readings (%d new, %d duplicate), %d alerts upserted",
        "applied" if ack.first_time else "re-acknowledged", gateway_id, batch.batch_seq,
        len(batch.readings), ack.readings_inserted, ack.readings_duplicate, ack.alerts_upserted,
    )
    return ack


def _apply(conn: Conn, batch: SyncBatch, gateway_id: str) -> SyncAck:
    """Write a batch seen for the first time; its sync_batches row is already inserted."""
    inserted = _insert_readings(conn, batch.readings, gateway_id, batch.batch_seq)
    upserted = _upsert_alerts(conn, batch.alerts, gateway_id)
    conn.execute(
        "UPDATE sync_batches SET n_inserted = %s, n_alerts = %s"
        " WHERE gateway_id = %s AND batch_seq = %s",
        (inserted, upserted, gateway_id, batch.batch_seq),
    )
    conn.execute("UPDATE gateways SET last_seen_at = now() WHERE gateway_id = %s", (gateway_id,))
    return SyncAck(
        gateway=gateway_id,
        batch_seq=batch.batch_seq,
        first_time=True,
        readings_inserted=inserted,
        readings_duplicate=len(batch.readings) - inserted,
        alerts_upserted=upserted,
    )


def _stored_ack(conn: Conn, batch: SyncBatch, gateway_id: str) -> SyncAck:
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
        gateway=gateway_id,
        batch_seq=batch.batch_seq,
        first_time=False,
        readings_inserted=n_inserted,
        readings_duplicate=n_readings - n_inserted,
        alerts_upserted=n_alerts,
    )


def _insert_readings(conn: Conn, readings: list[Reading], gateway_id: str, batch_seq: int) -> int:
    """COPY into a staging table, then one INSERT … SELECT that skips known readings."""
    if not readings:
        return 0
    conn.execute(_STAGE_DDL)
    with conn.cursor() as cur:
        with cur.copy(_STAGE_COPY) as copy:
            for r in readings:
                copy.write_row((
                    r.device, r.boot, r.seq, r.ts_ms, r.device_ts_ms, r.received_ms, r.type,
                    json.dumps(r.metrics), r.score, r.scorer, r.model_version, r.anomalous,
                    r.replay,
                ))
        cur.execute(_INSERT_READINGS, {"gw": gateway_id, "batch_seq": batch_seq})
        inserted = cur.rowcount
        cur.execute(_UPSERT_DEVICES, {"gw": gateway_id})
    return inserted


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
            "model_version": a.model_version, "explanation": json.dumps(a.explanation),
            "updated_ms": a.updated_ms,
        }
        for a in _latest(alerts)
    ]
    with conn.cursor() as cur:
        cur.executemany(_UPSERT_ALERT, params)
        return cur.rowcount
