"""The walking skeleton end to end: devices -> Mosquitto -> gateway -> cloud -> PostgreSQL.

Every part is the real one, each in its own process as in production: the private broker with
the repo's config, the gateway (`python -m edge run`), the cloud API (`python -m cloud serve`)
on a private PostgreSQL cluster. Only the devices are simulated.
"""

from __future__ import annotations

import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import psycopg
import pytest

from devstack.demo import Demo
from tests.fixtures.waiting import wait_until


@pytest.mark.slow
def test_every_reading_from_several_devices_arrives_in_postgres_exactly_once(
    tmp_path: Path,
) -> None:
    demo = Demo(tmp_path, devices=6, rate_hz=20, train_models=False)  # scoring: own tests
    try:
        demo.start()
        fleet = demo.fleet
        assert fleet is not None
        wait_until(lambda: fleet.published > 6 * 20 * 2, 30, "the fleet publishing")
        fleet.stop()
        published = fleet.keys()
        assert len({device for device, _, _ in published}) == 6
        assert len(published) > 6 * 20 * 2

        deadline = time.monotonic() + 60
        rows: list[tuple[str, str, int]] = []
        while time.monotonic() < deadline:
            with psycopg.connect(demo.dsn) as conn:
                rows = [
                    (str(d), str(b), int(s))
                    for d, b, s in conn.execute("SELECT device_id, boot_id, seq FROM readings")
                ]
            if len(rows) >= len(published):
                break
            demo.check_alive()
            time.sleep(0.5)

        counts = Counter(rows)
        doubled = {key: n for key, n in counts.items() if n > 1}
        assert not doubled, f"readings stored more than once: {list(doubled)[:5]}"
        assert set(counts) == set(published), (
            f"missing {len(set(published) - set(counts))}, "
            f"unexpected {len(set(counts) - set(published))}"
        )
        with psycopg.connect(demo.dsn) as conn:
            reported = conn.execute(
                "SELECT reported_state FROM gateways WHERE gateway_id = 'gw-demo'").fetchone()
        # The gateway reports what it runs with every upload (no models trained here).
        assert reported is not None
        assert reported[0]["software"] == version("smart-maintenance")
        assert reported[0]["models"] == {}
        hops = demo.poll()
        assert hops.stored == len(published)
        assert hops.dead_letters == 0
    finally:
        demo.stop()
