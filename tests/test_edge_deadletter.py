"""A running gateway dead-letters every kind of bad message, stores the good ones, keeps going."""

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


def reading(device: str, seq: int | str, **changes: Any) -> dict[str, Any]:
    """A valid motor reading as a device would send it."""
    msg: dict[str, Any] = {
        "v": 1, "device": device, "boot": "0123abcd", "seq": seq, "ts_ms": 1_700_000_000_000,
        "uptime_ms": 1000 * seq, "synced": True, "type": "motor",
        "metrics": {"temperature_c": 55.0, "vibration_rms_g": 1.2, "current_a": 12.0},
    }
    msg.update(changes)
    return msg


async def test_bad_messages_are_dead_lettered_and_the_gateway_keeps_running(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    settings = GatewaySettings(
        gateway_id="gw-deadletter", mqtt=broker.gateway_mqtt(), storage={"path": str(db)},
        http={"port": free_port()})
    dev = "dl-motor-1"
    topic = topics.telemetry(dev)
    missing = reading(dev, 1)
    del missing["boot"]
    bad = [
        (b"{not json", "payload is not valid JSON", None),
        (json.dumps(missing).encode(), "missing field 'boot'", "boot"),
        (json.dumps(reading(dev, "2")).encode(), "field 'seq'", "seq"),
        (json.dumps(reading(dev, 3, metrics={"temperature_c": 900.0})).encode(),
         "outside the physical range", "metrics.temperature_c"),
    ]
    async with running_gateway(settings) as gw:
        with Publisher(broker, "pub-deadletter") as pub:
            for payload, _, _ in bad:
                await asyncio.to_thread(pub.publish, topic, payload)
            for seq in range(10, 15):
                await asyncio.to_thread(pub.publish, topic, json.dumps(reading(dev, seq)))
        status = await gw.wait_status(lambda s: s["stored"] >= 5 and s["dead_letters"] >= 4)
        assert status["received"] == 9
        assert not gw.task.done()
        healthz = await gw.http.get(f"{gw.base_url}/healthz")
        assert healthz.status_code == 200
        metrics = (await gw.http.get(f"{gw.base_url}/metrics")).text
        assert "smaint_gateway_dead_letters_total 4.0" in metrics
    with sqlite3.connect(db) as conn:
        letters = conn.execute(
            "SELECT topic, payload, reason, field FROM dead_letters ORDER BY id").fetchall()
        stored = [s for (s,) in conn.execute(
            "SELECT seq FROM readings WHERE device = ? ORDER BY seq", (dev,))]
    assert len(letters) == len(bad)
    for (l_topic, l_payload, l_reason, l_field), (payload, reason, field) in zip(
            letters, bad, strict=True):
        assert l_topic == topic
        assert l_payload == payload  # kept verbatim for diagnosis
        assert reason in l_reason
        assert l_field == field
    assert stored == [10, 11, 12, 13, 14]


async def test_status_endpoint_reports_the_contract_keys(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    settings = GatewaySettings(
        gateway_id="gw-statuskeys", mqtt=broker.gateway_mqtt(),
        storage={"path": str(tmp_path / "gw.db")}, http={"port": free_port()})
    async with running_gateway(settings) as gw:
        status = await gw.status()
        with Publisher(broker, "pub-statuskeys") as pub:
            online = {"v": 1, "device": "sk-dev", "boot": "0123abcd", "state": "online",
                      "ts_ms": 0, "type": "motor", "fw": "1.0.0"}
            await asyncio.to_thread(pub.publish, topics.status("sk-dev"), json.dumps(online))
        after = await gw.wait_status(lambda s: s["statuses"] >= 1)
    for key in ("received", "stored", "duplicates", "dead_letters", "scored", "synced",
                "sync_backlog", "alerts", "mqtt_connected"):
        assert key in status, key
    assert after["devices"] == 1
    with sqlite3.connect(tmp_path / "gw.db") as conn:
        assert conn.execute("SELECT state, fw FROM devices").fetchall() == [("online", "1.0.0")]
