"""Applying a gateway's sync batch: exactly once per (gateway, batch_seq), in one transaction.

A ``sync_batches`` row claims the batch: the first application writes alerts, device events
and readings (cloud.ingest.readings_writer, which stores each reading once and feeds the rollups)
and records its counts; a re-sent batch gets the same ack rebuilt from those counts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from psycopg.errors import UniqueViolation
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from cloud.db.pool import Conn
from cloud.exceptions import (
    ForbiddenGatewayError,
    GatewayNotFoundError,
    IngestError,
    InvalidBatchError,
    PartitionBudgetError,
)
from cloud.ingest import plausibility
from cloud.ingest.aggregates import devices_seen, upsert_aggregates
from cloud.ingest.limits import IngestLimits
from cloud.ingest.plausibility import DeadLetter
from cloud.ingest.readings_writer import insert_readings
from cloud.operations import alert_sync, scenarios
from cloud.operations.alert_review import acknowledge_on_gateway
from cloud.rollout.progress import desired_models, record_report
from shared.batchcodec import DecodedBatch, ReadingColumns
from shared.schemas import (
    Alert,
    BackfillRequest,
    DesiredState,
    ReadingAggregate,
    SyncAck,
    SyncBatch,
)

log = logging.getLogger(__name__)

_MAX_BIGINT = 2**63 - 1
_DAY_MS = 86_400_000
_MAX_DAYS = 1000  # distinct days one batch may touch (each may need a partition)
_PARTITION_LOCK = 0x736D61696E75  # advisory lock serialising partition creation
_known_days: dict[tuple[str, str, str], set[int]] = {}
_known_lock = threading.Lock()
DEFAULT_LIMITS = IngestLimits()

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
# Last writer wins on updated_ms: an older copy of an alert never overwrites a newer one.
_UPSERT_ALERT = """
INSERT INTO alerts (gateway_id, alert_id, device_id, opened_at, resolved_at, severity, state,
                    score, scorer, model_version, explanation, updated_ms, simulated)
VALUES (%(gw)s, %(alert_id)s, %(device)s,
        timestamptz 'epoch' + %(opened_ms)s::bigint * interval '1 ms',
        timestamptz 'epoch' + %(resolved_ms)s::bigint * interval '1 ms',
        %(severity)s, %(state)s, %(score)s, %(scorer)s, %(model_version)s,
        %(explanation)s, %(updated_ms)s, %(simulated)s)
ON CONFLICT (gateway_id, alert_id) DO UPDATE SET
    device_id = EXCLUDED.device_id, opened_at = EXCLUDED.opened_at,
    resolved_at = EXCLUDED.resolved_at, severity = EXCLUDED.severity, state = EXCLUDED.state,
    score = EXCLUDED.score, scorer = EXCLUDED.scorer, model_version = EXCLUDED.model_version,
    explanation = EXCLUDED.explanation, updated_ms = EXCLUDED.updated_ms,
    simulated = EXCLUDED.simulated
WHERE alerts.updated_ms < EXCLUDED.updated_ms
"""

# The end of a fresh batch in one round trip: its counts, the gateway's last contact, and
# the desired state (the UPDATE's RETURNING; config columns are not among those it sets).
_FINISH = """
WITH sb AS (
    UPDATE sync_batches SET n_inserted = %(ins)s, n_alerts = %(up)s
    WHERE gateway_id = %(gw)s AND batch_seq = %(bs)s
), g AS (
    UPDATE gateways SET last_seen_at = now(), reported_state = coalesce(%(st)s, reported_state),
        reported_at = CASE WHEN %(has)s THEN now() ELSE reported_at END
    WHERE gateway_id = %(gw)s
    RETURNING config_version, desired_config, desired_models
)
SELECT g.config_version, g.desired_config, g.desired_models,
       coalesce(b.ids, '{}'), coalesce(b.lo, '{}'), coalesce(b.hi, '{}')
FROM (SELECT 1) one LEFT JOIN g ON true, LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(lo ORDER BY id) AS lo,
           array_agg(hi ORDER BY id) AS hi
    FROM (SELECT id, (extract(epoch FROM since_at) * 1000)::bigint AS lo,
                 (extract(epoch FROM until_at) * 1000)::bigint AS hi
          FROM backfill_requests WHERE gateway_id = %(gw)s AND completed_at IS NULL
          ORDER BY id LIMIT 100) o) b
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
    _check_aggregates(batch.aggregates)


def _check_alerts(alerts: Sequence[Alert]) -> None:
    for i, a in enumerate(alerts):
        if not math.isfinite(a.score) or not all(map(math.isfinite, a.explanation.values())):
            raise InvalidBatchError(f"alerts[{i}] holds a number that is not finite")
        if "\x00" in (a.model_version or ""):
            raise InvalidBatchError(f"alerts[{i}] holds a NUL character")


def _check_aggregates(aggregates: Sequence[ReadingAggregate]) -> None:
    for i, a in enumerate(aggregates):
        if "\x00" in a.type:
            raise InvalidBatchError(f"aggregates[{i}].type holds a NUL character")


