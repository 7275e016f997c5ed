"""The console's Reports page with NiceGUI's simulated user on a real cloud app (PostgreSQL,
the real ingest path): generate a preview, download CSV, HTML and PDF as the signed-in user,
and the range errors the cloud explains. The browser check is in test_console_browser.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pypdf
from nicegui import ui

from tests.fixtures.console import ALERTS
from tests.test_console_pages import PATIENT, console_user, sign_in
from ui.console.pages.reports import CUSTOM, resolve


def _enabled(user: object, marker: str) -> bool:
    [button] = user.find(marker=marker).elements  # type: ignore[attr-defined]
    assert isinstance(button, ui.button)
    return bool(button.enabled)


async def test_a_viewer_previews_the_fleet_and_downloads_one_device_in_three_formats(
        pg_dsn: str) -> None:
    async with console_user(pg_dsn) as h:
        await sign_in(h, "viewer")  # reading reports is a viewer's right
        await h.user.open("/reports")
        await h.user.should_see(marker="report-generate")
        assert not _enabled(h.user, "report-pdf")  # nothing generated: nothing to download
        h.user.find(marker="report-generate").click()
        await h.user.should_see("Report of the whole fleet", retries=PATIENT)
        [frame] = h.user.find(marker="report-preview").elements
        page = frame.props["srcdoc"]
        assert page.startswith("<!doctype html>")
        for device in ("motor-001", "motor-002", "mill-001"):
            assert f'id="device-{device}"' in page
        assert all(alert_id in page for alert_id, _, _ in ALERTS)
        assert page.count("<svg") == 3 + 3 + 5  # a chart per metric: two motors, one mill

        h.user.find(marker="report-device").click()
        h.user.find("motor-001").click()
        await h.user.should_see("The choice changed", retries=PATIENT)
        assert not _enabled(h.user, "report-pdf")  # the old preview is not downloadable
        h.user.find(marker="report-generate").click()
        await h.user.should_see("Report of device motor-001", retries=PATIENT)

        h.user.find(marker="report-pdf").click()
        pdf = await h.user.download.next(timeout=30)
        assert pdf.content.startswith(b"%PDF")
        text = "\n".join(p.extract_text() for p in pypdf.PdfReader(
            io.BytesIO(pdf.content)).pages)
        assert "Maintenance report: motor-001" in text
        assert ALERTS[0][0] in text, text
        assert "mill-001" not in text

        h.user.find(marker="report-csv").click()
        rows = list(csv.DictReader(io.StringIO((await h.user.download.next(timeout=30))
                                               .content.decode())))
        assert [(r["device"], r["metric"]) for r in rows] == [
            ("motor-001", "temperature_c"), ("motor-001", "vibration_rms_g"),
            ("motor-001", "current_a")]
        assert rows[0]["readings"] == "1800"
        assert rows[0]["alerts"] == "2"

        h.user.find(marker="report-html").click()
        page = (await h.user.download.next(timeout=30)).content.decode()
        assert page.count("<svg") == 3
        assert 'id="device-motor-001"' in page


async def test_a_custom_range_is_checked_here_and_by_the_cloud(pg_dsn: str) -> None:
    async with console_user(pg_dsn) as h:
        await sign_in(h, "viewer")
        await h.user.open("/reports")
        await h.user.should_see(marker="report-generate")
        h.user.find(marker="report-range").click()
        h.user.find("Custom range (UTC)").click()
        await h.user.should_see(marker="report-since")
        h.user.find(marker="report-since").clear().type("yesterday")
        h.user.find(marker="report-generate").click()
        await h.user.should_see("'yesterday' is not a time like 2025-01-31 13:45",
                                retries=PATIENT)
        h.user.find(marker="report-since").clear().type("2025-01-01 00:00")
        h.user.find(marker="report-until").clear().type("2025-03-01 00:00")
        h.user.find(marker="report-generate").click()
        await h.user.should_see("a report covers at most 31 days", retries=PATIENT)
        await h.user.should_not_see("Report of")


def test_a_preset_ends_after_the_current_minute_and_a_custom_range_is_read_as_utc() -> None:
    now = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    day = resolve("24h", "", "", "", now)
    assert (day.since, day.until, day.device) == (
        datetime(2025, 5, 5, 7, 9, tzinfo=UTC), datetime(2025, 5, 6, 7, 9, tzinfo=UTC), None)
    custom = resolve(CUSTOM, "2025-01-01 00:00", "2025-01-02 12:30", "motor-001", now)
    assert custom.until - custom.since == timedelta(hours=36, minutes=30)
    assert custom.device == "motor-001"
    assert custom.describe() == ("Report of device motor-001, 2025-01-01 00:00 to "
                                 "2025-01-02 12:30 UTC")
