"""Reading origins: a technician's manual entries on the panel, and SIMULATED faults.

A real gateway (database, pipeline, scorer, alert tracker, outbox) fed through its pipeline as
from MQTT, the panel driven by NiceGUI's simulated user, and for the sync the real cloud
(``python -m cloud serve`` on a private PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.manual import ManualEntryError
from edge.outbox import BatchInfo
from edge.service import Gateway
from edge.settings import GatewaySettings
from edge.store import now_ms
from edge.sync import SYNC_PATH
from edge.validate import Incoming
from shared import batchcodec, topics
from shared.schemas import MANUAL_BOOT
from tests.fixtures.cloud import prepare_db
from tests.fixtures.gateway import Publisher, running_gateway
from tests.fixtures.panel import (
    BOOT,
    PATIENT,
    cloud_serving,
    feed,
    gateway,
    panel,
    panel_user,
    sign_in,
)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = gateway(tmp_path)
    try:
        yield g
    finally:
        g.store.close()


def sim_payloads(device: str, seqs: range, *, sim_from: int, spike_from: int,
                 interval_ms: int = 1000) -> list[tuple[int, bytes]]:
    """(sampled at, payload) of motor readings of ``device``: from ``sim_from`` on they say
    ``"sim": true`` (an injected fault), from ``spike_from`` on the temperature jumps."""
    first_ms = now_ms() - len(seqs) * interval_ms
    out = []
    for i, seq in enumerate(seqs):
        at = first_ms + i * interval_ms
        payload: dict[str, object] = {
            "v": 1, "device": device, "boot": BOOT, "seq": seq, "ts_ms": at,
            "uptime_ms": seq * interval_ms, "synced": True, "type": "motor",
            "metrics": {"temperature_c": 40.0 + (seq % 5) * 0.2 + (120 if seq >= spike_from
                                                                   else 0),
                        "vibration_rms_g": 0.5 + (seq % 3) * 0.01, "current_a": 12.0}}
        if seq >= sim_from:
            payload["sim"] = True
        out.append((at, json.dumps(payload).encode()))
    return out


def feed_sim(gw: Gateway, device: str, seqs: range, *, sim_from: int, spike_from: int) -> None:
    """``sim_payloads`` through the gateway's pipeline, as from MQTT."""
    gw.pipeline.handle([Incoming(topics.telemetry(device), body, at) for at, body in
                        sim_payloads(device, seqs, sim_from=sim_from, spike_from=spike_from)])


def stored(gw: Gateway, device: str) -> list[tuple[str, int, str, str | None, str]]:
    """(boot, seq, origin, note, metrics JSON) of the device's stored readings, by rowid."""
    return [tuple(r) for r in gw.store.conn.execute(
        "SELECT boot, seq, origin, note, metrics FROM readings WHERE device = ? ORDER BY rowid",
        (device,))]


async def test_a_value_outside_the_profile_range_is_refused_with_the_range(
        gw: Gateway) -> None:
    """The panel refuses 500 °C (motor temperature runs -40..200 °C), says so, stores nothing;
    an empty entry is refused too."""
    feed(gw, "motor-1", 5)
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.open("/devices/motor-1")
        user.find(marker="manual-temperature_c").type("500")
        user.find(marker="manual-record").click()
        await user.should_see("Not recorded: metric 'temperature_c' = 500.0 °C is outside the "
                              "physical range [-40, 200] °C", retries=PATIENT)
        user.find(marker="manual-temperature_c").clear()
        user.find(marker="manual-record").click()
        await user.should_see("Not recorded: enter a measured value or a note",
                              retries=PATIENT)
    assert [r for r in stored(gw, "motor-1") if r[2] == "manual"] == []
    assert gw.store.counters["manual_entries"] == 0


def test_manual_entries_do_not_move_the_detector(tmp_path: Path) -> None:
    """Two gateways see the same device stream; one also gets extreme manual entries in the
    middle of it. The readings after them score exactly alike and open the same alerts."""
    plain, entered = gateway(tmp_path / "plain"), gateway(tmp_path / "entered")
    try:
        for g in (plain, entered):
            feed(g, "motor-1", 30)
        for value in (199.0, -39.0, 199.0):
            entered.record_manual("motor-1", {"temperature_c": value, "current_a": 99.0},
                                  "probe on the casing")
        entered.record_manual("motor-1", {}, "note alone")
        for g in (plain, entered):
            feed(g, "motor-1", 30, first_seq=30, spike_at=55)
        scores = [[tuple(r) for r in g.store.conn.execute(
            "SELECT seq, score, anomalous FROM readings WHERE device = 'motor-1' AND boot = ? "
            "ORDER BY seq", (BOOT,))] for g in (plain, entered)]
        assert scores[0] == scores[1]
        assert any(anomalous for _, _, anomalous in scores[0])  # the spike did score
        opened = [[(a.severity, a.score) for a in g.store.open_alerts()]
                  for g in (plain, entered)]
        assert opened[0] == opened[1] != []
        manual = entered.store.conn.execute(
            "SELECT count(*), max(score IS NULL), max(anomalous) FROM readings "
            "WHERE boot = ?", (MANUAL_BOOT,)).fetchone()
        assert tuple(manual) == (4, 1, 0)  # stored, unscored, never anomalous
    finally:
        plain.store.close()
        entered.store.close()


