"""An acknowledgement on the panel reaches the cloud, and the Sync page shows the upload.

The real cloud (``python -m cloud serve`` on a private PostgreSQL) and a real gateway whose
uploader talks to it over HTTP; the panel driven by NiceGUI's simulated user.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from tests.fixtures.cloud import prepare_db
from tests.fixtures.panel import PATIENT, feed, gateway, panel, panel_user, sign_in
from tests.fixtures.process import ServiceProcess
from ui.panel import units

pytestmark = pytest.mark.slow


async def test_an_alert_acknowledged_on_the_panel_is_acknowledged_in_the_cloud(
        pg_dsn: str, tmp_path: Path) -> None:
    keys, tokens = prepare_db(pg_dsn)
    port = free_port()
    cloud = ServiceProcess(["-m", "cloud", "serve"], env={
        "SMAINT_CLOUD_DB__DSN": pg_dsn, "SMAINT_CLOUD_API__HOST": "127.0.0.1",
        "SMAINT_CLOUD_API__PORT": str(port)}, log=tmp_path / "cloud.log", port=port,
        name="cloud")
    cloud.start(timeout_s=60)
    base = f"http://127.0.0.1:{port}"
    gw = gateway(tmp_path, "gw-1", sync={"cloud_url": base, "token": tokens["gw-1"]})
    try:
        feed(gw, "motor-1", 40, spike_at=36)
        (alert,) = gw.store.open_alerts()
        async with panel_user(panel(gw)) as user:
            await sign_in(user)
            await user.open("/alerts")
            user.find(marker="ack-button").click()
            user.find(marker="ack-comment").type("vibration checked on site")
            user.find(marker="ack-confirm").click()
            await user.should_see("Alert on motor-1 acknowledged.")
            # The gateway's own sync loop would do this within a second: one upload round.
            assert (await gw.uploader.sync_once()).outcome == "acked"
            await user.open("/sync")
            await user.should_see("connected: the last upload was acknowledged",
                                  retries=PATIENT)
            await user.should_see("0 rows not yet synced")
            sent = gw.store.counters["sync_bytes"]
            assert sent > 0
            await user.should_see(f"{units.size(sent)} in 1 batch, 40 readings")
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{base}/api/v1/alerts", params={"device": "motor-1"},
                                  headers={"Authorization": f"Bearer {keys['viewer']}"})
        resp.raise_for_status()
        (seen,) = resp.json()["alerts"]
        assert (seen["alert_id"], seen["gateway_state"]) == (alert.alert_id, "acknowledged")
    finally:
        await gw.uploader.aclose()
        gw.store.close()
        cloud.stop()
