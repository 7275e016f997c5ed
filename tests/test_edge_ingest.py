"""Ingest against a real broker: exactly-once storage, redeliveries dropped, persistent session."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.settings import GatewaySettings
from shared import topics
from tests.fixtures.gateway import Publisher, running_gateway


def reading(device: str, seq: int, boot: str = "0badc0de") -> str:
    """A valid motor reading as JSON."""
    msg: dict[str, Any] = {
        "v": 1, "device": device, "boot": boot, "seq": seq, "ts_ms": 1_700_000_000_000 + seq,
        "uptime_ms": seq, "synced": seq % 2 == 0, "type": "motor",
        "metrics": {"temperature_c": 60.0 + seq % 3, "vibration_rms_g": 0.8, "current_a": 9.5},
    }
    return json.dumps(msg)


def settings_for(broker: PrivateMosquitto, gateway_id: str, db: Path) -> GatewaySettings:
    """Gateway settings for one test: own id, own database, free HTTP port, no sync."""
    return GatewaySettings(
        gateway_id=gateway_id, mqtt={"port": broker.port}, storage={"path": str(db)},
        http={"port": free_port()})


def stored_keys(db: Path) -> list[tuple[str, str, int]]:
    """Every stored (device, boot, seq), including repeats if there were any."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT device, boot, seq FROM readings ORDER BY device, boot, seq")
        return [(d, b, int(s)) for d, b, s in rows]


async def publish_all(pub: Publisher, messages: list[tuple[str, str]]) -> None:
    """Publish (topic, payload) pairs from a worker thread (paho blocks)."""
    def _run() -> None:
        for topic, payload in messages:
            pub.publish(topic, payload)
    await asyncio.to_thread(_run)


async def test_readings_from_several_devices_are_stored_exactly_once(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    devices = ["ing-a", "ing-b", "ing-c"]
    msgs = [(topics.telemetry(d), reading(d, seq)) for seq in range(40) for d in devices]
    async with running_gateway(settings_for(broker, "gw-ingest-once", db)) as gw:
        with Publisher("127.0.0.1", broker.port, "pub-ingest-once") as pub:
            await publish_all(pub, msgs)
        status = await gw.wait_status(lambda s: s["received"] >= len(msgs))
    assert status["stored"] == len(msgs)
    assert status["duplicates"] == 0
    keys = stored_keys(db)
    assert len(keys) == len(set(keys)) == len(msgs)
    with sqlite3.connect(db) as conn:
        (unsynced_ts,) = conn.execute(
            "SELECT count(*) FROM readings WHERE device_ts_ms IS NULL").fetchone()
        devices_seen = conn.execute("SELECT device FROM devices ORDER BY device").fetchall()
    assert unsynced_ts == len(msgs) // 2  # odd seqs claimed an unsynced clock
    assert [d for (d,) in devices_seen] == devices


async def test_a_redelivered_reading_is_dropped_and_counted(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    dev = "ing-dup"
    async with running_gateway(settings_for(broker, "gw-ingest-dup", db)) as gw:
        with Publisher("127.0.0.1", broker.port, "pub-ingest-dup") as pub:
            await publish_all(pub, [(topics.telemetry(dev), reading(dev, 1)),
                                    (topics.telemetry(dev), reading(dev, 2))])
            await gw.wait_status(lambda s: s["stored"] >= 2)
            # The same (device, boot, seq) again, as after a lost ack; a new boot is not a dup.
            await publish_all(pub, [(topics.telemetry(dev), reading(dev, 1)),
                                    (topics.telemetry(dev), reading(dev, 2)),
                                    (topics.telemetry(dev), reading(dev, 1, boot="feedf00d"))])
        status = await gw.wait_status(lambda s: s["received"] >= 5)
    assert status["stored"] == 3
    assert status["duplicates"] == 2
    assert stored_keys(db) == [(dev, "0badc0de", 1), (dev, "0badc0de", 2),
                               (dev, "feedf00d", 1)]


async def test_messages_published_while_the_gateway_is_down_arrive_after_restart(
    fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    dev = "ing-offline"
    settings = settings_for(fresh_broker, "gw-ingest-restart", db)
    with Publisher("127.0.0.1", fresh_broker.port, "pub-ingest-restart") as pub:
        async with running_gateway(settings) as gw:
            await publish_all(pub, [(topics.telemetry(dev), reading(dev, s)) for s in range(5)])
            await gw.wait_status(lambda s: s["stored"] >= 5)
        # Gateway down: the broker queues for its persistent session.
        await publish_all(pub, [(topics.telemetry(dev), reading(dev, s)) for s in range(5, 30)])
        # Even a broker restart in between keeps the queue (persistence in mosquitto.conf).
        await asyncio.to_thread(fresh_broker.restart)
        async with running_gateway(settings) as gw:
            status = await gw.wait_status(lambda s: s["stored"] >= 30)
    assert status["duplicates"] == 0
    assert stored_keys(db) == [(dev, "0badc0de", s) for s in range(30)]


async def test_gateway_reconnects_when_the_broker_restarts(
    fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    dev = "ing-reconnect"
    async with running_gateway(settings_for(fresh_broker, "gw-ingest-reconnect", db)) as gw:
        await asyncio.to_thread(fresh_broker.stop)
        await gw.wait_status(lambda s: not s["mqtt_connected"])
        await asyncio.to_thread(fresh_broker.start)
        await gw.wait_status(lambda s: s["mqtt_connected"], timeout_s=15)
        with Publisher("127.0.0.1", fresh_broker.port, "pub-ingest-reconnect") as pub:
            await publish_all(pub, [(topics.telemetry(dev), reading(dev, s)) for s in range(10)])
        status = await gw.wait_status(lambda s: s["stored"] >= 10)
    assert status["duplicates"] == 0
    assert len(stored_keys(db)) == 10
