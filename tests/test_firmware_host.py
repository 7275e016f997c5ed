"""The ESP32 firmware's host build: its C++ unit tests, and virtual-esp32 nodes on a real broker.

Two ``virtual-esp32`` processes (the firmware core + libmosquitto) publish to a private
Mosquitto; a subscriber with a persistent QoS 1 session stands in for the gateway (swap
``TelemetrySink`` for the real gateway once ``edge/`` ingests). The broker is stopped for a few
seconds and started again: every reading the nodes buffered meanwhile must arrive, none lost.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import PrivateMosquitto
from shared import topics
from tests.fixtures.firmware import BUILD_DIR, TelemetrySink, start_node
from tests.fixtures.waiting import wait_until


def test_core_unit_tests_pass(virtual_esp32: Path) -> None:
    """The C++ core's ctest suite (golden vectors, ring, backoff, config, node) passes."""
    proc = subprocess.run(
        ["ctest", "--test-dir", str(BUILD_DIR), "--output-on-failure"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "100% tests passed" in proc.stdout


def test_two_nodes_survive_broker_outage(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, sink: TelemetrySink
) -> None:
    """Readings buffered while the broker is down all arrive after it is back, none lost."""
    nodes = [
        start_node(
            virtual_esp32,
            fresh_broker,
            dev,
            "--rate-hz",
            "20",
            "--seconds",
            "7",
            "--ring-size",
            "1000",
            "--sync-after-ms",
            "400",
        )
        for dev in ("fw-node-a", "fw-node-b")
    ]
    wait_until(
        lambda: all(len(sink.of(n.device)) >= 10 for n in nodes),
        15,
        "both nodes publishing before the outage",
    )
    fresh_broker.stop()
    time.sleep(3)
    fresh_broker.start()
    results = [n.finish() for n in nodes]

    for n, c in zip(nodes, results, strict=True):
        assert c["exit"] == 0, c
        assert c["disconnects"] >= 1, c  # the outage was seen
        assert c["buffered_max"] >= 40, c  # ~3 s at 20 Hz was kept in the ring
        assert c["dropped_overflow"] == 0, c
        assert c["buffered"] == 0, c
        assert c["unsynced"] >= 1, c  # the first readings predate the clock
        expected = set(range(c["next_seq"]))

        def got_all(dev: str = n.device, boot: str = c["boot"], e: set[int] = expected) -> bool:
            return sink.seqs(dev, boot) >= e

        wait_until(got_all, 20, f"all {len(expected)} readings of {n.device}")
        assert sink.seqs(n.device, c["boot"]) == expected

    assert sink.dead_letters == []
    unsynced = [r for r in sink.readings if not r.synced]
    assert unsynced
    assert all(r.ts_ms == 0 for r in unsynced)
    assert all(r.ts_ms > 1_600_000_000_000 for r in sink.readings if r.synced)
    for r in sink.readings:
        assert set(r.metrics) == {"temperature_c", "vibration_rms_g", "current_a"}


def test_ring_overflow_keeps_newest(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, sink: TelemetrySink
) -> None:
    """With a small ring the oldest readings of the outage are lost, the newest all arrive."""
    node = start_node(
        virtual_esp32,
        fresh_broker,
        "fw-node-small",
        "--rate-hz",
        "20",
        "--seconds",
        "5",
        "--ring-size",
        "20",
    )
    wait_until(lambda: len(sink.of(node.device)) >= 5, 15, "node publishing")
    fresh_broker.stop()
    time.sleep(2.5)
    fresh_broker.start()
    c = node.finish()
    assert c["exit"] == 0, c
    assert c["dropped_overflow"] > 0, c
    assert c["buffered_max"] == 20, c
    sent = set(range(c["next_seq"]))
    wait_until(
        lambda: len(sink.seqs(node.device, c["boot"])) >= len(sent) - c["dropped_overflow"],
        20,
        "readings after the outage",
    )
    missing = sorted(sent - sink.seqs(node.device, c["boot"]))
    # Usually equal; fewer if the broker took a reading whose PUBACK died with it.
    assert 0 < len(missing) <= c["dropped_overflow"]
    # One contiguous gap: the oldest readings of the outage, not the newest.
    assert missing == list(range(missing[0], missing[0] + len(missing)))
    assert missing[-1] + 1 + 20 <= c["next_seq"]
    assert sink.dead_letters == []


def test_retained_config_applied_and_bad_config_rejected(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, sink: TelemetrySink
) -> None:
    """A retained config changes rate and metrics at run time; a bad one is refused."""
    device = "fw-node-cfg"
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cfg-publisher")
    pub.username_pw_set(*fresh_broker.fixture_login())
    pub.connect(fresh_broker.host, fresh_broker.port)
    pub.loop_start()
    try:
        pub.publish(
            topics.config(device), b'{"v":1,"interval_ms":"fast"}', qos=1, retain=True
        ).wait_for_publish(5)
        node = start_node(virtual_esp32, fresh_broker, device, "--rate-hz", "5", "--seconds", "4")
        wait_until(lambda: len(sink.of(device)) >= 3, 10, "node publishing")
        pub.publish(
            topics.config(device),
            b'{"v":1,"interval_ms":50,"enabled":["current_a"]}',
            qos=1,
            retain=True,
        ).wait_for_publish(5)
        c = node.finish()
    finally:
        pub.loop_stop()
        pub.disconnect()
    assert c["exit"] == 0, c
    assert c["config_rejected"] == 1, c
    assert "interval_ms" in c["stderr"]
    assert c["config_applied"] == 1, c
    assert c["interval_ms"] == 50
    wait_until(lambda: len(sink.seqs(device, c["boot"])) == c["next_seq"], 10, "every reading")
    readings = sink.of(device)
    assert len(readings[0].metrics) == 3
    assert set(readings[-1].metrics) == {"current_a"}
    # ~1 s at 5 Hz, then ~3 s at 20 Hz.
    assert c["next_seq"] > 40, c
    statuses = [json.loads(p) for t, p in sink.others if t == topics.status(device)]
    assert any(s.get("interval_ms") == 50 and s["state"] == "online" for s in statuses)
    assert sink.dead_letters == []
