"""Cloud data service on a real PostgreSQL: partitions, the fast/slow ingest paths, rollups,
buckets, registries, desired state and backfill requests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud.db.pool import Conn
from cloud.exceptions import GatewayNotFoundError
from cloud.ingest.batch import apply_batch, desired_state, request_backfill
from cloud.ingest.limits import IngestLimits
from cloud.ingest.rollup import fold_pending
from cloud.query.readings import bucketed, default_width, list_devices, list_gateways, stats
from cloud.rollout import gateway_models
from shared import batchcodec
from shared.schemas import DeviceEvent, GatewayState, Reading, SyncBatch
from tests.fixtures.factories import T0, batch, reading


def scalar(conn: Conn, query: str) -> int:
    """One integer from ``query``, outside any lingering transaction."""
    row = conn.execute(query).fetchone()
    conn.rollback()
    assert row is not None
    return int(row[0])


def rollups_match_raw(conn: Conn, table: str, unit: str) -> bool:
    """After a fold, the rollup equals the aggregate recomputed from the raw rows."""
    fold_pending(conn)
    assert scalar(conn, "SELECT count(*) FROM rollup_pending") == 0
    diff = scalar(conn, f"""
        SELECT count(*) FROM (
            (SELECT device_id, key, date_trunc('{unit}', ts), min(v), max(v), count(*)
             FROM readings, LATERAL (SELECT key, value::float8 v FROM jsonb_each(metrics)) m
             GROUP BY 1, 2, 3
             EXCEPT SELECT device_id, metric, bucket, min, max, count FROM {table})
            UNION ALL
            (SELECT device_id, metric, bucket, min, max, count FROM {table}
             EXCEPT SELECT device_id, key, date_trunc('{unit}', ts), min(v), max(v), count(*)
             FROM readings, LATERAL (SELECT key, value::float8 v FROM jsonb_each(metrics)) m
             GROUP BY 1, 2, 3)) d""")
    return diff == 0


def test_readings_are_partitioned_by_day(conn: Conn) -> None:
    day = 86_400_000
    rows = [reading(0, ts_ms=T0), reading(1, ts_ms=T0 + 3 * day),
            reading(2, ts_ms=6_000_000_000_000)]  # year 2160: the default partition
    # A window wide enough to let 2160 through (the settings' default dead-letters it).
    wide = IngestLimits(max_future_s=6e9)
    assert apply_batch(conn, batch(1, rows), "gw-1", wide).readings_inserted == 3
    parts = conn.execute(
        "SELECT c.relname, count(r.*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " LEFT JOIN readings r ON r.tableoid = c.oid"
        " WHERE i.inhparent = 'readings'::regclass GROUP BY 1 ORDER BY 1").fetchall()
    conn.rollback()
    populated = {name: n for name, n in parts if n}
    assert populated == {"readings_20231114": 1, "readings_20231117": 1, "readings_default": 1}
    assert len(parts) == 3  # the 2 days with readings, created on demand, + default
    assert scalar(conn, "SELECT count(*) FROM pg_indexes WHERE tablename = 'readings_20231114'"
                        " AND indexdef LIKE '%%USING brin%%'") == 1


def test_fast_path_then_replays_only_pay_for_conflicts(conn: Conn) -> None:
    first = apply_batch(conn, batch(1, [reading(i) for i in range(100)]), "gw-1")
    assert (first.readings_inserted, first.readings_duplicate) == (100, 0)
    assert scalar(conn, "SELECT max_seq FROM readings_hwm") == 99
    # A replay (backlog / backfill): half known, half new but below the mark after the live
    # batch 2 moved it on, plus a reading repeated inside the batch.
    apply_batch(conn, batch(2, [reading(i) for i in range(150, 200)]), "gw-1")
    replay = [reading(i).model_copy(update={"replay": True}) for i in range(50, 150)]
    ack = apply_batch(conn, batch(3, [*replay, replay[0]]), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (50, 51)
    assert scalar(conn, "SELECT count(*) FROM readings") == 200
    assert scalar(conn, "SELECT count(DISTINCT (device_id, boot_id, seq)) FROM readings") == 200
    assert scalar(conn, "SELECT count(*) FROM readings WHERE replay") == 50
    assert rollups_match_raw(conn, "readings_1m", "minute")
    assert rollups_match_raw(conn, "readings_1h", "hour")


def test_concurrent_batches_for_one_new_boot_store_each_reading_once(conn: Conn,
                                                                    pg_dsn: str) -> None:
    # Two gateways hear the same device (it moved): the second queues on the new boot's
    # high-water mark, then finds every reading stored.
    rows = [reading(i) for i in range(2000)]
    barrier = threading.Barrier(2)
    acks = []

    def upload(gw: str) -> None:
        with psycopg.connect(pg_dsn) as c:
            b = batch(1, rows, gateway=gw)
            barrier.wait()
            acks.append(apply_batch(c, b, gw))

    threads = [threading.Thread(target=upload, args=(g,)) for g in ("gw-1", "gw-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.readings_inserted for a in acks) == [0, 2000]
    assert scalar(conn, "SELECT count(*) FROM readings") == 2000
    assert rollups_match_raw(conn, "readings_1m", "minute")


def retimed(seq: int, shift_ms: int) -> Reading:
    """Reading ``seq`` as a device re-timed after a clock sync would send it again."""
    r = reading(seq)
    return r.model_copy(update={"ts_ms": r.ts_ms + shift_ms, "device_ts_ms": r.ts_ms + shift_ms})


def test_reading_resent_with_another_ts_is_stored_once(conn: Conn) -> None:
    apply_batch(conn, batch(1, [reading(i) for i in range(100)]), "gw-1")
    # Below the mark: reading 50 again, 5 s later, among new readings.
    rows = [reading(i) for i in range(100, 150)]
    ack = apply_batch(conn, batch(2, [*rows[:10], retimed(50, 5_000), *rows[10:]]), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (50, 1)
    assert scalar(conn, "SELECT count(*) FROM readings WHERE seq = 50") == 1
    # A whole batch replayed re-timed by a day (another partition): nothing new.
    replay = [retimed(i, 86_400_000) for i in range(150)]
    ack = apply_batch(conn, batch(3, replay), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (0, 150)
    # Inside one batch: the first copy wins, the re-timed repeat is a duplicate.
    ack = apply_batch(conn, batch(4, [reading(150), retimed(150, 7), reading(151)]), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (2, 1)
    assert scalar(conn, "SELECT count(*) FROM readings") == 152
    assert scalar(conn, "SELECT count(*) FROM readings WHERE ts >= timestamptz 'epoch'"
                        f" + {T0 + 86_400_000} * interval '1 ms'") == 0
    s = stats(conn)
    conn.rollback()
    assert s.readings == s.distinct_readings == 152
    assert [d.readings for d in list_devices(conn).devices] == [152]
    conn.rollback()
    assert rollups_match_raw(conn, "readings_1m", "minute")


def test_missing_seqs_are_gaps_until_they_arrive(conn: Conn) -> None:
    # 10..19 missing (lost or not uploaded yet), the boot's first reading was seq 3.
    first = [reading(i) for i in [*range(3, 10), *range(20, 30)]]
    assert apply_batch(conn, batch(1, first), "gw-1").readings_inserted == 17
    assert conn.execute("SELECT lo, hi FROM readings_seq_gaps ORDER BY lo").fetchall() == [
        (0, 2), (10, 19)]
    conn.rollback()
    # Below the mark: 15 is new, re-timed 5 and a re-timed repeat of 15 are not.
    ack = apply_batch(conn, batch(2, [retimed(5, 9), reading(15), retimed(15, 3)]), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (1, 2)
    # The rest of the gap arrives re-timed, with 15 again: all new but 15.
    ack = apply_batch(conn, batch(3, [retimed(i, 60_000) for i in range(10, 20)]), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (9, 1)
    assert apply_batch(conn, batch(4, [reading(1)]), "gw-1").readings_inserted == 1
    assert conn.execute("SELECT lo, hi FROM readings_seq_gaps ORDER BY lo").fetchall() == [
        (0, 0), (2, 2)]
    conn.rollback()
    s = stats(conn)
    conn.rollback()
    assert s.readings == s.distinct_readings == scalar(conn, "SELECT count(*) FROM readings") == 28
    assert rollups_match_raw(conn, "readings_1m", "minute")


def test_rows_above_a_lowered_mark_are_caught_by_the_unique_index(conn: Conn) -> None:
    # A restore that left rows above the mark: the COPY meets them, the batch is redone
    # with every row checked, and nothing is stored twice.
    apply_batch(conn, batch(1, [reading(i) for i in range(10)]), "gw-1")
    conn.execute("UPDATE readings_hwm SET max_seq = 4")
    conn.commit()
    ack = apply_batch(conn, batch(2, [reading(i) for i in range(5, 12)]), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (2, 5)
    assert scalar(conn, "SELECT count(*) FROM readings") == 12
    assert scalar(conn, "SELECT max_seq FROM readings_hwm") == 11


def test_racing_retimed_copies_of_a_new_boot_store_each_reading_once(conn: Conn,
                                                                    pg_dsn: str) -> None:
    # Both copies are above any mark: without the mark's lock both would take the COPY
    # path, and the different ts would keep the unique index from noticing.
    copies = {"gw-1": [reading(i) for i in range(2000)],
              "gw-2": [retimed(i, 3_600_000) for i in range(2000)]}
    barrier = threading.Barrier(2)
    acks = []

    def upload(gw: str) -> None:
        with psycopg.connect(pg_dsn) as c:
            b = batch(1, copies[gw], gateway=gw)
            barrier.wait()
            acks.append(apply_batch(c, b, gw))

    threads = [threading.Thread(target=upload, args=(g,)) for g in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((a.readings_inserted, a.readings_duplicate) for a in acks) == [
        (0, 2000), (2000, 0)]
    assert scalar(conn, "SELECT count(*) FROM readings") == 2000
    assert rollups_match_raw(conn, "readings_1m", "minute")


def test_columnar_batch_applies_like_row_json(conn: Conn) -> None:
    rows = [reading(i, device=f"dev-{i % 3}") for i in range(300)]
    b = batch(1, rows)
    decoded = batchcodec.decode(batchcodec.decompress(batchcodec.encode(b), 1 << 24))
    assert apply_batch(conn, decoded, "gw-1").readings_inserted == 300
    stored = conn.execute(
        "SELECT device_id, boot_id, seq, metrics, score, (extract(epoch FROM ts) * 1000)::bigint"
        " FROM readings ORDER BY 1, 3").fetchall()
    conn.rollback()
    expect = sorted(((r.device, r.boot, r.seq, r.metrics, r.score, r.ts_ms) for r in rows),
                    key=lambda x: (x[0], x[2]))
    assert [tuple(s) for s in stored] == expect


def test_fast_path_stores_gaps_exactly(conn: Conn) -> None:
    # Readings without some metric, without a device clock or without a score: the binary
    # COPY must write NULL / leave the key out, and the rollups must not count the gap.
    rows = []
    for i in range(60):
        r = reading(i, score=None if i % 5 == 0 else 0.25 * i)
        update: dict[str, object] = {}
        if i % 3 == 0:
            update["metrics"] = {"temperature_c": 40.0 + i}
        if i % 4 == 0:
            update["device_ts_ms"] = None
        rows.append(r.model_copy(update=update))
    decoded = batchcodec.decode(batchcodec.decompress(batchcodec.encode(batch(1, rows)),
                                                      1 << 24))
    assert apply_batch(conn, decoded, "gw-1").readings_inserted == 60
    stored = conn.execute(
        "SELECT seq, metrics, score, (extract(epoch FROM device_ts) * 1000)::bigint"
        " FROM readings ORDER BY seq").fetchall()
    conn.rollback()
    assert [tuple(x) for x in stored] == [
        (r.seq, r.metrics, r.score, r.device_ts_ms) for r in rows]
    assert rollups_match_raw(conn, "readings_1m", "minute")
    assert scalar(conn, "SELECT sum(count) FROM readings_1h WHERE metric = 'current_a'") == 40


def test_buckets_come_from_the_rollups(conn: Conn) -> None:
    rows = [reading(i, ts_ms=T0 + i * 60_000) for i in range(180)]  # 3 hours, 1/min
    apply_batch(conn, batch(1, rows), "gw-1")
    since = datetime.fromtimestamp(T0 / 1000, tz=UTC).replace(minute=0, second=0,
                                                              microsecond=0)
    values = [40.0 + i % 7 for i in range(180)]

    def check() -> None:
        series = bucketed(conn, ["dev-1"], "temperature_c", since=since,
                          until=since + timedelta(hours=5), width_s=3600)
        conn.rollback()
        assert series.source == "readings_1h"
        assert sum(b.count for b in series.buckets) == 180
        assert min(b.min for b in series.buckets) == min(values)
        assert max(b.max for b in series.buckets) == max(values)
        fine = bucketed(conn, ["dev-1"], "temperature_c", since=since,
                        until=since + timedelta(hours=5), width_s=600)
        conn.rollback()
        assert fine.source == "readings_1m"
        assert sum(b.count * b.avg for b in fine.buckets) == pytest.approx(sum(values))

    # Acknowledged but not folded yet: the answer comes from the pending deltas.
    assert scalar(conn, "SELECT count(*) FROM readings_1h") == 0
    check()
    assert fold_pending(conn) > 0
    assert scalar(conn, "SELECT count(*) FROM rollup_pending") == 0
    hours = {(T0 + i * 60_000) // 3_600_000 for i in range(180)}
    assert scalar(conn, "SELECT count(*) FROM readings_1h WHERE metric = 'temperature_c'"
                        " AND device_id = 'dev-1'") == len(hours)
    check()
    # Half folded, half pending: still each value once.
    apply_batch(conn, batch(2, [reading(i, ts_ms=T0 + i * 60_000) for i in range(180, 200)]),
                "gw-1")
    values += [40.0 + i % 7 for i in range(180, 200)]
    series = bucketed(conn, ["dev-1"], "temperature_c", since=since,
                      until=since + timedelta(hours=5), width_s=3600)
    conn.rollback()
    assert sum(b.count for b in series.buckets) == 200
    with pytest.raises(ValueError, match="multiple of 60"):
        bucketed(conn, ["dev-1"], "x", since=since, until=since, width_s=90)


def test_bucket_width_follows_the_range_when_none_is_given() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    widths = {span: default_width(at, at + span) for span in (
        timedelta(minutes=10), timedelta(hours=5), timedelta(days=1), timedelta(days=30),
        timedelta(days=800))}
    assert list(widths.values()) == [60, 60, 300, 6 * 3600, 7 * 86_400]
    assert all(span.total_seconds() / w <= 300 for span, w in widths.items())


def test_buckets_of_the_last_hour_by_default_show_recent_readings(conn: Conn) -> None:
    # What a user asks first: no range, no width. Half an hour of readings up to now must
    # show (an hourly default width dropped the bucket that started before the range).
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    apply_batch(conn, batch(1, [reading(i, ts_ms=now_ms - (30 - i) * 60_000)
                                for i in range(30)]), "gw-1")
    series = bucketed(conn, ["dev-1"], "temperature_c")
    conn.rollback()
    assert (series.width_s, series.source) == (60, "readings_1m")
    assert sum(b.count for b in series.buckets) == 30


def test_concurrent_folds_fold_each_delta_once(conn: Conn, pg_dsn: str) -> None:
    # Many batches pending; four folders race (as four cloud replicas would).
    for b in range(1, 21):
        rows = [reading(i, device=f"dev-{i % 5}", ts_ms=T0 + i * 7_000)
                for i in range((b - 1) * 100, b * 100)]
        apply_batch(conn, batch(b, rows), "gw-1")
    pending = scalar(conn, "SELECT count(*) FROM rollup_pending")
    folded: list[int] = []
    barrier = threading.Barrier(4)

    def folder() -> None:
        with psycopg.connect(pg_dsn) as c:
            barrier.wait()
            for _ in range(20):
                folded.append(fold_pending(c, limit=37))

    threads = [threading.Thread(target=folder) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fold_pending(conn)  # whatever the racers left
    assert sum(folded) <= pending
    assert scalar(conn, "SELECT count(*) FROM rollup_pending") == 0
    assert rollups_match_raw(conn, "readings_1m", "minute")
    assert rollups_match_raw(conn, "readings_1h", "hour")


def test_desired_state_reported_state_and_device_events(conn: Conn) -> None:
    conn.execute("UPDATE gateways SET config_version = 3, desired_config = '{\"batch_max\": 200}',"
                 " desired_models = '{\"motor\": \"if-7\"}' WHERE gateway_id = 'gw-1'")
    conn.commit()
    b = SyncBatch(gateway="gw-1", batch_seq=1, created_ms=T0, readings=[reading(0)],
                  state=GatewayState(config_version=2, models={"motor": "if-6"}, backlog=5),
                  events=[DeviceEvent(device="dev-1", boot="b00710ad", state="offline",
                                      at_ms=T0 + 10, fw="1.2.0"),
                          DeviceEvent(device="dev-9", boot="b00710ad", state="online",
                                      at_ms=T0)])
    ack = apply_batch(conn, b, "gw-1")
    assert ack.desired is not None
    assert (ack.desired.config_version, ack.desired.config, ack.desired.models) == (
        3, {"batch_max": 200}, {"motor": "if-7"})
    gw = {g.gateway: g for g in list_gateways(conn)}
    conn.rollback()
    assert gw["gw-1"].online
    assert not gw["gw-2"].online
    assert gw["gw-1"].reported_state == {"config_version": 2, "models": {"motor": "if-6"},
                                         "software": None, "backlog": 5, "rollout": [],
                                         "config": None, "config_refused": {},
                                         "alert_decision": 0}
    devices = {d.device: d for d in list_devices(conn).devices}
    conn.rollback()
    assert (devices["dev-1"].state, devices["dev-9"].state) == ("offline", "online")
    # A stale event (older than the stored state) does not roll the state back.
    old = SyncBatch(gateway="gw-1", batch_seq=2, created_ms=T0, events=[DeviceEvent(
        device="dev-1", boot="b00710ad", state="online", at_ms=T0)])
    apply_batch(conn, old, "gw-1")
    assert list_devices(conn).devices[0].state == "offline"
    conn.rollback()


def test_backfill_requests_are_served_in_desired_state_until_done(conn: Conn) -> None:
    since = datetime.fromtimestamp(T0 / 1000, tz=UTC)
    req = request_backfill(conn, "gw-1", since, since + timedelta(hours=1))
    with pytest.raises(GatewayNotFoundError):
        request_backfill(conn, "nobody", since, since + timedelta(hours=1))
    with pytest.raises(ValueError, match="after"):
        request_backfill(conn, "gw-1", since, since)
    ack = apply_batch(conn, batch(1, [reading(0)]), "gw-1")
    assert ack.desired is not None
    assert [(b.id, b.since_ms, b.until_ms) for b in ack.desired.backfill] == [
        (req, T0, T0 + 3_600_000)]
    # Another gateway's desired state does not carry it.
    assert desired_state(conn, "gw-2").backfill == []
    conn.rollback()
    done = SyncBatch(gateway="gw-1", batch_seq=2, created_ms=T0, backfill_done=[req])
    assert apply_batch(conn, done, "gw-1").desired.backfill == []  # type: ignore[union-attr]


def test_backfill_cli(conn: Conn, pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    from cloud.cli import main  # noqa: PLC0415

    assert main(["backfill", "gw-1", "--since", "2024-01-01T00:00", "--until",
                 "2024-01-02T00:00", "--dsn", pg_dsn]) == 0
    assert "backfill request 1 queued for gateway gw-1" in capsys.readouterr().out
    assert [(b.since_ms, b.until_ms) for b in desired_state(conn, "gw-1").backfill] == [
        (1_704_067_200_000, 1_704_153_600_000)]
    conn.rollback()
    assert main(["backfill", "nobody", "--since", "2024-01-01", "--until", "2024-01-02",
                 "--dsn", pg_dsn]) == 1


def test_a_model_no_longer_reported_is_no_longer_shown_running(conn: Conn) -> None:
    # A gateway rolled back to the statistical detector reports no model for the profile:
    # the registry of running models (console, drift check) must drop the old version.
    def report(seq: int, models: dict[str, str]) -> None:
        apply_batch(conn, SyncBatch(gateway="gw-1", batch_seq=seq, created_ms=T0,
                                    state=GatewayState(models=models)), "gw-1")

    def running() -> list[tuple[object, object]]:
        rows = [(m["profile"], m["version"]) for m in gateway_models(conn, "gw-1")]
        conn.rollback()
        return sorted(rows, key=str)

    report(1, {"motor": "if-6", "mill": "mi-2"})
    assert running() == [("mill", "mi-2"), ("motor", "if-6")]
    report(2, {"mill": "mi-2"})  # empty batch: a heartbeat carries the state too
    assert running() == [("mill", "mi-2")]
    (change,) = conn.execute(
        "SELECT before, after FROM audit_log WHERE action = 'model.change'"
        " AND after ->> 'version' IS NULL").fetchall()
    conn.rollback()
    assert change[0] == {"profile": "motor", "version": "if-6"}
    assert change[1]["reason"] == "the gateway reports no model: statistical detector"
