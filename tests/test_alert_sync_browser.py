"""The two screens on one alert, in a real headless Chromium (issue 12).

``python -m smaint cloud serve`` (console included) on a fresh PostgreSQL database, and
``python -m smaint gateway run`` (panel included) syncing to it, with simulated motors on a
private broker. An alert is acknowledged on the panel with a comment and the console's audit
trail shows it; it is resolved in the console with a decision and the panel, left open in its
own tab, follows. Screenshots are saved in the test's tmp_path.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from devstack.mosquitto import PrivateMosquitto
from devstack.postgres import PrivatePostgres
from simulator.fleet import Fleet
from tests.fixtures.browser import marked, one_marked, until
from tests.fixtures.cloud import prepare_db
from tests.fixtures.console import SeededCloud, fresh_database, serve
from tests.fixtures.panel import panel_gateway
from tests.fixtures.waiting import wait_until
from tests.test_console_browser import alert_card, click_marked, dialog, open_page
from tests.test_console_browser import no_dialog as console_no_dialog
from tests.test_console_browser import sign_in as console_sign_in
from tests.test_panel_browser import PASSWORD, check_page, click, no_dialog, text_shown, wait
from tests.test_panel_browser import sign_in as panel_sign_in

pytestmark = pytest.mark.slow

DEVICE = "as-motor-001"
WAIT_S = 30


@dataclass
class TwoScreens:
    """The running cloud (console) and gateway (panel), and where the gateway keeps its data."""

    cloud: SeededCloud
    panel: str
    db: Path
    fleet: Fleet


@pytest.fixture
def screens(fresh_broker: PrivateMosquitto, pg_cluster: PrivatePostgres, tmp_path: Path
            ) -> Iterator[TwoScreens]:
    # A broker of its own: its devices' retained statuses must not reach later tests' gateways.
    broker = fresh_broker
    with fresh_database(pg_cluster, "alertsync") as dsn:
        keys, tokens = prepare_db(dsn)
        cloud = SeededCloud(base="", dsn=dsn, keys=keys, now_ms=int(time.time() * 1000))
        (tmp_path / "cloud").mkdir()
        cloud_proc = serve(cloud, tmp_path / "cloud")
        try:
            gw, base = panel_gateway(
                broker, tmp_path, cloud.base, tokens["gw-1"], PASSWORD,
                SMAINT_GATEWAY_ALERTS__OPEN_AFTER="2",
                SMAINT_GATEWAY_ALERTS__RESOLVE_AFTER="100000")  # only the operators resolve it
            fleet = Fleet(broker.host, broker.port, n_devices=1, rate_hz=10, profile="motor",
                          seed=11, id_prefix="as-", login=broker.fixture_device_login)
        except BaseException:
            cloud_proc.stop()  # the gateway never started
            raise
        try:
            wait_until(lambda: bool(status(base).get("mqtt_connected")), 30,
                       "the gateway's broker session")
            fleet.start()
            yield TwoScreens(cloud, base, tmp_path / "gateway.db", fleet)
        finally:
            fleet.stop()
            gw.stop()
            cloud_proc.stop()


def status(base: str) -> dict[str, Any]:
    """The gateway's /api/status, or nothing while it does not answer (busy, starting)."""
    try:
        return dict(httpx.get(f"{base}/api/status", timeout=5).json())
    except httpx.HTTPError:
        return {}


def open_alert(db: Path) -> str | None:
    """The id of the device's open alert on the gateway, if one is open."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT alert_id FROM alerts WHERE device = ? AND state = 'open'",
                           (DEVICE,)).fetchone()
    return None if row is None else str(row[0])


def cloud_alert(s: TwoScreens, alert_id: str) -> dict[str, str]:
    """The alert as the cloud's API shows it (404s while it has not arrived yet)."""
    try:
        resp = httpx.get(f"{s.cloud.base}/api/v1/alerts/gw-1/{alert_id}", timeout=10,
                         headers={"Authorization": f"Bearer {s.cloud.keys['viewer']}"})
    except httpx.HTTPError:
        return {}
    return dict(resp.json()) if resp.status_code == 200 else {}