# The days among the given ones (days since the epoch) that still lack a partition; none if
# readings is not natively partitioned (a TimescaleDB hypertable makes its own chunks).
_MISSING_DAYS = """
SELECT coalesce(array_agg(d ORDER BY d), '{}') FROM unnest(%s::int[]) d
WHERE (SELECT relkind FROM pg_class WHERE oid = 'readings'::regclass) = 'p'
  AND date '1970-01-01' + d >= date '2000-01-01' AND date '1970-01-01' + d < date '2100-01-01'
  AND to_regclass('readings_' || to_char(date '1970-01-01' + d, 'YYYYMMDD')) IS NULL
"""


def ensure_partitions(conn: Conn, ts_ms: Sequence[int], max_new: int | None = None) -> None:
    """Create the daily partitions ``ts_ms`` needs, in a short transaction of its own.

    At most ``max_new`` (None: no limit) are created per call: past that the oldest
    ``max_new`` are made and PartitionBudgetError (429, retry soon) refuses the batch, so that
    a retry makes the next few and no single upload creates more than a few.
    """
    if not ts_ms:
        return
    key = (conn.info.host, str(conn.info.port), conn.info.dbname)
    days = set(map(_DAY_MS.__rfloordiv__, ts_ms))  # t // _DAY_MS for each t, in C
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
        row = conn.execute(_MISSING_DAYS, (sorted(missing),)).fetchone()
        absent: list[int] = list(row[0]) if row else []
        make = absent if max_new is None else absent[:max_new]
        if make:
            conn.execute(
                "SELECT readings_ensure_partitions(array_agg(date '1970-01-01' + d))"
                " FROM unnest(%s::int[]) d", (make,))
    with _known_lock:
        _known_days.setdefault(key, set()).update(missing - set(absent) | set(make))
    if len(make) < len(absent):
        log.warning("a batch needs %d new daily partitions; made %d (ingest."
                    "max_new_partitions), the retry makes more", len(absent), len(make))
        raise PartitionBudgetError(len(absent), len(make))


def apply_batch(conn: Conn, batch: SyncBatch | DecodedBatch, gateway_id: str,
                limits: IngestLimits = DEFAULT_LIMITS) -> SyncAck:
    """Apply ``batch`` uploaded by ``gateway_id`` in one transaction; the ack follows commit.

    Readings outside ``limits``' plausible window are dead-lettered, not stored.
    """
    if batch.gateway != gateway_id:
        raise ForbiddenGatewayError(gateway_id, batch.gateway)
    if isinstance(batch, SyncBatch):
        check_batch(batch)
        batch = DecodedBatch.from_batch(batch)
    else:
        _check_alerts(batch.alerts)
        _check_aggregates(batch.aggregates)
    if conn.info.transaction_status != TransactionStatus.IDLE:
        # A surrounding transaction would turn our commit into a savepoint: the ack would lie.
        raise IngestError("apply_batch needs a connection outside a transaction")
    n = len(batch.readings)
    refused = plausibility.screen(batch.readings, limits)
    if refused:
        log.warning("batch %s/%d: %d of %d readings outside the plausible window, dead-lettered"
                    " (first: %s)", gateway_id, batch.batch_seq, len(refused), n,
                    refused[0].reason)
    ensure_partitions(conn, _kept(batch.readings, refused).ts_ms, limits.max_new_partitions)
    try:
        ack = _transaction(conn, batch, gateway_id, checked=False, refused=refused)
    except UniqueViolation:
        # The COPY met a stored row: the marks disagree with the table (a restore that kept
        # rows above a mark, say). Everything rolled back; redo with every row checked.
        log.warning("batch %s/%d met stored rows above their mark; applying it with conflict"
                    " checks", gateway_id, batch.batch_seq)
        ack = _transaction(conn, batch, gateway_id, checked=True, refused=refused)
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
    models, rollback = desired_models(conn, gateway_id, row[2] if row else None)
    scen = scenarios.pending(conn, gateway_id)
    if row is None:
        return DesiredState(models=models, rollback=rollback, backfill=backfill, scenarios=scen)
    return DesiredState(config_version=row[0], config=row[1], models=models, rollback=rollback,
                        backfill=backfill, scenarios=scen)


def _kept(cols: ReadingColumns, refused: list[DeadLetter]) -> ReadingColumns:
    """The readings of ``cols`` not refused (``cols`` itself when none was)."""
    if not refused:
        return cols
    out = {d.index for d in refused}
    return cols.select([i for i in range(len(cols)) if i not in out])


