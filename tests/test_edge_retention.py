"""Acceptance 4: the disk budget is kept by dropping synced readings first, then aggregating
unsynced ones oldest first, never touching alerts or a batch being uploaded; drops are counted."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.alert_lifecycle import AlertTracker
from edge.manual import record_manual
from edge.pipeline import Pipeline
from edge.retention import Retention, used_bytes
from edge.score import RuleScorer
from edge.settings import ConfigFileError, GatewaySettings, load_settings
from edge.store import Store
from edge.validate import Incoming
from shared import topics
from shared.schemas import Alert
from tests.fixtures.gateway import Publisher, running_gateway

BASE_MS = 1_700_000_040_000  # a whole minute: minute buckets line up with seq // 60
DEVICE = "ret-motor"
N = 6000
SYNCED = range(2000, 4000)  # acked by the cloud: newer than the oldest unsynced ones
UPLOADING = range(4000, 4500)  # frozen in a pending batch: a retry must resend it as is


def metrics(seq: int) -> dict[str, float]:
    """Values that differ within a minute, so min/max/mean are checkable."""
    return {"temperature_c": 40.0 + (seq % 60) * 0.5, "vibration_rms_g": 1.0 + (seq % 7),
            "current_a": 10.0}


def payload(seq: int) -> bytes:
    """A synced motor reading taken at BASE_MS + seq seconds."""
    return json.dumps({"v": 1, "device": DEVICE, "boot": "0badc0de", "seq": seq,
                       "ts_ms": BASE_MS + seq * 1000, "uptime_ms": seq * 1000, "synced": True,
                       "type": "motor", "metrics": metrics(seq)}).encode()


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Store]:
    """A store with N readings (some synced, some uploading) and three alerts."""
    store = Store.open(tmp_path / "gw.db")
    pipe = Pipeline(store, RuleScorer(), AlertTracker(), "gw-retention")
    topic = topics.telemetry(DEVICE)
    for start in range(0, N, 500):
        pipe.handle([Incoming(topic, payload(s), BASE_MS + s * 1000 + 5)
                     for s in range(start, start + 500)])
    with store.transaction():
        conn = store.conn
        conn.execute("INSERT INTO sync_batches (batch_seq, created_ms, state, n_readings, "
                     "n_alerts) VALUES (1, 0, 'acked', ?, 0), (2, 0, 'pending', ?, 0)",
                     (len(SYNCED), len(UPLOADING)))
        conn.execute("UPDATE readings SET batch_seq = 1 WHERE seq >= ? AND seq < ?",
                     (SYNCED.start, SYNCED.stop))
        conn.execute("UPDATE readings SET batch_seq = 2 WHERE seq >= ? AND seq < ?",
                     (UPLOADING.start, UPLOADING.stop))
        store.upsert_alerts([
            Alert(alert_id=f"0000000{i}-aaaa", device=DEVICE, opened_ms=BASE_MS + i,
                  severity="high", state="open", score=9.0, scorer="stat", updated_ms=BASE_MS)
            for i in range(3)])
    yield store
    store.close()


def seqs(store: Store, where: str) -> list[int]:
    """Seqs of the stored readings matching ``where``, ascending."""
    return [s for (s,) in store.conn.execute(
        f"SELECT seq FROM readings WHERE {where} ORDER BY seq")]


def test_synced_readings_go_first_oldest_first(filled: Store) -> None:
    store = filled
    budget = int(used_bytes(store) * 0.9)
    result = Retention(store, budget, low_water=0.9).enforce()
    assert result is not None
    assert used_bytes(store) <= budget * 0.9
    synced_left = seqs(store, "batch_seq = 1")
    dropped = len(SYNCED) - len(synced_left)
    assert 0 < dropped < len(SYNCED)  # the budget was met before all synced readings went
    assert synced_left == list(range(SYNCED.start + dropped, SYNCED.stop))  # oldest went first
    assert len(seqs(store, "batch_seq IS NULL")) == N - len(SYNCED) - len(UPLOADING)
    assert store.count("reading_aggregates") == 0
    assert result.synced_dropped == dropped
    assert store.counters["retention_synced_dropped"] == dropped
    assert store.counters["retention_aggregated"] == 0


def test_then_unsynced_readings_become_minute_aggregates_alerts_kept(filled: Store) -> None:
    store = filled
    budget = int(used_bytes(store) * 0.45)
    result = Retention(store, budget, low_water=0.9).enforce()
    assert result is not None
    assert used_bytes(store) <= budget
    assert seqs(store, "batch_seq = 1") == []  # every synced reading went
    assert seqs(store, "batch_seq = 2") == list(UPLOADING)  # the uploading batch is intact
    unsynced_left = seqs(store, "batch_seq IS NULL")
    unsynced_all = [s for s in range(N) if s not in SYNCED and s not in UPLOADING]
    aggregated = unsynced_all[:len(unsynced_all) - len(unsynced_left)]
    assert aggregated, "the budget should have forced aggregation"
    assert unsynced_left == unsynced_all[len(aggregated):]  # oldest aggregated first
    assert store.count("alerts") == 3
    assert result.synced_dropped == len(SYNCED)
    assert result.aggregated == len(aggregated)
    c = store.counters
    assert c["retention_synced_dropped"] == len(SYNCED)
    assert c["retention_aggregated"] == len(aggregated)
    rows = store.conn.execute(
        "SELECT device, metric, minute_ms, type, n, min, max, mean, sum, first_ts_ms, "
        "last_ts_ms FROM reading_aggregates").fetchall()
    assert sum(r[4] for r in rows) == 3 * len(aggregated)  # three metrics per reading
    # The first minute (seqs 0..59) was aggregated whole: check it against the raw values.
    first = {r[1]: r for r in rows if r[2] == BASE_MS}
    temps = [metrics(s)["temperature_c"] for s in range(60)]
    _, _, _, kind, n, lo, hi, mean, total, t0, t1 = first["temperature_c"]
    assert (kind, n, lo, hi, t0, t1) == ("motor", 60, min(temps), max(temps), BASE_MS,
                                         BASE_MS + 59_000)
    assert mean == pytest.approx(sum(temps) / 60)
    assert total == pytest.approx(sum(temps))


def test_a_technicians_unsynced_entries_are_never_folded(tmp_path: Path) -> None:
    """Manual entries (a note has no aggregate) stay while unsynced readings around them are
    folded into minute aggregates."""
    store = Store.open(tmp_path / "gw.db")
    try:
        pipe = Pipeline(store, RuleScorer(), AlertTracker(), "gw-retention")
        topic = topics.telemetry(DEVICE)
        record_manual(store, DEVICE, "motor", {"temperature_c": 55.0}, "casing warm",
                      at_ms=BASE_MS)
        record_manual(store, DEVICE, "motor", {}, "belt checked", at_ms=BASE_MS + 1)
        for start in range(0, 2000, 500):
            pipe.handle([Incoming(topic, payload(s), BASE_MS + s * 1000 + 5)
                         for s in range(start, start + 500)])
        budget = int(used_bytes(store) * 0.5)
        result = Retention(store, budget, low_water=0.9).enforce()
        assert result is not None
        assert result.aggregated > 0
        assert store.conn.execute(
            "SELECT seq, note FROM readings WHERE origin = 'manual' ORDER BY seq").fetchall() == [
            (0, "casing warm"), (1, "belt checked")]
    finally:
        store.close()


# A budget nothing fits in: retention says so, on purpose.
@pytest.mark.expected_errors("edge.retention", "still over the disk budget")
def test_a_minute_whose_aggregates_are_being_uploaded_is_not_folded_into(filled: Store) -> None:
    store = filled
    conn = store.conn
    Retention(store, 1).enforce(force=True)  # every unsent reading is folded
    # The first minute's rows are frozen in pending batch 2: an upload retry must resend them
    # as they are. Late readings arrive, two of that minute and one of the next.
    with store.transaction():
        conn.execute("UPDATE reading_aggregates SET batch_seq = 2 WHERE minute_ms = ?",
                     (BASE_MS,))
        conn.executemany(
            "INSERT INTO readings (device, boot, seq, type, ts_ms, received_ms, metrics, "
            "scorer, anomalous) SELECT device, boot, ?, type, ?, received_ms, metrics, "
            "scorer, anomalous FROM readings WHERE seq = 4000",
            [(10**6, BASE_MS + 1000), (10**6 + 1, BASE_MS + 2000),
             (10**6 + 2, BASE_MS + 61_000)])
    rows = ("SELECT metric, minute_ms, n, updated_ms, batch_seq FROM reading_aggregates "
            "WHERE minute_ms IN (?, ?) ORDER BY minute_ms, metric")
    before = conn.execute(rows, (BASE_MS, BASE_MS + 60_000)).fetchall()
    Retention(store, 1).enforce(force=True)
    assert seqs(store, "batch_seq IS NULL") == [10**6, 10**6 + 1]  # left raw until the ack
    after = conn.execute(rows, (BASE_MS, BASE_MS + 60_000)).fetchall()
    assert after[:3] == before[:3]  # the frozen rows are untouched
    assert [(n, batch) for _, _, n, _, batch in after[3:]] == [(61, None)] * 3
    # Once batch 2 is acked, the late readings merge and the rows go out again, newer.
    with store.transaction():
        conn.execute("UPDATE sync_batches SET state = 'acked' WHERE batch_seq = 2")
    Retention(store, 1).enforce(force=True)
    assert seqs(store, "batch_seq IS NULL") == []
    merged = conn.execute(rows, (BASE_MS, BASE_MS + 60_000)).fetchall()[:3]
    assert [(n, batch) for _, _, n, _, batch in merged] == [(62, None)] * 3
    assert all(m[3] > b[3] for m, b in zip(merged, before[:3], strict=True))


def test_no_budget_means_no_retention(filled: Store) -> None:
    assert Retention(filled, 0).enforce() is None
    assert filled.count("readings") == N


def _budget_settings(broker: PrivateMosquitto, db: Path) -> GatewaySettings:
    return GatewaySettings(
        gateway_id="gw-retention-live", mqtt=broker.gateway_mqtt(),
        storage={"path": str(db), "max_mb": 0.2, "retention_interval_s": 0.1},
        http={"port": free_port()})


async def test_a_running_gateway_reports_its_retention_drops(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    dev = "ret-live"
    msgs = [(topics.telemetry(dev), json.dumps({
        "v": 1, "device": dev, "boot": "0badc0de", "seq": s, "ts_ms": BASE_MS + s * 1000,
        "uptime_ms": s * 1000, "synced": True, "type": "motor", "metrics": metrics(s)}))
        for s in range(3000)]

    def publish() -> None:
        with Publisher(broker, "pub-retention-live") as pub:
            for topic, body in msgs:
                pub.publish(topic, body)

    async with running_gateway(_budget_settings(broker, tmp_path / "gw.db")) as gw:
        await asyncio.to_thread(publish)
        status: dict[str, Any] = await gw.wait_status(
            lambda s: s["received"] >= len(msgs) and s["retention"]["aggregated"] > 0)
        metrics_text = (await gw.http.get(f"{gw.base_url}/metrics")).text
    aggregated = status["retention"]["aggregated"]
    assert status["db_budget_bytes"] == int(0.2 * 1024 * 1024)
    assert f"smaint_gateway_retention_aggregated_total {float(aggregated)}" in metrics_text
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        (raw,) = conn.execute("SELECT count(*) FROM readings").fetchone()
        (in_aggregates,) = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM reading_aggregates WHERE metric = 'current_a'"
        ).fetchone()
        (counted,) = conn.execute(
            "SELECT value FROM counters WHERE name = 'retention_aggregated'").fetchone()
    # Nothing vanished: every reading is either raw or inside an aggregate, once.
    assert raw + in_aggregates == len(msgs)
    assert in_aggregates == counted


def test_the_budget_comes_from_a_toml_file_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text('gateway_id = "gw-from-toml"\n[storage]\nmax_mb = 64\nlow_water = 0.8\n')
    monkeypatch.setenv("SMAINT_GATEWAY_CONFIG", str(conf))
    monkeypatch.setenv("SMAINT_GATEWAY_STORAGE__MAX_MB", "32")
    s = load_settings()
    assert (s.gateway_id, s.storage.max_mb, s.storage.low_water) == ("gw-from-toml", 32.0, 0.8)
    assert load_settings(storage={"max_mb": 16}).storage.max_mb == 16.0  # explicit arguments win
    monkeypatch.setenv("SMAINT_GATEWAY_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigFileError):
        load_settings()
