"""Acceptance: every published reading reaches PostgreSQL exactly once through cloud outages,
a cloud killed in the middle of a batch transaction and a gateway killed mid-upload.

Gateway and cloud run as real processes (``python -m edge run``, ``python -m cloud serve``)
on a private broker and database; devices are the simulator's fleet. The kills need no test
hook: the test watches ``pg_stat_activity`` for a cloud session whose transaction has written
(it holds a transaction id) and sends SIGKILL at that moment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from cloud.access.gateway_tokens import create_gateway
from cloud.db.migrate import migrate
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from simulator.fleet import Fleet
from tests.fixtures.process import ServiceProcess

pytestmark = pytest.mark.slow

GATEWAY = "gw-fault"
IN_TRANSACTION = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'smaint-cloud'"
    " AND backend_xid IS NOT NULL"
)


def kill_mid_transaction(dsn: str, victim: ServiceProcess, timeout_s: float = 20.0) -> None:
    """SIGKILL ``victim`` while a cloud session holds an uncommitted, written transaction."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as watch:
        while time.monotonic() < deadline:
            row = watch.execute(IN_TRANSACTION).fetchone()
            if row and row[0]:
                victim.kill()
                return
            time.sleep(0.001)
    raise TimeoutError("never saw a cloud transaction in flight")


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def cloud_counts(dsn: str) -> dict[str, tuple[int, int]]:
    """device -> (rows, distinct (boot, seq)) in PostgreSQL."""
    with psycopg.connect(dsn) as conn:
        return {d: (int(n), int(k)) for d, n, k in conn.execute(
            "SELECT device_id, count(*), count(DISTINCT (boot_id, seq)) FROM readings"
            " GROUP BY 1")}


def test_every_reading_once_through_outages_and_kills(
    pg_dsn: str, fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        token = create_gateway(conn, GATEWAY)
    cloud_port, gw_port = free_port(), free_port()
    base = {**os.environ, "SMAINT_CLOUD_LOGGING__LEVEL": "WARNING"}
    logs = tmp_path / "services.log"  # both services; its path is in any failure message
    cloud = ServiceProcess([sys.executable, "-m", "cloud", "serve", "--port", str(cloud_port),
                     "--dsn", pg_dsn], base, logs, cloud_port)
    gw_env = {**base, **fresh_broker.gateway_env(), "SMAINT_GATEWAY_SYNC__TOKEN": token,
              "SMAINT_GATEWAY_SYNC__INTERVAL_S": "0.2", "SMAINT_GATEWAY_SYNC__RETRY_MAX_S": "0.5",
              "SMAINT_GATEWAY_SYNC__RETRY_ATTEMPTS": "3", "SMAINT_GATEWAY_SYNC__TIMEOUT_S": "10",
              "SMAINT_GATEWAY_SYNC__BATCH_MAX": "3000", "SMAINT_GATEWAY_SYNC__BACKLOG_MAX": "3000"}
    gateway = ServiceProcess([sys.executable, "-m", "edge", "run", "--gateway-id", GATEWAY,
                       "--db", str(tmp_path / "gw.db"),
                       "--cloud-url", f"http://127.0.0.1:{cloud_port}",
                       "--http-port", str(gw_port), "--log-level", "WARNING"],
                      gw_env, logs, gw_port)
    fleet = Fleet("127.0.0.1", fresh_broker.port, n_devices=6, rate_hz=150, seed=3,
                  id_prefix="flt-", login=fresh_broker.fixture_device_login)
    stopped = False
    try:
        cloud.start()
        gateway.start()
        fleet.start()
        wait_for(lambda: sum(n for n, _ in cloud_counts(pg_dsn).values()) > 500, 20,
                 "first readings in the cloud")
        # 1. The cloud is away for a while; devices keep publishing, the gateway piles up.
        cloud.kill()
        time.sleep(4)
        # 2. It comes back to a backlog of thousands, and dies inside a batch transaction.
        cloud.start()
        kill_mid_transaction(pg_dsn, cloud)
        cloud.start()
        # 3. The gateway dies while its upload is being applied.
        kill_mid_transaction(pg_dsn, gateway)
        gateway.start()
        time.sleep(1)
        fleet.stop()
        stopped = True
        published = fleet.per_device()
        total = sum(published.values())
        # Drained: the cloud holds as many rows as were published (more would fail below).
        wait_for(lambda: sum(n for n, _ in cloud_counts(pg_dsn).values()) >= total, 40,
                 f"cloud never reached {total} readings")
        status = httpx.get(f"http://127.0.0.1:{gw_port}/api/status", timeout=5).json()
        counts = cloud_counts(pg_dsn)
    finally:
        if not stopped:
            fleet.stop()
        gateway.stop()
        cloud.stop()
    assert status["dead_letters"] == 0
    assert set(counts) == set(published)
    # Exactly once, per device: as many rows as readings acknowledged by the broker, no
    # duplicates among them.
    assert {d: n for d, (n, _) in counts.items()} == published
    assert all(n == k for n, k in counts.values())
