"""Firmware and gateway together: two virtual-esp32 nodes, the real gateway, a broker outage."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.settings import GatewaySettings
from tests.fixtures.firmware import start_node
from tests.fixtures.gateway import running_gateway

pytestmark = pytest.mark.slow


async def test_gateway_stores_every_buffered_reading_of_two_nodes_across_an_outage(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    settings = GatewaySettings(
        gateway_id="gw-firmware", mqtt=fresh_broker.gateway_mqtt(), storage={"path": str(db)},
        http={"port": free_port()})
    async with running_gateway(settings) as gw:
        nodes = [
            start_node(virtual_esp32, fresh_broker, dev, "--rate-hz", "20", "--seconds", "7",
                       "--ring-size", "1000", "--sync-after-ms", "400")
            for dev in ("fw-gw-a", "fw-gw-b")
        ]
        await gw.wait_status(lambda s: s["stored"] >= 20, timeout_s=15)
        fresh_broker.stop()
        await asyncio.sleep(3)
        fresh_broker.start()
        results = await asyncio.gather(*(asyncio.to_thread(n.finish) for n in nodes))
        expected = {
            (n.device, str(c["boot"]), seq)
            for n, c in zip(nodes, results, strict=True)
            for seq in range(int(c["next_seq"]))
        }
        for c in results:
            assert c["exit"] == 0, c
            assert c["disconnects"] >= 1, c  # the nodes did see the outage
            assert c["buffered_max"] >= 40, c  # and buffered through it
            assert c["dropped_overflow"] == 0, c
        status = await gw.wait_status(lambda s: s["stored"] >= len(expected), timeout_s=30)
    assert status["dead_letters"] == 0
    with sqlite3.connect(db) as conn:
        stored = [(d, b, int(s)) for d, b, s in conn.execute(
            "SELECT device, boot, seq FROM readings")]
        unsynced = conn.execute(
            "SELECT count(*) FROM readings WHERE device_ts_ms IS NULL").fetchone()[0]
    assert len(stored) == len(set(stored))
    assert set(stored) == expected
    assert unsynced >= 1  # readings from before the node's clock sync were kept, not dropped