def _transaction(conn: Conn, batch: DecodedBatch, gateway_id: str, *, checked: bool,
                 refused: list[DeadLetter]) -> SyncAck:
    """The batch's one transaction: ledger row first, then its content, then the answer."""
    with conn.transaction():
        fresh = conn.execute(
            "INSERT INTO sync_batches (gateway_id, batch_seq, n_readings, n_alerts,"
            " n_dead_lettered) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            " RETURNING true",
            (gateway_id, batch.batch_seq, len(batch.readings), len(batch.alerts), len(refused)),
            prepare=True).fetchone()
        if fresh:
            plausibility.store(conn, batch.readings, refused, gateway_id, batch.batch_seq)
            kept = _kept(batch.readings, refused)
            ack = _apply(conn, replace(batch, readings=kept), gateway_id, checked=checked)
            ack.readings_dead_lettered = len(refused)
        else:
            ack = _stored_ack(conn, batch, gateway_id)
            ack.desired = desired_state(conn, gateway_id)
        if ack.desired is not None:
            # From the state this upload reports (a retry's too): what it applied decides
            # which cloud alert decisions it still needs.
            ack.desired.alert_decisions = alert_sync.exchange(conn, gateway_id, batch.state)
    return ack


def _apply(conn: Conn, batch: DecodedBatch, gateway_id: str, *, checked: bool) -> SyncAck:
    """Write a batch seen for the first time; its sync_batches row is already inserted."""
    # Alerts and device events first: they matter most, and they are small.
    upserted = _upsert_alerts(conn, batch.alerts, gateway_id)
    for alert in sorted((a for a in batch.alerts if a.ack is not None),
                        key=lambda a: a.alert_id):
        acknowledge_on_gateway(conn, gateway_id, alert)  # once per alert, however re-sent
    for e in batch.events:
        conn.execute(_UPSERT_EVENT, {
            "device": e.device, "type": e.type, "gw": gateway_id, "state": e.state,
            "boot": e.boot, "fw": e.fw,
            "at": _ts(e.at_ms)})
    # Aggregates before readings, like every batch: their rows are locked in that order.
    folded = upsert_aggregates(conn, batch.aggregates, gateway_id)
    inserted = insert_readings(conn, batch.readings, gateway_id, batch.batch_seq,
                               checked=checked, seen=devices_seen(batch.aggregates))
    if batch.aggregates:
        log.info("batch %s/%d: %d of %d aggregates newer than stored", gateway_id,
                 batch.batch_seq, folded, len(batch.aggregates))
    if batch.backfill_done:
        # Before the desired state is read, which must no longer list these requests.
        conn.execute(
            "UPDATE backfill_requests SET completed_at = now() WHERE gateway_id = %s"
            " AND id = ANY(%s) AND completed_at IS NULL", (gateway_id, batch.backfill_done))
    if batch.scenarios_done:  # before the desired state is read, like backfill_done
        scenarios.record_done(conn, gateway_id, batch.scenarios_done)
    if batch.state is not None:
        record_report(conn, gateway_id, batch.state)  # rollout progress, promotion
    state = Jsonb(batch.state.model_dump(mode="json")) if batch.state else None
    row = conn.execute(_FINISH, {
        "ins": inserted, "up": upserted, "gw": gateway_id, "bs": batch.batch_seq,
        "st": state, "has": state is not None}, prepare=True).fetchone()
    assert row is not None  # noqa: S101 - the outer SELECT always yields one row
    backfill = [BackfillRequest(id=i, since_ms=lo, until_ms=hi)
                for i, lo, hi in zip(row[3], row[4], row[5], strict=True)]
    models, rollback = desired_models(conn, gateway_id, row[2])
    scen = scenarios.pending(conn, gateway_id)
    desired = (DesiredState(models=models, rollback=rollback, backfill=backfill, scenarios=scen)
               if row[0] is None else
               DesiredState(config_version=row[0], config=row[1], models=models,
                            rollback=rollback, backfill=backfill, scenarios=scen))
    return SyncAck(
        gateway=gateway_id, batch_seq=batch.batch_seq, first_time=True,
        readings_inserted=inserted, readings_duplicate=len(batch.readings) - inserted,
        alerts_upserted=upserted, desired=desired,
    )


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _stored_ack(conn: Conn, batch: DecodedBatch, gateway_id: str) -> SyncAck:
    """The ack of a batch applied before, rebuilt from what its first application recorded."""
    row = conn.execute(
        "SELECT n_readings, n_inserted, n_alerts, n_dead_lettered FROM sync_batches"
        " WHERE gateway_id = %s AND batch_seq = %s",
        (gateway_id, batch.batch_seq),
    ).fetchone()
    if row is None:  # only if someone deleted it in between
        raise IngestError(f"batch {gateway_id}/{batch.batch_seq} vanished while acknowledged")
    n_readings, n_inserted, n_alerts, n_dead = row
    if n_readings != len(batch.readings):
        log.warning(
            "batch %s/%d re-sent with %d readings, first applied with %d; keeping the first",
            gateway_id, batch.batch_seq, len(batch.readings), n_readings,
        )
    return SyncAck(
        gateway=gateway_id, batch_seq=batch.batch_seq, first_time=False,
        readings_inserted=n_inserted, readings_duplicate=n_readings - n_inserted - n_dead,
        alerts_upserted=n_alerts, readings_dead_lettered=n_dead,
    )


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
            "updated_ms": a.updated_ms, "simulated": a.simulated,
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
