"""Issue 13, gateway enrolment and token rotation, with a real cloud process, a real gateway
process and simulated devices: a one-time code becomes the gateway's token at first contact
(stored 0600 beside its database, the code spent); an admin's rotation request reaches the
gateway in a sync answer, it switches to a new token and no upload fails on the way."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import httpx
import psycopg

from cloud.access.gateway_tokens import authenticate
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from simulator.fleet import Fleet
from tests.fixtures.cloud import prepare_db
from tests.fixtures.process import ServiceProcess
from tests.fixtures.waiting import wait_until

GATEWAY = "gw-enrol"


def _readings(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE gateway_id = %s",
                           (GATEWAY,)).fetchone()
    return int(row[0]) if row else 0


def _audit(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE entity = 'gateway' AND entity_id = %s"
            " ORDER BY audit_id", (GATEWAY,))]


def test_security_enrolment_code_becomes_the_token_and_rotation_drops_no_upload(
        pg_dsn: str, fresh_broker: PrivateMosquitto, tmp_path: Path) -> None:
    keys, _ = prepare_db(pg_dsn)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    cloud_port, gw_port = free_port(), free_port()
    base = {**os.environ, "SMAINT_CLOUD_LOGGING__LEVEL": "WARNING",
            "SMAINT_CLOUD_JOBS__WORKER_ENABLED": "false"}
    logs = tmp_path / "services.log"
    cloud = ServiceProcess([sys.executable, "-m", "cloud", "serve", "--port", str(cloud_port),
                            "--dsn", pg_dsn], base, logs, cloud_port)
    cloud_url = f"http://127.0.0.1:{cloud_port}"
    fleet = Fleet("127.0.0.1", fresh_broker.port, n_devices=2, rate_hz=20, seed=4,
                  id_prefix="enr-", login=fresh_broker.fixture_device_login)
    gateway: ServiceProcess | None = None
    try:
        cloud.start()
        issued = httpx.post(f"{cloud_url}/api/v1/gateways/{GATEWAY}/enrolment", headers=admin,
                            timeout=10)
        assert issued.status_code == 201, issued.text
        code = issued.json()["code"]
        # Nobody can enrol as another gateway with it, nor guess one.
        other = httpx.post(f"{cloud_url}/api/v1/enrol", timeout=10,
                           json={"gateway": "gw-other", "code": code})
        assert other.status_code == 401
        gateway = ServiceProcess(
            [sys.executable, "-m", "edge", "run", "--gateway-id", GATEWAY,
             "--mqtt-port", str(fresh_broker.port), "--db", str(tmp_path / "gw.db"),
             "--cloud-url", cloud_url, "--http-port", str(gw_port), "--log-level", "INFO"],
            {**base, **fresh_broker.gateway_env(), "SMAINT_GATEWAY_SYNC__ENROL_CODE": code,
             "SMAINT_GATEWAY_SYNC__INTERVAL_S": "0.2"}, logs, gw_port)
        gateway.start()
        fleet.start()
        wait_until(lambda: _readings(pg_dsn) > 50, 30, "readings uploaded with the enrolled token")
        token_file = tmp_path / "cloud-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        first = token_file.read_text().strip()
        with psycopg.connect(pg_dsn) as conn:
            assert authenticate(conn, first) == GATEWAY
        # The code is spent.
        again = httpx.post(f"{cloud_url}/api/v1/enrol", timeout=10,
                           json={"gateway": GATEWAY, "code": code})
        assert again.status_code == 401

        # Rotation, asked for by an admin while readings keep flowing.
        assert httpx.post(f"{cloud_url}/api/v1/gateways/{GATEWAY}/rotation", headers=admin,
                          timeout=10).status_code == 202
        wait_until(lambda: token_file.read_text().strip() != first, 30, "the rotated token")
        second = token_file.read_text().strip()
        at_rotation = _readings(pg_dsn)
        wait_until(lambda: _readings(pg_dsn) > at_rotation + 50, 30,
                   "uploads with the new token")
        with psycopg.connect(pg_dsn) as conn:
            assert authenticate(conn, second) == GATEWAY
            assert authenticate(conn, first) == GATEWAY  # the overlap: still valid for a while
        status = httpx.get(f"http://127.0.0.1:{gw_port}/api/status", timeout=5).json()
    finally:
        fleet.stop()
        if gateway is not None:
            gateway.stop()
        cloud.stop()
    assert status["sync_rejected_batches"] == 0
    assert status["dead_letters"] == 0
    assert "HTTP 401" not in logs.read_text()  # no upload was refused on the way
    assert _audit(pg_dsn) == ["gateway.enrolment_issue", "gateway.enrol",
                              "gateway.rotate_request", "gateway.token_rotate"]
