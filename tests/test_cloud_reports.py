"""The fleet health report: numbers per device, CSV and HTML with SVG charts, range checks."""

from __future__ import annotations

import csv
import io
from xml.etree import ElementTree

import pytest

from tests.fixtures.cloud import Biz
from tests.fixtures.factories import T0, make_alert, make_reading, upload

DAY_MS = 86_400_000
RANGE = {"since": "2023-11-14T00:00:00Z", "until": "2023-11-17T00:00:00Z"}  # T0 is on day 1


@pytest.fixture
def biz(biz: Biz) -> Biz:
    """dev-1: 10 readings (2 anomalous), 2 alerts; dev-2: 4 readings, no alert; one order."""
    readings = [make_reading(i, ts_ms=T0 + i * 1000, anomalous=i in {3, 7})
                for i in range(10)]
    readings += [make_reading(i, device="dev-2", ts_ms=T0 + DAY_MS + i) for i in range(4)]
    readings.append(make_reading(99, ts_ms=T0 + 30 * DAY_MS))  # outside the range
    upload(biz.dsn, [make_alert("aaaa0001"),
                    make_alert("aaaa0002", severity="low", opened_ms=T0 + DAY_MS)], readings)
    upload(biz.dsn, [make_alert("cccc0001", device="dev-3", severity="low",
                               opened_ms=T0 + 40 * DAY_MS)])
    r = biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0001/orders", {"title": "fix"})
    assert r.status_code == 201
    return biz


def test_report_numbers(biz: Biz) -> None:
    report = biz.get("viewer", "/api/v1/reports/fleet-health", **RANGE).json()
    devices = {d["device"]: d for d in report["devices"]}
    assert devices["dev-1"] == {
        "device": "dev-1", "readings": 10, "anomalous": 2, "anomalous_share": 0.2,
        "alerts": 2, "high_alerts": 1, "open_orders": 1, "health": "critical",
    }
    assert devices["dev-2"]["readings"] == 4
    assert devices["dev-2"]["health"] == "ok"
    assert "dev-3" not in devices  # unregistered, and its only alert is outside the range
    assert [(d["day"], d["alerts"], d["high"]) for d in report["alerts_per_day"]] == [
        ("2023-11-14", 1, 1), ("2023-11-15", 1, 0), ("2023-11-16", 0, 0)]


def test_report_as_csv_and_html(biz: Biz) -> None:
    as_csv = biz.get("viewer", "/api/v1/reports/fleet-health", format="csv", **RANGE)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert 'filename="fleet-health-20231114-20231117.csv"' in as_csv.headers[
        "content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["device"], r["readings"], r["health"]) for r in rows] == [
        ("dev-1", "10", "critical"), ("dev-2", "4", "ok")]
    page = biz.get("viewer", "/api/v1/reports/fleet-health", format="html", **RANGE)
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.count("<svg") == 2
    assert "20.00%" in html  # dev-1's anomalous share in the table
    # Each chart is well-formed SVG: three days of bars (total and high), two device bars.
    charts = [html[i: html.index("</svg>", i) + 6] for i in range(len(html))
              if html.startswith("<svg", i)]
    bars = [ElementTree.fromstring(svg).findall("{http://www.w3.org/2000/svg}rect")  # noqa: S314
            for svg in charts]
    assert [len(b) for b in bars] == [6, 2]


def test_report_range_checks(biz: Biz) -> None:
    url = "/api/v1/reports/fleet-health"
    backwards = {"since": RANGE["until"], "until": RANGE["since"]}
    assert biz.get("viewer", url, **backwards).status_code == 422
    assert biz.get("viewer", url, since="2020-01-01T00:00:00Z",
                   until="2023-01-01T00:00:00Z").status_code == 422
    assert biz.get("viewer", url, format="pdf").status_code == 422
    assert biz.get("viewer", url).status_code == 200  # the last 7 days by default
    assert biz.client.get(url).status_code == 401
