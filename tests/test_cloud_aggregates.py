"""Folded per-minute aggregates in the cloud, on a real PostgreSQL: stored last writer wins,
fed into the rollups as differences, seen by the device registry and the chart buckets."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud.db.pool import Conn
from cloud.exceptions import InvalidBatchError
from cloud.ingest.batch import apply_batch
from cloud.ingest.rollup import fold_pending
from cloud.query.readings import Bucket, bucketed, list_devices
from cloud.query.reports import fleet_health
from shared import batchcodec
from shared.schemas import ReadingAggregate, SyncBatch
from tests.fixtures.factories import T0, reading

MINUTE = T0 // 60_000 * 60_000 + 60_000  # a minute start after T0


def agg(values: list[float], updated_ms: int, device: str = "dev-1",
        metric: str = "temperature_c", minute_ms: int = MINUTE) -> ReadingAggregate:
    """The aggregate of ``values``, read one per second from the minute's start."""
    return ReadingAggregate(
        device=device, metric=metric, minute_ms=minute_ms, type="motor", n=len(values),
        min=min(values), max=max(values), mean=sum(values) / len(values), sum=sum(values),
        first_ts_ms=minute_ms, last_ts_ms=minute_ms + (len(values) - 1) * 1000,
        updated_ms=updated_ms)


def upload(conn: Conn, seq: int, aggregates: list[ReadingAggregate], gateway: str = "gw-1",
           **extra: object) -> None:
    """Apply a batch carrying ``aggregates`` (and ``extra`` fields)."""
    b = SyncBatch.model_validate({"gateway": gateway, "batch_seq": seq, "created_ms": T0,
                                  "aggregates": aggregates, **extra})
    apply_batch(conn, b, gateway)


def stored(conn: Conn) -> list[tuple[object, ...]]:
    """Every stored aggregate as (device, metric, n, min, max, sum, updated_ms)."""
    rows = conn.execute("SELECT device_id, metric, n, min, max, sum, updated_ms"
                        " FROM reading_aggregates ORDER BY 1, 2, minute").fetchall()
    conn.rollback()
    return [tuple(r) for r in rows]


