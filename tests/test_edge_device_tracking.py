"""Device clocks re-timed, seq gaps counted (and un-counted), device health, degraded mode."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.alert_lifecycle import AlertTracker
from edge.device_tracking import DeviceTracker
from edge.pipeline import Pipeline
from edge.score import RuleScorer
from edge.service import Gateway, run_gateway
from edge.settings import GatewaySettings
from edge.store import Store
from edge.timing import BootClock, retime
from edge.validate import Incoming
from shared import topics
from shared.schemas import Telemetry
from simulator.fleet import Fleet
from tests.fixtures.gateway import Publisher, RunningGateway, running_gateway

T0 = 1_700_000_000_000
TOL = 60_000


def test_a_synced_clock_in_tolerance_is_kept() -> None:
    clock = BootClock()
    assert retime(clock, ts_ms=T0 + 5_000, uptime_ms=5_000, synced=True, received_ms=T0 + 5_020,
                  tolerance_ms=TOL) == (T0 + 5_000, "device")
    assert clock.device_epoch_ms == T0


def test_a_skewed_clock_is_corrected_from_the_gateway_clock() -> None:
    clock = BootClock()
    # The device believes it is an hour later than it is.
    ts, source = retime(clock, ts_ms=T0 + 3_600_000 + 5_000, uptime_ms=5_000, synced=True,
                        received_ms=T0 + 5_010, tolerance_ms=TOL)
    assert (ts, source) == (T0 + 5_010, "corrected")  # the gateway clock at receipt
    assert clock.device_epoch_ms is None  # a skewed clock teaches nothing


def test_unsynced_readings_are_retimed_from_uptime_then_from_the_learnt_boot_epoch() -> None:
    clock = BootClock()
    # Before any synced reading: gateway epoch estimate (received - uptime).
    assert retime(clock, ts_ms=0, uptime_ms=1_000, synced=False, received_ms=T0 + 1_050,
                  tolerance_ms=TOL) == (T0 + 1_050, "uptime")
    # A synced reading teaches the boot epoch (its device clock says boot was at T0 + 30).
    retime(clock, ts_ms=T0 + 30 + 2_000, uptime_ms=2_000, synced=True, received_ms=T0 + 2_060,
           tolerance_ms=TOL)
    # A late unsynced reading of the same boot (held by the broker) is placed exactly.
    assert retime(clock, ts_ms=0, uptime_ms=1_500, synced=False, received_ms=T0 + 900_000,
                  tolerance_ms=TOL) == (T0 + 30 + 1_500, "boot")


def test_a_backlog_delivered_late_is_not_mistaken_for_skew() -> None:
    clock = BootClock()
    retime(clock, ts_ms=T0 + 1_000, uptime_ms=1_000, synced=True, received_ms=T0 + 1_010,
           tolerance_ms=TOL)
    # Gateway down for 20 minutes: the broker delivers a reading taken long ago.
    assert retime(clock, ts_ms=T0 + 60_000, uptime_ms=60_000, synced=True,
                  received_ms=T0 + 1_260_000, tolerance_ms=TOL) == (T0 + 60_000, "device")


def telemetry(device: str, seq: int, boot: str = "0badc0de", synced: bool = True) -> bytes:
    """A motor reading taken at T0 + seq seconds."""
    return json.dumps({"v": 1, "device": device, "boot": boot, "seq": seq,
                       "ts_ms": T0 + seq * 1000 if synced else 0, "uptime_ms": seq * 1000,
                       "synced": synced, "type": "motor",
                       "metrics": {"temperature_c": 50.0, "vibration_rms_g": 1.0,
                                   "current_a": 9.0}}).encode()


def test_seq_gaps_are_counted_per_boot_and_uncounted_when_filled(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gw.db")
    health = DeviceTracker(TOL)
    pipe = Pipeline(store, RuleScorer(), AlertTracker(), "gw-gaps", health=health)
    topic = topics.telemetry("gap-dev")

    def send(*seqs: int, boot: str = "0badc0de") -> None:
        pipe.handle([Incoming(topic, telemetry("gap-dev", s, boot), T0 + s * 1000 + 5)
                     for s in seqs])

    send(*[s for s in range(10) if s not in {3, 4, 7}])
    assert health.seq_gaps() == 3
    send(4)  # a late redelivery fills a gap
    assert health.seq_gaps() == 2
    send(4, 5)  # duplicates change nothing
    assert health.seq_gaps() == 2
    send(0, 1, 5, boot="feedf00d")  # a new boot: seq restarts, its own gaps
    assert health.device_gaps() == {"gap-dev": 2 + 3}
    # The accounting survives a restart of the gateway.
    reloaded = DeviceTracker(TOL)
    reloaded.load(store.boots())
    assert reloaded.seq_gaps() == 5
    rows = store.conn.execute("SELECT time_source, count(*) FROM readings GROUP BY 1").fetchall()
    assert rows == [("device", 11)]
    store.close()


def test_unsynced_readings_are_stored_retimed_with_their_source(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gw.db")
    pipe = Pipeline(store, RuleScorer(), AlertTracker(), "gw-retime")
    topic = topics.telemetry("rt-dev")
    pipe.handle([Incoming(topic, telemetry("rt-dev", 1, synced=False), T0 + 1_000 + 40)])
    pipe.handle([Incoming(topic, telemetry("rt-dev", 2), T0 + 2_000 + 40)])
    pipe.handle([Incoming(topic, telemetry("rt-dev", 3, synced=False), T0 + 9_000)])
    rows = store.conn.execute(
        "SELECT seq, ts_ms, device_ts_ms, time_source FROM readings ORDER BY seq").fetchall()
    assert rows == [(1, T0 + 1_040, None, "uptime"), (2, T0 + 2_000, T0 + 2_000, "device"),
                    (3, T0 + 3_000, None, "boot")]
    store.close()


async def _devices(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    resp = await gw.http.get(f"{gw.base_url}/api/devices")
    resp.raise_for_status()
    return {d["device"]: d for d in resp.json()["devices"]}


async def test_devices_endpoint_shows_online_offline_last_seen_rate_and_gaps(
    fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    # A broker of its own: the fleet's retained status messages must not reach other tests.
    broker = fresh_broker
    settings = GatewaySettings(
        gateway_id="gw-devhealth", mqtt=broker.gateway_mqtt(),
        storage={"path": str(tmp_path / "gw.db")}, http={"port": free_port()})
    async with running_gateway(settings) as gw:
        fleet = Fleet(broker.host, broker.port, n_devices=2, rate_hz=20, profile="motor",
                      seed=7, id_prefix="dh-",
                      login=broker.fixture_device_login)
        await asyncio.to_thread(fleet.start)
        try:
            await gw.wait_status(lambda s: s["stored"] >= 20)
            await asyncio.to_thread(fleet.crash, "dh-motor-001")  # last will: offline
            await gw.wait_status(lambda s: s["statuses"] >= 3)
        finally:
            await asyncio.to_thread(fleet.stop)
        with Publisher(broker, "pub-devhealth") as pub:
            # seqs 0 and 5 of a new device: 4 readings never arrived.
            for seq in (0, 5):
                await asyncio.to_thread(pub.publish, topics.telemetry("dh-gappy"),
                                        telemetry("dh-gappy", seq))
        await gw.wait_status(lambda s: s["seq_gaps"] >= 4)
        devices = await _devices(gw)
        metrics = (await gw.http.get(f"{gw.base_url}/metrics")).text
    crashed = devices["dh-motor-001"]
    assert crashed["state"] == "offline"
    assert crashed["last_seen_ms"] > 0
    assert crashed["rate_per_s"] > 0
    assert devices["dh-gappy"]["seq_gaps"] == 4
    assert "smaint_gateway_seq_gaps 4.0" in metrics
    assert "smaint_gateway_degraded 0.0" in metrics


@pytest.mark.expected_errors("edge.ingest", r"entering degraded mode")
async def test_a_full_disk_degrades_the_gateway_visibly_and_it_recovers(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    settings = GatewaySettings(
        gateway_id="gw-diskfull", mqtt=broker.gateway_mqtt(),
        storage={"path": str(db), "degraded_retry_s": 0.2}, http={"port": free_port()})
    gateway = Gateway(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings, stop, gateway))
    dev = "full-dev"
    topic = topics.telemetry(dev)
    try:
        async with _client(settings, task, stop) as gw:
            with Publisher(broker, "pub-diskfull") as pub:
                await asyncio.to_thread(pub.publish, topic, telemetry(dev, 0))
                await gw.wait_status(lambda s: s["stored"] >= 1)
                # A real SQLITE_FULL: the database may not grow by a single page any more.
                (pages,) = gateway.store.conn.execute("PRAGMA page_count").fetchone()
                gateway.store.conn.execute(f"PRAGMA max_page_count = {pages}")
                # Enough readings that they cannot all fit in the pages left free.
                for seq in range(1, 400):
                    await asyncio.to_thread(pub.publish, topic, telemetry(dev, seq))
                status = await gw.wait_status(lambda s: s["status"] == "degraded")
                healthz = await gw.http.get(f"{gw.base_url}/healthz")
                metrics = (await gw.http.get(f"{gw.base_url}/metrics")).text
                assert "SQLITE_FULL" in status["degraded_reason"]
                assert healthz.status_code == 503
                assert "degraded: SQLITE_FULL" in healthz.text
                assert "smaint_gateway_degraded 1.0" in metrics
                assert not task.done()  # degraded, not crashed
                # Space again: the gateway leaves degraded mode, the broker resends the rest.
                gateway.store.conn.execute("PRAGMA max_page_count = 1073741823")
                final = await gw.wait_status(
                    lambda s: s["status"] == "ok" and s["stored"] >= 400, timeout_s=20)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
    assert final["degraded_reason"] is None
    with sqlite3.connect(db) as conn:
        seqs = [s for (s,) in conn.execute(
            "SELECT seq FROM readings WHERE device = ? ORDER BY seq", (dev,))]
    assert seqs == list(range(400))  # nothing lost while degraded, nothing twice


def _client(settings: GatewaySettings, task: asyncio.Task[None],
            stop: asyncio.Event) -> _GatewayClient:
    return _GatewayClient(settings, task, stop)


class _GatewayClient:
    """A RunningGateway for a gateway task the test started itself, once it is connected."""

    def __init__(self, settings: GatewaySettings, task: asyncio.Task[None],
                 stop: asyncio.Event) -> None:
        import httpx  # noqa: PLC0415

        self._http = httpx.AsyncClient(timeout=5.0)
        self.gw = RunningGateway(settings, task, stop, self._http)

    async def __aenter__(self) -> RunningGateway:
        await self.gw.wait_status(lambda s: bool(s.get("mqtt_connected")), timeout_s=15.0)
        return self.gw

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()


def test_a_rate_counts_over_the_seconds_seen_while_they_are_fewer_than_a_minute() -> None:
    tracker = DeviceTracker()
    t = [Telemetry.model_validate({
        "v": 1, "device": "rate-dev", "boot": "0123abcd", "seq": seq, "ts_ms": 1, "uptime_ms": 1,
        "synced": True, "type": "motor", "metrics": {"temperature_c": 40.0}})
        for seq in range(12)]
    tracker.stage([(r, 1) for r in t])
    tracker.commit()
    # All 12 within the first second counted: 12/s, not 12/60 (the rate a minute in).
    assert tracker.rate("rate-dev") in (12.0, 6.0)  # 6.0 if the second ticked meanwhile
    assert tracker.ingest_rate() == tracker.rate("rate-dev")
