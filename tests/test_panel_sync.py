"""An acknowledgement on the panel reaches the cloud, the Sync page shows the upload, and the
cloud's decision on the alert comes back down to the panel.

The real cloud (``python -m cloud serve`` on a private PostgreSQL) and a real gateway whose
uploader talks to it over HTTP; the panel driven by NiceGUI's simulated user.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.cloud import prepare_db
from tests.fixtures.panel import (
    PATIENT,
    acknowledge_on_alerts_page,
    cloud_serving,
    feed,
    gateway,
    panel,
    panel_user,
    sign_in,
)
from ui.panel import units

pytestmark = pytest.mark.slow


async def test_an_alert_acknowledged_on_the_panel_is_acknowledged_in_the_cloud_and_back(
        pg_dsn: str, tmp_path: Path) -> None:
    keys, tokens = prepare_db(pg_dsn)
    cloud, base = cloud_serving(pg_dsn, tmp_path)
    gw = gateway(tmp_path, "gw-1", sync={"cloud_url": base, "token": tokens["gw-1"]})
    try:
        feed(gw, "motor-1", 40, spike_at=36)
        (alert,) = gw.store.open_alerts()
        async with panel_user(panel(gw)) as user:
            await sign_in(user)
            await user.open("/alerts")
            acknowledge_on_alerts_page(user, "vibration checked on site", "Ana")
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
            async with httpx.AsyncClient(base_url=f"{base}/api/v1/alerts/", timeout=10) as http:
                viewer = {"Authorization": f"Bearer {keys['viewer']}"}
                operator = {"Authorization": f"Bearer {keys['operator']}"}
                resp = await http.get(f"{base}/api/v1/alerts", params={"device": "motor-1"},
                                      headers=viewer)
                resp.raise_for_status()
                (seen,) = resp.json()["alerts"]
                # One alert, one id on both sides: the review follows the gateway's ack.
                assert (seen["alert_id"], seen["gateway_state"], seen["state"]) == (
                    alert.alert_id, "acknowledged", "acknowledged")
                assert (seen["acknowledged_by"], seen["comment"]) == (
                    "Ana on gateway gw-1", "vibration checked on site")
                # The answer was lost: the gateway sends the same batch again.
                gw.store.conn.execute("UPDATE sync_batches SET state = 'pending'")
                gw.store.conn.commit()
                assert (await gw.uploader.sync_once()).outcome == "acked"
                trail = (await http.get(f"gw-1/{alert.alert_id}/audit", headers=viewer)).json()
                assert [(e["actor"], e["after"].get("summary")) for e in trail] == [
                    ("Ana@gw-1",
                     "acknowledged on gateway gw-1 by Ana: vibration checked on site")]
                # An operator resolves it in the console (the same API call).
                resp = await http.post(
                    f"gw-1/{alert.alert_id}/resolve", headers=operator,
                    json={"decision": "false_positive", "comment": "sensor cable loose"})
                assert resp.status_code == 200, resp.text
                # The next upload's answer brings the decision down.
                feed(gw, "motor-1", 2, first_seq=40)
                assert (await gw.uploader.sync_once()).outcome == "acked"
                mine = gw.store.alert(alert.alert_id)
                assert mine is not None
                assert mine.state == "resolved"
                await user.open("/alerts")
                await user.should_see("from cloud: resolved by operator as false positive: "
                                      "sensor cable loose", retries=PATIENT)
                await user.should_see("0 open, 1 shown (open first)")
                # And the resolved version goes back up: both sides show the same state.
                assert (await gw.uploader.sync_once()).outcome == "acked"
                seen = (await http.get(f"gw-1/{alert.alert_id}", headers=viewer)).json()
                assert (seen["state"], seen["gateway_state"], seen["decision"]) == (
                    "resolved", "resolved", "false_positive")
    finally:
        await gw.uploader.aclose()
        gw.store.close()
        cloud.stop()