def minute_bucket(conn: Conn, width_s: int = 60) -> Bucket:
    """The one bucket of dev-1's temperature around MINUTE."""
    since = datetime.fromtimestamp(MINUTE // 3_600_000 * 3600, tz=UTC)
    series = bucketed(conn, ["dev-1"], "temperature_c", since=since,
                      until=since + timedelta(hours=2), width_s=width_s)
    conn.rollback()
    assert len(series.buckets) == 1
    return series.buckets[0]


def test_aggregates_land_and_register_their_device(conn: Conn) -> None:
    upload(conn, 1, [agg([20.0, 22.0, 24.0], T0), agg([1.0, 3.0], T0, metric="current_a")])
    assert stored(conn) == [("dev-1", "current_a", 2, 1.0, 3.0, 4.0, T0),
                            ("dev-1", "temperature_c", 3, 20.0, 24.0, 66.0, T0)]
    row = conn.execute("SELECT gateway_id, type, mean, first_ts, last_ts FROM reading_aggregates"
                       " WHERE metric = 'temperature_c'").fetchone()
    conn.rollback()
    assert row is not None
    assert row[:3] == ("gw-1", "motor", 22.0)
    assert (row[3].timestamp() * 1000, row[4].timestamp() * 1000) == (MINUTE, MINUTE + 2000)
    devices = list_devices(conn).devices
    conn.rollback()
    assert [(d.device, d.type, d.gateway, d.readings) for d in devices] == [
        ("dev-1", "motor", "gw-1", 0)]  # no raw reading stored
    assert devices[0].first_seen_at.timestamp() * 1000 == MINUTE
    assert devices[0].last_seen_at.timestamp() * 1000 == MINUTE + 2000


def test_newer_version_replaces_older_and_older_replay_does_not(conn: Conn) -> None:
    upload(conn, 1, [agg([20.0, 22.0], T0)])
    upload(conn, 2, [agg([20.0, 22.0, 18.0, 30.0], T0 + 10)])  # a later merge of the minute
    assert stored(conn) == [("dev-1", "temperature_c", 4, 18.0, 30.0, 90.0, T0 + 10)]
    upload(conn, 3, [agg([20.0, 22.0, 18.0], T0 + 5)])  # an older version, replayed late
    assert stored(conn) == [("dev-1", "temperature_c", 4, 18.0, 30.0, 90.0, T0 + 10)]
    # Two versions in one batch: the newer one wins whatever the order.
    upload(conn, 4, [agg([1.0] * 6, T0 + 30), agg([1.0] * 5, T0 + 20)])
    assert stored(conn) == [("dev-1", "temperature_c", 6, 1.0, 1.0, 6.0, T0 + 30)]


def test_buckets_count_each_folded_reading_once(conn: Conn) -> None:
    # A raw reading in the same minute as the aggregate, then two versions of the aggregate.
    raw = reading(0, ts_ms=MINUTE + 59_000)
    apply_batch(conn, SyncBatch(gateway="gw-1", batch_seq=1, created_ms=T0, readings=[raw]),
                "gw-1")
    upload(conn, 2, [agg([20.0, 22.0], T0)])
    upload(conn, 3, [agg([20.0, 22.0, 18.0, 30.0], T0 + 10)])
    upload(conn, 4, [agg([20.0, 22.0, 18.0], T0 + 5)])  # stale: no delta
    values = [raw.metrics["temperature_c"], 20.0, 22.0, 18.0, 30.0]

    def check() -> None:
        for width in (60, 3600):  # minute and hour rollups
            b = minute_bucket(conn, width)
            assert (b.count, b.min, b.max) == (5, min(values), max(values))
            assert b.avg == pytest.approx(sum(values) / 5)

    check()  # from the pending deltas
    assert fold_pending(conn) > 0
    check()  # from the folded rollups
    upload(conn, 5, [agg([20.0, 22.0, 18.0, 30.0, 10.0], T0 + 20)])  # once more, folded half
    b = minute_bucket(conn)
    assert (b.count, b.min) == (6, 10.0)
    assert b.avg == pytest.approx((sum(values) + 10.0) / 6)


def test_batch_replay_changes_nothing(conn: Conn) -> None:
    upload(conn, 1, [agg([20.0, 22.0], T0)])
    b = SyncBatch(gateway="gw-1", batch_seq=2, created_ms=T0,
                  aggregates=[agg([20.0, 22.0, 18.0], T0 + 10)])
    assert apply_batch(conn, b, "gw-1").first_time
    before = stored(conn), minute_bucket(conn)
    pending = conn.execute("SELECT count(*) FROM rollup_pending").fetchone()
    conn.rollback()
    assert apply_batch(conn, b, "gw-1").first_time is False
    assert (stored(conn), minute_bucket(conn)) == before
    assert conn.execute("SELECT count(*) FROM rollup_pending").fetchone() == pending
    conn.rollback()


def test_columnar_batch_carries_aggregates(conn: Conn) -> None:
    b = SyncBatch(gateway="gw-1", batch_seq=1, created_ms=T0, readings=[reading(0)],
                  aggregates=[agg([5.0, 7.0], T0, device="dev-2")])
    decoded = batchcodec.decode(batchcodec.decompress(batchcodec.encode(b), 1 << 24))
    apply_batch(conn, decoded, "gw-1")
    assert stored(conn) == [("dev-2", "temperature_c", 2, 5.0, 7.0, 12.0, T0)]
    assert [d.device for d in list_devices(conn).devices] == ["dev-1", "dev-2"]
    conn.rollback()


def test_racing_batches_with_one_new_minute_count_it_once(conn: Conn, pg_dsn: str) -> None:
    # The same fold uploaded by two gateways at once: one stores it, the other finds it.
    barrier = threading.Barrier(2)

    def send(gw: str) -> None:
        with psycopg.connect(pg_dsn) as c:
            b = SyncBatch(gateway=gw, batch_seq=1, created_ms=T0,
                          aggregates=[agg([20.0, 22.0, 24.0], T0)])
            barrier.wait()
            apply_batch(c, b, gw)

    threads = [threading.Thread(target=send, args=(g,)) for g in ("gw-1", "gw-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stored(conn)) == 1
    assert minute_bucket(conn).count == 3


def test_aggregate_postgres_cannot_hold_is_refused(conn: Conn) -> None:
    bad = agg([1.0], T0).model_copy(update={"type": "mo\x00tor"})
    with pytest.raises(InvalidBatchError, match="NUL"):
        upload(conn, 1, [bad])
    assert stored(conn) == []


def test_fleet_report_counts_folded_readings(conn: Conn) -> None:
    apply_batch(conn, SyncBatch(gateway="gw-1", batch_seq=1, created_ms=T0,
                                readings=[reading(i, ts_ms=MINUTE + i) for i in range(3)]),
                "gw-1")
    # Four readings folded: every metric of the minute covers them.
    upload(conn, 2, [agg([1.0] * 4, T0), agg([2.0] * 4, T0, metric="current_a")])
    since = datetime.fromtimestamp(MINUTE / 1000, tz=UTC)
    report = fleet_health(conn, since, since + timedelta(minutes=1))
    conn.rollback()
    assert [(d.device, d.readings, d.anomalous) for d in report.devices] == [("dev-1", 7, 0)]