def test_a_device_may_not_send_on_the_manual_boot_and_entries_need_a_known_device(
        gw: Gateway) -> None:
    """Telemetry claiming the reserved boot is dead-lettered naming it; an entry for a device
    that never reported is refused."""
    payload = {"v": 1, "device": "motor-1", "boot": MANUAL_BOOT, "seq": 0, "ts_ms": 1,
               "uptime_ms": 1, "synced": False, "type": "motor",
               "metrics": {"temperature_c": 40.0}}
    result = gw.pipeline.handle([Incoming(topics.telemetry("motor-1"),
                                          json.dumps(payload).encode(), now_ms())])
    assert (result.stored, result.dead_letters) == (0, 1)
    assert "reserved for manual entries" in gw.store.dead_letters()[0]["reason"]
    with pytest.raises(ManualEntryError, match="no device 'motor-9'"):
        gw.record_manual("motor-9", {"temperature_c": 40.0}, None)


def test_sim_telemetry_is_stored_simulated_and_its_alert_is_simulated(
        gw: Gateway, tmp_path: Path) -> None:
    """Readings sent with ``"sim": true`` are stored with origin simulated and scored (the
    spike opens an alert, marked simulated); the others stay sensor readings."""
    feed_sim(gw, "motor-1", range(40), sim_from=30, spike_from=36)
    origins = [origin for boot, seq, origin, _, _ in stored(gw, "motor-1")]
    assert origins == ["sensor"] * 30 + ["simulated"] * 10
    (alert,) = gw.store.open_alerts()
    assert alert.simulated is True
    plain = gateway(tmp_path / "plain")
    try:
        feed_sim(plain, "motor-1", range(40), sim_from=99, spike_from=36)
        (real,) = plain.store.open_alerts()
        assert real.simulated is False
    finally:
        plain.store.close()


async def test_sim_telemetry_over_mqtt_is_stored_simulated_and_published_so(
        broker: PrivateMosquitto, tmp_path: Path) -> None:
    """A running gateway on a real broker: samples published with ``"sim": true`` are stored
    with origin simulated, and the alert they open is published on the gateway's alert topic
    with ``"simulated": true``."""
    gw_id, device = "gw-sim-live", "sim-motor"
    settings = GatewaySettings(
        gateway_id=gw_id, mqtt=broker.gateway_mqtt(), http={"port": free_port()},
        storage={"path": str(tmp_path / "gw.db")}, scoring={"warmup": 8},
        alerts={"open_after": 2})
    published: list[dict[str, object]] = []

    def publish() -> None:
        with Publisher(broker, "pub-sim-live") as pub:
            for _, body in sim_payloads(device, range(40), sim_from=30, spike_from=36):
                pub.publish(topics.telemetry(device), body)

    user, password = broker.fixture_login()  # may read what the gateway publishes
    async with aiomqtt.Client(broker.host, broker.port, identifier="sim-alert-watch",
                              username=user, password=password) as sub:
        await sub.subscribe(topics.alerts(gw_id), qos=1)
        async with running_gateway(settings) as gw:
            await asyncio.to_thread(publish)
            await gw.wait_status(lambda s: s["stored"] >= 40 and s["alerts"] >= 1)
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    published.append(json.loads(bytes(message.payload)))
                    break
    assert published[0]["device"] == device
    assert published[0]["simulated"] is True
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        origins = [o for (o,) in conn.execute(
            "SELECT origin FROM readings WHERE device = ? ORDER BY seq", (device,))]
        marks = conn.execute("SELECT simulated FROM alerts WHERE device = ?",
                             (device,)).fetchall()
    assert origins == ["sensor"] * 30 + ["simulated"] * 10
    assert marks == [(1,)]


