"""Acceptance 1: SIGKILL the gateway at random moments while 20 devices publish; nothing is lost.

The gateway runs as a real process (``python -m edge run``). Every reading the broker
acknowledged to a device must end up in SQLite exactly once, however often the gateway died
between receiving, committing and acknowledging.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from simulator.fleet import Fleet
from tests.fixtures.process import ServiceProcess

PREFIX = "kill-"
KILLS = 4


def gateway_service(broker: PrivateMosquitto, db: Path, log: Path) -> ServiceProcess:
    """``python -m edge run`` configured through SMAINT_GATEWAY_* variables."""
    http_port = free_port()
    env = {**os.environ,
           "SMAINT_GATEWAY_GATEWAY_ID": "gw-kill",
           **broker.gateway_env(),
           "SMAINT_GATEWAY_STORAGE__PATH": str(db),
           "SMAINT_GATEWAY_HTTP__PORT": str(http_port),
           "SMAINT_GATEWAY_SYNC__TOKEN": ""}

    def session_up() -> bool:
        try:
            status = httpx.get(f"http://127.0.0.1:{http_port}/api/status", timeout=1)
        except httpx.HTTPError:
            return False
        return bool(status.json().get("mqtt_connected"))

    return ServiceProcess([sys.executable, "-m", "edge", "run"], env, log, http_port,
                          ready=session_up)


@contextmanager
def gateway_process(broker: PrivateMosquitto, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A gateway process, stopped at the end whatever happened."""
    gw = gateway_service(broker, tmp_path / "gw.db", tmp_path / "gateway.log")
    try:
        yield gw
    finally:
        gw.stop()


def stored(db: Path) -> list[tuple[str, str, int]]:
    """Every stored (device, boot, seq) of the test's devices, repeats included."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT device, boot, seq FROM readings WHERE device LIKE ?",
                            (f"{PREFIX}%",)).fetchall()
    return [(d, b, int(s)) for d, b, s in rows]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_stores_nothing_twice(
    fresh_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    with gateway_process(fresh_broker, tmp_path) as gw:
        gw.start()  # the persistent session exists before the first reading is published
        fleet = Fleet(fresh_broker.host, fresh_broker.port, n_devices=20, rate_hz=40,
                      profile="mix", seed=seed, id_prefix=PREFIX, threads=2,
                      login=fresh_broker.fixture_device_login)
        with fleet:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.3, 1.5))
                gw.kill()
                gw.start()
            time.sleep(rng.uniform(0.3, 1.0))
        published = fleet.keys()
        deadline = time.monotonic() + 20
        while len(got := stored(gw.log.parent / "gw.db")) < len(published):
            assert time.monotonic() < deadline, (
                f"seed={seed}: {len(got)} of {len(published)} stored; gateway log:\n"
                f"{gw.tail()}")
            time.sleep(0.1)
    print(f"seed={seed} published={len(published)} stored={len(got)} kills={KILLS}")
    assert len(published) > 1000, f"seed={seed}: the fleet published too little to tell"
    assert len(got) == len(set(got)), f"seed={seed}: a reading was stored twice"
    missing = published - set(got)
    assert not missing, f"seed={seed}: {len(missing)} acknowledged readings lost"
    # Nothing invented either: every stored reading was one a device published.
    assert set(got) <= published, f"seed={seed}"
