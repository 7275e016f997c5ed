"""Acceptance (issue 9): readings the gateway folded under its disk budget while the cloud was
down reach PostgreSQL as per-minute aggregates; with the raw readings that did get through,
every minute of every device is there exactly once, and the gateway's backlog drains to zero.

Broker, gateway and PostgreSQL are real; the cloud runs as its own process
(``python -m cloud serve``) so that it can be killed and started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cloud.access.gateway_tokens import create_gateway
from cloud.db.migrate import migrate
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.settings import GatewaySettings
from shared import topics
from tests.fixtures.gateway import Publisher, RunningGateway, running_gateway
from tests.fixtures.process import ServiceProcess

pytestmark = pytest.mark.slow

GATEWAY = "gw-aggregates"
DEVICES = ("agg-motor-1", "agg-motor-2", "agg-motor-3")
ONLINE = range(0, 120)  # published while the cloud is up: they reach it raw
OUTAGE = range(120, 1200)  # published while it is down: the disk budget forces folding
# Every reading's metrics; the values vary within a minute so a wrong fold shows in the sums.
METRICS = ("temperature_c", "vibration_rms_g", "current_a")

Key = tuple[str, int]  # (device, minute_ms)


def values(dev: int, seq: int) -> dict[str, float]:
    """Exactly representable values (quarters), distinct per device and seq."""
    return {"temperature_c": 40.0 + (seq % 60) * 0.25 + dev, "vibration_rms_g": 1.0 + seq % 7,
            "current_a": 10.0 + (seq % 4) * 0.5}


class Devices:
    """Three devices, one reading per device second, in the past; what they published."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.broker = broker
        # Whole minutes, two hours back: all readings lie in the past, minutes line up.
        self.base_ms = (time.time_ns() // 1_000_000 - 7_200_000) // 60_000 * 60_000
        self.count: dict[Key, int] = defaultdict(int)
        self.sums: dict[tuple[str, int, str], float] = defaultdict(float)

    def publish(self, seqs: range) -> int:
        """Publish ``seqs`` of every device at QoS 1 (each PUBACKed); how many messages."""
        n = 0
        with Publisher(self.broker, f"pub-{GATEWAY}-{seqs.start}") as pub:
            for seq in seqs:
                for i, dev in enumerate(DEVICES):
                    ts = self.base_ms + seq * 1000
                    metrics = values(i, seq)
                    pub.publish(topics.telemetry(dev), json.dumps({
                        "v": 1, "device": dev, "boot": f"0000000{i}", "seq": seq, "ts_ms": ts,
                        "uptime_ms": seq * 1000, "synced": True, "type": "motor",
                        "metrics": metrics}))
                    minute = ts // 60_000 * 60_000
                    self.count[(dev, minute)] += 1
                    for m, v in metrics.items():
                        self.sums[(dev, minute, m)] += v
                    n += 1
        return n


def cloud_minutes(dsn: str) -> tuple[dict[Key, int], dict[tuple[str, int, str], float],
                                     dict[tuple[str, int, str], tuple[int, float]], int]:
    """Raw readings per (device, minute), their per-metric sums, the aggregates, duplicates."""
    raw: dict[Key, int] = defaultdict(int)
    raw_sums: dict[tuple[str, int, str], float] = defaultdict(float)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, metrics FROM readings "
            "WHERE device_id = ANY(%s)", (list(DEVICES),)).fetchall()
        (dupes,) = conn.execute(
            "SELECT count(*) - count(DISTINCT (device_id, boot_id, seq)) FROM readings"
        ).fetchone() or (0,)
        aggs = {(d, int(minute), m): (int(n), float(s)) for d, m, minute, n, s in conn.execute(
            "SELECT device_id, metric, (extract(epoch FROM minute) * 1000)::bigint, n, sum "
            "FROM reading_aggregates WHERE gateway_id = %s", (GATEWAY,))}
    for dev, ts, metrics in rows:
        minute = int(ts) // 60_000 * 60_000
        raw[(dev, minute)] += 1
        for m, v in metrics.items():
            raw_sums[(dev, minute, m)] += float(v)
    return raw, raw_sums, aggs, int(dupes)


async def test_folded_readings_reach_the_cloud_every_minute_once(
    pg_dsn: str, fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        token = create_gateway(conn, GATEWAY)
    cloud_port = free_port()
    cloud = ServiceProcess([sys.executable, "-m", "cloud", "serve", "--port", str(cloud_port),
                            "--dsn", pg_dsn],
                           {**os.environ, "SMAINT_CLOUD_LOGGING__LEVEL": "WARNING"},
                           tmp_path / "cloud.log", cloud_port)
    settings = GatewaySettings(
        gateway_id=GATEWAY, mqtt=fresh_broker.gateway_mqtt(), http={"port": free_port()},
        # Small batches: the batch frozen when the cloud went away holds few readings, so
        # retention can fold the rest.
        sync={"cloud_url": f"http://127.0.0.1:{cloud_port}", "token": token, "interval_s": 0.2,
              "retry_attempts": 2, "retry_max_s": 0.2, "batch_max": 200, "backlog_max": 500},
        storage={"path": str(tmp_path / "gw.db"), "max_mb": 0.4, "retention_interval_s": 0.1},
        # The devices publish 20 minutes of readings in seconds: keep their timestamps as
        # published (no re-timing), so minutes compare one to one with what was published.
        ingest={"skew_tolerance_ms": 10**12})
    devices = Devices(fresh_broker)
    await asyncio.to_thread(cloud.start)
    try:
        async with running_gateway(settings) as gw:
            sent = await asyncio.to_thread(devices.publish, ONLINE)
            online = await gw.wait_status(
                lambda s: s["stored"] == sent and s["sync_backlog"] == 0, timeout_s=60)
            assert online["synced"] == sent  # all raw, nothing folded yet
            await asyncio.to_thread(cloud.kill)
            sent += await asyncio.to_thread(devices.publish, OUTAGE)
            down: dict[str, Any] = await gw.wait_status(
                lambda s: s["stored"] == sent and s["retention"]["aggregated"] > 0,
                timeout_s=60)
            assert down["sync_backlog"] > 0
            await asyncio.to_thread(cloud.start)
            drained = await wait_drained(gw, timeout_s=120)
    finally:
        cloud.stop()
    assert drained["dead_letters"] == 0
    assert drained["retention"]["aggregated"] > 0
    raw, raw_sums, aggs, dupes = cloud_minutes(pg_dsn)
    assert dupes == 0
    assert aggs, "nothing folded reached the cloud"
    assert {(d, t) for d, t, _ in aggs} <= set(devices.count)  # no aggregate of another minute
    for (dev, minute), published in devices.count.items():
        for m in METRICS:
            n, total = aggs.get((dev, minute, m), (0, 0.0))
            # Every reading of the minute is in the cloud once: raw or inside the aggregate.
            assert raw[(dev, minute)] + n == published, (dev, minute, m)
            assert raw_sums[(dev, minute, m)] + total == pytest.approx(
                devices.sums[(dev, minute, m)]), (dev, minute, m)


async def wait_drained(gw: RunningGateway, timeout_s: float) -> dict[str, Any]:
    """Wait until the gateway's backlog (readings and aggregates) is back to zero."""
    return await gw.wait_status(lambda s: s["sync_backlog"] == 0 and not s["last_sync_error"],
                                timeout_s=timeout_s)
