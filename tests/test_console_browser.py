"""The cloud console in a real headless Chromium, against ``python -m smaint cloud serve`` on a
real PostgreSQL seeded through the real ingest path (tests/fixtures/console.py).

Each test saves screenshots in its tmp_path.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from cloud.access.passwords import set_password
from tests.fixtures.browser import (
    WAIT_S,
    check_page,
    connected,
    console_errors,
    field,
    foreign_resources,
    marked,
    one_marked,
    text_shown,
    until,
)
from tests.fixtures.console import ALERTS, DEVICES, SeededCloud
from tests.fixtures.waiting import wait_until
from ui.console.frame import NAV

pytestmark = pytest.mark.slow


def sign_in(d: webdriver.Chrome, cloud: SeededCloud, role: str) -> None:
    """Sign in as the user of ``role`` (signing out first); ends on the fleet page."""
    d.get(f"{cloud.base}/login")
    until(lambda drv: "/login" in drv.current_url or marked(drv, "whoami"), "a page", d)
    if "/login" not in d.current_url:
        one_marked(d, "sign-out").click()
        until(lambda drv: "/login" in drv.current_url and marked(drv, "api-key"),
              "the sign-in page", d)
    connected(d)
    field(d, "api-key").send_keys(cloud.keys[role])
    one_marked(d, "sign-in").click()
    until(lambda drv: marked(drv, "whoami"), "the signed-in header", d)
    assert one_marked(d, "whoami").text == f"{role} ({role})"


def open_page(d: webdriver.Chrome, cloud: SeededCloud, path: str, heading: str) -> None:
    """Open ``path`` and wait for its heading and the "where it runs" bar."""
    d.get(f"{cloud.base}{path}")
    until(lambda drv: any(h.text == heading for h in drv.find_elements(
        By.CSS_SELECTOR, ".text-h5")), f"heading {heading!r}", d)
    text_shown(d, "database ok")


def click_marked(d: webdriver.Chrome, marker: str, within: WebElement | None = None) -> None:
    """Click the first visible element carrying ``marker``."""
    one_marked(d, marker, within).click()


def dialog(d: webdriver.Chrome) -> WebElement:
    """The open dialog."""
    found: list[WebElement] = []

    def shown(drv: webdriver.Chrome) -> bool:
        found[:] = [e for e in drv.find_elements(By.CSS_SELECTOR, ".q-dialog .q-card")
                    if e.is_displayed()]
        return bool(found)

    until(shown, "a dialog", d)
    # Clicks land only once its opening transition is over.
    until(lambda drv: drv.execute_script(
        "return document.querySelector('.q-dialog [class*=\"enter-active\"]') === null"),
        "the dialog to finish opening", d)
    return found[0]


def no_dialog(d: webdriver.Chrome) -> None:
    """Wait until no dialog is open."""
    # Quasar removes a dialog from the page once its closing transition is over.
    until(lambda drv: not drv.find_elements(By.CSS_SELECTOR, ".q-dialog"),
          "the dialog to close", d)


def alert_card(d: webdriver.Chrome, gateway: str, alert_id: str) -> WebElement:
    """The inbox card of one alert."""
    return one_marked(d, f"alert-{gateway}/{alert_id}")


def downloaded(folder: Path, name: str) -> bytes:
    """The file the browser saved as ``name`` (waits for the download to finish)."""
    path = folder / name
    wait_until(lambda: path.is_file() and path.stat().st_size > 0, 20, f"download {name}")
    return path.read_bytes()


TITLES = {"/": "Fleet", "/explorer": "Device explorer", "/alerts": "Alerts",
          "/orders": "Maintenance orders", "/models": "Models", "/reports": "Reports"}


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_each_role_signs_in_and_every_page_renders_from_the_cloud_alone(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome, tmp_path: Path, role: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{seeded_cloud.base}/alerts")
    until(lambda drv: "/login" in drv.current_url, "the sign-in page", driver)
    driver.save_screenshot(str(tmp_path / "00-login.png"))
    sign_in(driver, seeded_cloud, role)
    for i, (_, path, _) in enumerate(NAV):
        open_page(driver, seeded_cloud, path, TITLES[path])
        if path == "/":
            text_shown(driver, "Site plant-north")
            text_shown(driver, "motor v3")
        if path == "/alerts":
            text_shown(driver, "4 alerts match the filters.")
            acting = marked(driver, "acknowledge") + marked(driver, "resolve")
            # The UI offers what the API allows: nothing to a viewer, both to the others.
            assert bool(acting) == (role != "viewer")
        check_page(driver, seeded_cloud.base)
        driver.save_screenshot(str(tmp_path / f"{i + 1:02d}-{role}-{path.strip('/') or 'fleet'}"
                                              ".png"))


def test_a_viewer_is_refused_by_the_api_too(seeded_cloud: SeededCloud) -> None:
    gateway, alert_id = "gw-1", ALERTS[0][0]
    headers = {"Authorization": f"Bearer {seeded_cloud.keys['viewer']}"}
    url = f"{seeded_cloud.base}/api/v1/alerts/{gateway}/{alert_id}"
    for action, body in (("acknowledge", {"comment": "x"}),
                         ("resolve", {"decision": "false_positive"}),
                         ("orders", {"title": "x"})):
        assert httpx.post(f"{url}/{action}", json=body, headers=headers,
                          timeout=10).status_code == 403
    assert httpx.get(url, headers=headers, timeout=10).json()["state"] == "open"


def test_an_operator_resolves_an_alert_and_the_audit_trail_and_csv_show_it(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome, browser_downloads: Path,
        tmp_path: Path) -> None:
    gateway, alert_id, device = "gw-1", ALERTS[1][0], ALERTS[1][1]
    sign_in(driver, seeded_cloud, "operator")
    open_page(driver, seeded_cloud, "/alerts", "Alerts")
    click_marked(driver, "acknowledge", alert_card(driver, gateway, alert_id))
    field(driver, "dialog-comment", dialog(driver)).send_keys("looking at it")
    click_marked(driver, "dialog-confirm", dialog(driver))
    no_dialog(driver)
    # Acknowledged alerts leave the default "open" view: show every review state.
    one_marked(driver, "filter-state").click()
    driver.find_element(By.XPATH, "//div[contains(@class,'q-item')][.//span[text()="
                                  "'Any review state']]").click()
    until(lambda drv: "acknowledged by operator" in alert_card(drv, gateway, alert_id).text,
          "the card to show the acknowledgement", driver)
    click_marked(driver, "resolve", alert_card(driver, gateway, alert_id))
    box = dialog(driver)
    box.find_element(By.XPATH, ".//div[contains(@class,'q-radio')][.//div[text()="
                               "'Confirmed failure']]").click()
    field(driver, "dialog-comment", box).send_keys(
        "outer race worn")
    driver.save_screenshot(str(tmp_path / "resolve-dialog.png"))
    click_marked(driver, "dialog-confirm", box)
    no_dialog(driver)
    until(lambda drv: "as Confirmed failure" in alert_card(drv, gateway, alert_id).text,
          "the card to show the decision", driver)
    click_marked(driver, "audit-trail", alert_card(driver, gateway, alert_id))
    trail = dialog(driver)
    until(lambda _: len(marked(driver, "audit-entry", trail)) == 2, "two audit entries", driver)
    entries = [e.text for e in marked(driver, "audit-entry", trail)]
    assert "operator" in entries[0]
    assert "alert.acknowledge" in entries[0]
    assert "alert.resolve" in entries[1]
    assert "decision: not set → confirmed_failure" in entries[1]
    driver.save_screenshot(str(tmp_path / "audit-trail.png"))
    click_marked(driver, "dialog-cancel", trail)
    no_dialog(driver)
    # The API holds what the page shows.
    shown = httpx.get(f"{seeded_cloud.base}/api/v1/alerts/{gateway}/{alert_id}", timeout=10,
                      headers={"Authorization": f"Bearer {seeded_cloud.keys['viewer']}"}).json()
    assert (shown["state"], shown["decision"], shown["resolved_by"], shown["comment"]) == (
        "resolved", "confirmed_failure", "operator", "outer race worn")
    click_marked(driver, "export-decisions")
    rows = list(csv.DictReader(io.StringIO(
        downloaded(browser_downloads, "alert-decisions.csv").decode())))
    assert [(r["alert_id"], r["device"], r["decision"], r["comment"], r["resolved_by"])
            for r in rows] == [(alert_id, device, "confirmed_failure", "outer race worn",
                                "operator")]
    check_page(driver, seeded_cloud.base)
    driver.save_screenshot(str(tmp_path / "resolved.png"))


def test_an_order_is_raised_from_an_alert_and_moved_through_its_workflow(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome, tmp_path: Path) -> None:
    gateway, alert_id, device = "gw-2", ALERTS[3][0], ALERTS[3][1]
    sign_in(driver, seeded_cloud, "operator")
    open_page(driver, seeded_cloud, "/alerts", "Alerts")
    click_marked(driver, "create-order", alert_card(driver, gateway, alert_id))
    box = dialog(driver)
    title = field(driver, "order-title", box)
    title.send_keys(Keys.CONTROL, "a")  # clear() would not tell the page the field changed
    title.send_keys("Replace spindle bearing")
    field(driver, "order-assignee", box).send_keys(
        "team-a")
    click_marked(driver, "dialog-confirm", box)
    no_dialog(driver)
    open_page(driver, seeded_cloud, "/orders", "Maintenance orders")
    column = one_marked(driver, "column-open")
    until(lambda _: "Replace spindle bearing" in column.text, "the order in Open", driver)
    assert f"{device} · alert {gateway}/{alert_id}" in column.text
    assert "assignee team-a" in column.text
    driver.save_screenshot(str(tmp_path / "order-open.png"))
    click_marked(driver, "move-scheduled", column)
    until(lambda drv: "Replace spindle bearing" in one_marked(drv, "column-scheduled").text,
          "the order in Scheduled", driver)
    click_marked(driver, "move-done", one_marked(driver, "column-scheduled"))
    until(lambda drv: "Replace spindle bearing" in one_marked(drv, "column-done").text,
          "the order in Done", driver)
    click_marked(driver, "order-history", one_marked(driver, "column-done"))
    trail = dialog(driver)
    until(lambda _: len(marked(driver, "audit-entry", trail)) == 3, "three history entries",
          driver)
    text = trail.text
    assert "order.create" in text
    assert "status: open → scheduled" in text
    assert "status: scheduled → done" in text
    driver.save_screenshot(str(tmp_path / "order-history.png"))
    click_marked(driver, "dialog-cancel", trail)
    check_page(driver, seeded_cloud.base)
    viewer = {"Authorization": f"Bearer {seeded_cloud.keys['viewer']}"}
    orders = httpx.get(f"{seeded_cloud.base}/api/v1/orders", params={"device": device},
                       timeout=10, headers=viewer)
    assert [(o["title"], o["assignee"], o["status"], o["created_by"]) for o in orders.json()] == [
        ("Replace spindle bearing", "team-a", "done", "operator")]


def _chart_points(d: webdriver.Chrome) -> int:
    return int(d.execute_script(
        "const el = document.querySelector('[data-marker~=explorer-chart]');"
        "const c = el && echarts_instance(el); return c ? c.getOption().series[0].data.length"
        " : -1;".replace("echarts_instance(el)", "getElement(el.id.slice(1)).chart")))


def test_the_explorer_draws_raw_readings_zooms_from_buckets_and_downloads_what_it_shows(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome, browser_downloads: Path,
        tmp_path: Path) -> None:
    sign_in(driver, seeded_cloud, "viewer")
    open_page(driver, seeded_cloud, "/explorer?device=motor-001&metric=temperature_c",
              "Device explorer")
    n = DEVICES["motor-001"][1]
    text_shown(driver, f"{n:,} raw readings of temperature_c")
    until(lambda drv: _chart_points(drv) == n, "the chart to hold every reading", driver)
    until(lambda drv: drv.execute_script(
        "return performance.getEntriesByName('explorer-chart-finished').length > 0"),
        "the chart to be drawn", driver)
    driver.save_screenshot(str(tmp_path / "explorer-raw.png"))
    click_marked(driver, "download-csv")
    name = next(iter(browser_downloads.glob("motor-001_temperature_c_*_raw.csv")), None)
    wait_until(lambda: any(browser_downloads.glob("motor-001_temperature_c_*_raw.csv")), 20,
               "the explorer's CSV")
    name = next(iter(browser_downloads.glob("motor-001_temperature_c_*_raw.csv")))
    rows = list(csv.DictReader(io.StringIO(downloaded(browser_downloads, name.name).decode())))
    assert len(rows) == n
    assert [int(r["seq"]) for r in rows] == list(range(n))
    anomalous = [int(r["seq"]) for r in rows if r["anomalous"] == "true"]
    assert anomalous == [s for s in range(n) if s % 97 == 96]

    # A range too dense to draw raw shows buckets; zooming in reaches the raw readings.
    open_page(driver, seeded_cloud, "/explorer?device=motor-002&metric=current_a",
              "Device explorer")
    one_marked(driver, "range-select").click()
    driver.find_element(By.XPATH, "//div[contains(@class,'q-item')][.//span[text()="
                                  "'Latest 6 hours of data']]").click()
    text_shown(driver, "buckets (min, mean, max) of 7,200 readings of current_a")
    driver.save_screenshot(str(tmp_path / "explorer-buckets.png"))
    driver.execute_script(
        "const el = document.querySelector('[data-marker~=explorer-chart]');"
        "getElement(el.id.slice(1)).chart.dispatchAction("
        "{type: 'dataZoom', dataZoomIndex: 1, start: 90, end: 100});")
    text_shown(driver, "raw readings of current_a")
    until(lambda drv: marked(drv, "zoom-out") and marked(drv, "zoom-out")[0].is_enabled(),
          "zoom out to be offered", driver)
    driver.save_screenshot(str(tmp_path / "explorer-zoomed-raw.png"))
    check_page(driver, seeded_cloud.base)
    click_marked(driver, "zoom-out")
    text_shown(driver, "buckets (min, mean, max) of 7,200 readings")


def test_the_api_docs_render_without_the_internet(seeded_cloud: SeededCloud,
                                                  driver: webdriver.Chrome,
                                                  tmp_path: Path) -> None:
    driver.get(f"{seeded_cloud.base}/docs")
    text_shown(driver, "Smart Maintenance cloud")
    text_shown(driver, "/api/v1/alerts/{gateway}/{alert_id}/resolve")
    assert foreign_resources(driver, seeded_cloud.base) == []
    assert console_errors(driver) == []
    driver.save_screenshot(str(tmp_path / "docs.png"))


def at(url: str) -> Callable[[webdriver.Chrome], bool]:
    """A wait condition: the browser shows ``url``."""
    return lambda drv: bool(drv.current_url == url)


def test_the_root_is_the_console_and_cross_site_requests_are_refused(
        seeded_cloud: SeededCloud) -> None:
    root = httpx.get(f"{seeded_cloud.base}/", timeout=10)
    assert (root.status_code, root.headers["location"]) == (303, "/login?next=/")
    evil = {"Origin": "http://evil.example"}
    poll = f"{seeded_cloud.base}/_nicegui_ws/socket.io/?EIO=4&transport=polling"
    assert httpx.post(poll, headers=evil, content=b"40", timeout=10).status_code == 403
    # The API's own routes authenticate by key: a request without a browser origin passes.
    key = {"Authorization": f"Bearer {seeded_cloud.keys['operator']}"}
    url = f"{seeded_cloud.base}/api/v1/alerts/gw-1/{ALERTS[0][0]}/acknowledge"
    assert httpx.post(url, json={}, headers={**key, **evil}, timeout=10).status_code == 403
    assert httpx.get(f"{seeded_cloud.base}/healthz", headers=evil, timeout=10).status_code == 200


def test_signing_in_with_a_password_and_out_ends_the_session_key(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome) -> None:
    with psycopg.connect(seeded_cloud.dsn) as conn:
        set_password(conn, "viewer", "a console password")
    driver.get(f"{seeded_cloud.base}/login")
    until(lambda drv: "/login" in drv.current_url or marked(drv, "whoami"), "a page", driver)
    if "/login" not in driver.current_url:
        one_marked(driver, "sign-out").click()
        until(lambda drv: "/login" in drv.current_url and marked(drv, "password"),
              "the sign-in page", driver)
    connected(driver)
    field(driver, "user-name").send_keys("viewer")
    field(driver, "password").send_keys("not it")
    one_marked(driver, "sign-in-password").click()
    text_shown(driver, "wrong user name or password")
    field(driver, "password").send_keys("a console password")
    one_marked(driver, "sign-in-password").click()
    until(lambda drv: marked(drv, "whoami"), "the signed-in header", driver)
    assert one_marked(driver, "whoami").text == "viewer (viewer)"
    check_page(driver, seeded_cloud.base)  # no CSP violation or other console error

    def session_keys() -> list[tuple[bool]]:
        with psycopg.connect(seeded_cloud.dsn) as conn:
            return [(r[0] is not None,) for r in conn.execute(
                "SELECT k.revoked_at FROM api_keys k JOIN users u USING (user_id)"
                " WHERE u.name = 'viewer' AND k.expires_at IS NOT NULL")]

    assert session_keys() == [(False,)]
    one_marked(driver, "sign-out").click()
    until(lambda drv: "/login" in drv.current_url, "the sign-in page", driver)
    wait_until(lambda: session_keys() == [(True,)], WAIT_S, "the session key revoked")
