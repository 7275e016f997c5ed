"""Alert lifecycle on a running gateway: published on its MQTT alert topic, acknowledged locally."""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.settings import GatewaySettings
from shared import topics
from shared.schemas import Alert
from tests.fixtures.gateway import Publisher, running_gateway

GATEWAY = "gw-alerts"
DEVICE = "al-motor-1"


class AlertListener:
    """A paho subscriber on the gateway's alert topic (QoS 1), collecting parsed Alerts."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.alerts: queue.Queue[Alert] = queue.Queue()
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="al-listener")
        self._client.on_message = lambda _c, _u, msg: self.alerts.put(
            Alert.model_validate_json(msg.payload))
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.username_pw_set(*broker.fixture_login())
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe(topics.alerts(GATEWAY), qos=1)
        assert subscribed.wait(10), "no SUBACK from the broker"

    async def next(self) -> Alert:
        """The next alert version published (10 s at most)."""
        return await asyncio.to_thread(self.alerts.get, True, 10)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def reading(seq: int, temperature: float) -> str:
    """A motor reading with the given temperature and quiet other metrics."""
    msg: dict[str, Any] = {
        "v": 1, "device": DEVICE, "boot": "0badc0de", "seq": seq,
        "ts_ms": 1_700_000_000_000 + 1000 * seq, "uptime_ms": 1000 * seq, "synced": True,
        "type": "motor",
        "metrics": {"temperature_c": temperature, "vibration_rms_g": 0.8, "current_a": 9.5},
    }
    return json.dumps(msg)


def stored_alert(db: Path, alert_id: str) -> tuple[str, int, int]:
    """(state, updated_ms, dirty) of an alert row."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT state, updated_ms, dirty FROM alerts WHERE alert_id = ?",
                           (alert_id,)).fetchone()
    return str(row[0]), int(row[1]), int(row[2])


async def test_alert_versions_are_published_and_an_open_alert_is_acknowledged_locally(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    settings = GatewaySettings(
        gateway_id=GATEWAY, mqtt=broker.gateway_mqtt(), storage={"path": str(db)},
        http={"port": free_port()},
        scoring={"models_dir": str(tmp_path / "models"), "warmup": 4},
        alerts={"open_after": 2, "resolve_after": 2})
    # Normal, a run of three 150 °C spikes (opens after two), then normal again (resolves).
    temps = [60.0 + 0.1 * (s % 5) for s in range(12)] + [150.0] * 3 + [60.2] * 4
    listener = AlertListener(broker)
    try:
        async with running_gateway(settings) as gw:
            with Publisher(broker, "pub-alerts") as pub:
                def send(seqs: range) -> None:
                    for s in seqs:
                        pub.publish(topics.telemetry(DEVICE), reading(s, temps[s]))

                await asyncio.to_thread(send, range(15))
                opened = await listener.next()
                assert (opened.device, opened.state, opened.scorer) == (DEVICE, "open", "stat")
                assert opened.severity == "high"  # z far beyond 4x the threshold
                assert max(opened.explanation, key=lambda m: opened.explanation[m]) == (
                    "temperature_c")
                await gw.wait_status(lambda s: s["stored"] >= 15)
                assert stored_alert(db, opened.alert_id)[0] == "open"

                url = f"{gw.base_url}/api/alerts/{opened.alert_id}/ack"
                resp = await gw.http.post(url, headers=gw.api_headers)
                assert resp.status_code == 200
                acked = Alert.model_validate(resp.json())
                assert acked.state == "acknowledged"
                assert acked.updated_ms > opened.updated_ms
                published = await listener.next()
                assert published == acked
                # Stored and flagged for the next upload (dirty), whatever sync did before.
                assert stored_alert(db, opened.alert_id) == ("acknowledged", acked.updated_ms, 1)
                # A double click changes nothing.
                again = await gw.http.post(url, headers=gw.api_headers)
                assert Alert.model_validate(again.json()) == acked
                metrics = (await gw.http.get(f"{gw.base_url}/metrics")).text
                assert "smaint_gateway_alerts_acknowledged_total 1.0" in metrics
                assert "smaint_gateway_alert_publish_dropped_total 0.0" in metrics
                missing = await gw.http.post(f"{gw.base_url}/api/alerts/0000dead/ack",
                                             headers=gw.api_headers)
                assert missing.status_code == 404

                await asyncio.to_thread(send, range(15, 19))
                resolved = await listener.next()
                assert resolved.alert_id == opened.alert_id
                assert resolved.state == "resolved"
                assert resolved.resolved_ms is not None
                assert resolved.resolved_ms >= resolved.opened_ms
                late = await gw.http.post(url, headers=gw.api_headers)
                assert late.status_code == 409
                status = await gw.wait_status(lambda s: s["stored"] >= 19)
        assert status["alerts"] == 1
        assert listener.alerts.empty()  # nothing published twice
        assert stored_alert(db, opened.alert_id)[0] == "resolved"
    finally:
        listener.close()


async def test_ack_route_refuses_get(broker: PrivateMosquitto, tmp_path: Path) -> None:
    settings = GatewaySettings(
        gateway_id="gw-alerts-get", mqtt=broker.gateway_mqtt(),
        storage={"path": str(tmp_path / "gw.db")}, http={"port": free_port()})
    async with running_gateway(settings) as gw:
        resp = await gw.http.get(f"{gw.base_url}/api/alerts/0000dead/ack")
    assert resp.status_code == 405
