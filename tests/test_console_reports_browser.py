"""The Reports page in a real headless Chromium against ``python -m smaint cloud serve`` on a
real PostgreSQL seeded through the real ingest path: generate, look, download the PDF."""

from __future__ import annotations

import io
from pathlib import Path

import pypdf
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.fixtures.browser import check_page, connected, one_marked, text_shown, until
from tests.fixtures.console import ALERTS, SeededCloud
from tests.fixtures.waiting import wait_until
from tests.test_console_browser import click_marked, open_page, sign_in

pytestmark = pytest.mark.slow


def test_a_viewer_generates_the_fleet_report_and_downloads_its_pdf(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome, browser_downloads: Path,
        tmp_path: Path) -> None:
    sign_in(driver, seeded_cloud, "viewer")
    open_page(driver, seeded_cloud, "/reports", "Reports")
    connected(driver)
    click_marked(driver, "report-generate")
    text_shown(driver, "Report of the whole fleet")
    # The preview is the cloud's own HTML in a frame: a chart per metric of every device.
    frame = one_marked(driver, "report-preview")
    driver.switch_to.frame(frame)
    try:
        until(lambda drv: len(drv.find_elements(By.TAG_NAME, "svg")) == 11, "the charts",
              driver)
        assert "Fleet maintenance report" in driver.find_element(By.TAG_NAME, "h1").text
        driver.switch_to.default_content()
        check_page(driver, seeded_cloud.base)
        driver.save_screenshot(str(tmp_path / "reports.png"))
        driver.switch_to.frame(frame)
        chart = driver.find_elements(By.TAG_NAME, "svg")[5]  # motor-001's temperature
        driver.execute_script("arguments[0].scrollIntoView()", chart)
        driver.switch_to.default_content()
        driver.save_screenshot(str(tmp_path / "reports-chart.png"))
    finally:
        driver.switch_to.default_content()

    click_marked(driver, "report-pdf")
    wait_until(lambda: any(browser_downloads.glob("report-fleet-*.pdf")), 20, "the PDF")
    [saved] = browser_downloads.glob("report-fleet-*.pdf")
    wait_until(lambda: saved.read_bytes().endswith(b"%%EOF\n"), 20, "the whole PDF")
    content = saved.read_bytes()
    assert content.startswith(b"%PDF")
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(content)).pages)
    assert "Fleet maintenance report" in text
    assert all(device in text for device in ("motor-001", "motor-002", "mill-001"))
    assert all(alert_id in text for alert_id, _, _ in ALERTS)