def test_ack_on_the_panel_shows_in_the_console_and_the_consoles_resolve_on_the_panel(
        screens: TwoScreens, driver: webdriver.Chrome, tmp_path: Path) -> None:
    s = screens
    # Past the detector's warm-up (8 readings), a spike raises the alert.
    wait_until(lambda: status(s.panel).get("scored", 0) >= 20, WAIT_S,
               "the gateway to score the device's first readings")
    s.fleet.inject(DEVICE, "spike", samples=6, magnitude=6)
    wait_until(lambda: open_alert(s.db) is not None, WAIT_S, "an open alert on the device")
    alert_id = open_alert(s.db)
    assert alert_id is not None

    # The panel: acknowledge with a comment and a name.
    panel_tab = driver.current_window_handle
    panel_sign_in(driver, s.panel)
    driver.get(f"{s.panel}/alerts")
    card = f"//div[contains(@class, 'q-card')][.//a[normalize-space()='{DEVICE}']]"
    click(driver, "Acknowledge", within=card)
    wait(driver, "the dialog").until(lambda drv: any(
        t.is_displayed() for t in drv.find_elements(By.CSS_SELECTOR, ".q-dialog textarea")),
        "the acknowledge dialog never opened")
    driver.find_element(By.CSS_SELECTOR, ".q-dialog textarea").send_keys("checked the mount")
    driver.find_element(By.CSS_SELECTOR, ".q-dialog input").send_keys("Ana")
    click(driver, "Acknowledge", within="//div[contains(@class, 'q-dialog')]")
    no_dialog(driver)
    text_shown(driver, "acknowledged on this gateway by Ana")
    check_page(driver, s.panel)
    driver.save_screenshot(str(tmp_path / "01-panel-acknowledged.png"))
    wait_until(lambda: cloud_alert(s, alert_id).get("state") == "acknowledged", WAIT_S,
               "the acknowledgement to reach the cloud")

    # The console, in a second tab: the review follows, the audit trail says who and why.
    driver.switch_to.new_window("tab")
    console_tab = driver.current_window_handle
    console_sign_in(driver, s.cloud, "operator")
    open_page(driver, s.cloud, "/alerts", "Alerts")
    one_marked(driver, "filter-state").click()
    driver.find_element(By.XPATH, "//div[contains(@class,'q-item')][.//span[text()="
                                  "'Any review state']]").click()
    until(lambda drv: "acknowledged by Ana on gateway gw-1" in alert_card(
        drv, "gw-1", alert_id).text, "the card to show the gateway's acknowledgement", driver)
    click_marked(driver, "audit-trail", alert_card(driver, "gw-1", alert_id))
    trail = dialog(driver)
    until(lambda _: len(marked(driver, "audit-entry", trail)) == 1, "one audit entry", driver)
    (entry,) = [e.text for e in marked(driver, "audit-entry", trail)]
    assert "acknowledged on gateway gw-1 by Ana: checked the mount" in entry
    assert "Ana@gw-1" in entry
    driver.save_screenshot(str(tmp_path / "02-console-audit-trail.png"))
    click_marked(driver, "dialog-cancel", trail)
    console_no_dialog(driver)

    # Resolved in the console with a decision.
    click_marked(driver, "resolve", alert_card(driver, "gw-1", alert_id))
    box = dialog(driver)
    box.find_element(By.XPATH, ".//div[contains(@class,'q-radio')][.//div[text()="
                               "'False positive']]").click()
    box.find_element(By.CSS_SELECTOR, "[data-marker~='dialog-comment'] textarea, "
                                      "textarea[data-marker~='dialog-comment']").send_keys(
        "sensor cable loose")
    click_marked(driver, "dialog-confirm", box)
    console_no_dialog(driver)
    until(lambda drv: "as False positive" in alert_card(drv, "gw-1", alert_id).text,
          "the card to show the decision", driver)
    driver.save_screenshot(str(tmp_path / "03-console-resolved.png"))

    # The panel, never reloaded, follows: the alert is resolved, the decision shown.
    driver.switch_to.window(panel_tab)
    text_shown(driver, "from cloud: resolved by operator as false positive: sensor cable loose")
    assert "0 open" in driver.find_element(By.TAG_NAME, "body").text
    check_page(driver, s.panel)
    driver.save_screenshot(str(tmp_path / "04-panel-followed.png"))

    # The resolved version went back up: the console's condition follows too, and the audit
    # trail holds both sides' entries once each.
    wait_until(lambda: cloud_alert(s, alert_id).get("gateway_state") == "resolved", WAIT_S,
               "the gateway's resolved version to reach the cloud")
    driver.switch_to.window(console_tab)
    until(lambda drv: "condition resolved" in alert_card(drv, "gw-1", alert_id).text,
          "the console to show the gateway's resolved condition", driver)
    click_marked(driver, "audit-trail", alert_card(driver, "gw-1", alert_id))
    trail = dialog(driver)
    until(lambda _: len(marked(driver, "audit-entry", trail)) == 2, "two audit entries", driver)
    entries = [e.text for e in marked(driver, "audit-entry", trail)]
    assert "alert.gateway_ack" in entries[0]
    assert "alert.resolve" in entries[1]
    driver.save_screenshot(str(tmp_path / "05-console-both-sides.png"))