@pytest.mark.slow
async def test_panel_entries_and_simulated_alerts_reach_the_cloud_once(
        pg_dsn: str, tmp_path: Path) -> None:
    """A measurement with a note and a note alone, entered on the panel, are stored manual on
    the gateway, listed on the device page, synced, and in the cloud once (a retried batch
    adds nothing); a simulated alert and readings are marked simulated in the cloud."""
    keys, tokens = prepare_db(pg_dsn)
    cloud, base = cloud_serving(pg_dsn, tmp_path)
    g = gateway(tmp_path, "gw-1", sync={"cloud_url": base, "token": tokens["gw-1"]})
    try:
        feed_sim(g, "motor-1", range(40), sim_from=30, spike_from=36)
        async with panel_user(panel(g)) as user:
            await sign_in(user)
            await user.open("/devices/motor-1")
            user.find(marker="manual-temperature_c").type("61.5")
            user.find(marker="manual-note").type("bearing housing warm to the touch")
            user.find(marker="manual-record").click()
            await user.should_see("Recorded 1 value and a note for motor-1, marked manual",
                                  retries=PATIENT)
            user.find(marker="manual-note").type("belt tension checked, fine")
            user.find(marker="manual-record").click()
            await user.should_see("Recorded a note for motor-1", retries=PATIENT)
            await user.should_see("MANUAL · temperature_c = 61.5 · bearing housing warm to "
                                  "the touch", retries=PATIENT)
            await user.should_see("MANUAL · belt tension checked, fine")
            await user.should_see("SIMULATED: 10 of the points drawn carry an injected fault")
            await user.open("/alerts")
            await user.should_see(marker="alert-simulated", retries=PATIENT)
        manual = [r for r in stored(g, "motor-1") if r[2] == "manual"]
        assert manual == [
            (MANUAL_BOOT, 0, "manual", "bearing housing warm to the touch",
             '{"temperature_c":61.5}'),
            (MANUAL_BOOT, 1, "manual", "belt tension checked, fine", "{}")]

        result = await g.uploader.sync_once()
        assert result.outcome == "acked"
        # The ack was lost, say: the gateway sends the identical batch again.
        (last,) = g.store.conn.execute("SELECT max(batch_seq) FROM sync_batches").fetchone()
        resent = g.outbox.load(_info(g, int(last)), "gw-1")
        assert [r.origin for r in resent.readings].count("manual") == 2
        async with httpx.AsyncClient(timeout=10) as http:
            again = await http.post(
                base + SYNC_PATH, content=batchcodec.encode(resent),
                headers={"Authorization": f"Bearer {tokens['gw-1']}",
                         "Content-Type": batchcodec.MEDIA_TYPE, "Content-Encoding": "zstd"})
            again.raise_for_status()
            assert again.json()["first_time"] is False
            viewer = {"Authorization": f"Bearer {keys['viewer']}"}
            page = (await http.get(f"{base}/api/v1/readings",
                                   params={"device": "motor-1", "limit": 100},
                                   headers=viewer)).json()
            only_manual = (await http.get(f"{base}/api/v1/readings", params={
                "device": "motor-1", "origin": "manual"}, headers=viewer)).json()
            stats = (await http.get(f"{base}/api/v1/stats", headers=viewer)).json()
            alerts = (await http.get(f"{base}/api/v1/alerts", params={"device": "motor-1"},
                                     headers=viewer)).json()["alerts"]
        got = [(r["boot"], r["seq"], r["origin"], r["note"], r["metrics"])
               for r in page["readings"] if r["origin"] == "manual"]
        assert got == [(MANUAL_BOOT, 0, "manual", "bearing housing warm to the touch",
                        {"temperature_c": 61.5}),
                       (MANUAL_BOOT, 1, "manual", "belt tension checked, fine", {})]
        assert [r["seq"] for r in only_manual["readings"]] == [0, 1]
        origins = [r["origin"] for r in page["readings"] if r["boot"] == BOOT]
        assert origins == ["sensor"] * 30 + ["simulated"] * 10
        assert stats["per_device"] == {"motor-1": 42}
        assert stats["distinct_readings"] == 42
        (alert,) = alerts
        assert alert["simulated"] is True
    finally:
        await g.uploader.aclose()
        g.store.close()
        cloud.stop()


def _info(g: Gateway, batch_seq: int) -> BatchInfo:
    """The outbox's bookkeeping of a recorded batch."""
    row = g.store.conn.execute(
        "SELECT batch_seq, created_ms, state, n_readings, n_alerts, attempts, kind, "
        "n_aggregates FROM sync_batches WHERE batch_seq = ?", (batch_seq,)).fetchone()
    return BatchInfo(*row)
