"""Ingest against a real broker: exactly-once storage, redeliveries dropped, persistent session."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.mqtt_session import MqttSession, keep_connected
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
        gateway_id=gateway_id, mqtt=broker.gateway_mqtt(), storage={"path": str(db)},
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
        with Publisher(broker, "pub-ingest-once") as pub:
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
        with Publisher(broker, "pub-ingest-dup") as pub:
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
    with Publisher(fresh_broker, "pub-ingest-restart") as pub:
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
        with Publisher(fresh_broker, "pub-ingest-reconnect") as pub:
            await publish_all(pub, [(topics.telemetry(dev), reading(dev, s)) for s in range(10)])
        status = await gw.wait_status(lambda s: s["stored"] >= 10)
    assert status["duplicates"] == 0
    assert len(stored_keys(db)) == 10


async def test_each_committed_batch_logs_its_stage_timings(
    broker: PrivateMosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.ingest.stages")
    dev = "ing-stages"
    msgs = [(topics.telemetry(dev), reading(dev, s)) for s in range(25)]
    async with running_gateway(settings_for(broker, "gw-ingest-stages", tmp_path / "gw.db")) as gw:
        with Publisher(broker, "pub-ingest-stages") as pub:
            await publish_all(pub, msgs)
        await gw.wait_status(lambda s: s["stored"] >= len(msgs))
    batches = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "edge.ingest.stages"]
    assert sum(b["n"] for b in batches) == len(msgs)
    for b in batches:
        assert len(b["queue_wait_ms"]) == b["n"]  # one wait per message of the batch
        assert min(b["queue_wait_ms"]) >= 0
        stages = [b[f"{name}_ms"] for name in ("decode", "dedupe", "score", "prepare",
                                                 "commit", "ack")]
        assert min(stages) >= 0
        assert b["batch_ms"] >= sum(stages) * 0.999  # the stages are parts of the batch


async def _take(session: MqttSession, stop: asyncio.Event) -> aiomqtt.Message:
    got = await session.wait_message(stop, idle_s=15)
    assert got is not None
    return got.message


async def test_the_session_redelivers_exactly_the_messages_it_did_not_ack(
    fresh_broker: PrivateMosquitto,
) -> None:
    stop = asyncio.Event()
    topic = topics.telemetry("ing-ack")

    def session() -> MqttSession:
        return MqttSession("127.0.0.1", fresh_broker.port, "gw-ingest-ack", keepalive=30,
                           queue_max=100, login=fresh_broker.gateway_login())

    async with session() as s:
        await s.subscribe([(topic, 1)])
        with Publisher(fresh_broker, "pub-ingest-ack") as pub:
            await publish_all(pub, [(topic, "first"), (topic, "second")])
        first, second = await _take(s, stop), await _take(s, stop)
        assert (first.payload, second.payload) == (b"first", b"second")
        s.ack(first)  # "second" stays unacked, as if the gateway died before its commit
    async with session() as s:
        await s.subscribe([(topic, 1)])
        with Publisher(fresh_broker, "pub-ingest-ack") as pub:
            await publish_all(pub, [(topic, "marker")])
        again = [await _take(s, stop), await _take(s, stop)]
        for m in again:
            s.ack(m)
    # The unacked message came back, before the marker; the acked one did not.
    assert [m.payload for m in again] == [b"second", b"marker"]


async def test_reconnect_attempts_are_logged_before_and_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge.mqtt_session")
    stop = asyncio.Event()
    attempts = 0
    port = free_port()  # nothing listens there

    async def connect() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 3:
            stop.set()  # the third failure ends the retrying instead of scheduling a fourth
        async with MqttSession("127.0.0.1", port, "gw-ingest-nobroker", keepalive=5,
                               queue_max=10):
            pass

    await keep_connected(connect, stop, name="ingest-test", retry_on=(aiomqtt.MqttError,),
                         max_wait_s=0.05)
    assert attempts == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.mqtt_session"]
    for n in (1, 2, 3):
        assert f"ingest-test: connecting (attempt {n})" in lines
        assert any(line.startswith(f"ingest-test: attempt {n} ended after") for line in lines)
    assert sum(line.startswith("ingest-test: reconnecting in") for line in lines) == 2
