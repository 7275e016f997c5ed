"""The range report of a device or the fleet, on a real PostgreSQL seeded through the real
ingest path: figures from the rollups, completeness, alerts with decisions, orders, and the
CSV, HTML (inline SVG) and PDF renderings; range checks and authentication."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from statistics import fmean
from xml.etree import ElementTree

import psycopg
import pypdf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.ingest.rollup import fold_pending
from cloud.query import range_report
from shared.schemas import MANUAL_BOOT, Reading
from tests.fixtures.cloud import Biz
from tests.fixtures.factories import make_alert, upload

URL = "/api/v1/reports/devices"
BASE = 1_699_999_200_000  # 2023-11-14T22:00:00Z
MIN = 60_000
# Ends inside hours on purpose: the summary adds whole hours (readings_1h) to the partial
# hours at either end (readings_1m). `until` is rounded down to 02:45.
RANGE = {"since": "2023-11-14T22:30:00Z", "until": "2023-11-15T02:45:30Z"}
GAP = range(100, 105)  # dev-1's readings that never reached the cloud
IN_RANGE = [i for i in range(30, 285) if i not in GAP]
SVG = "{http://www.w3.org/2000/svg}"


def motor(seq: int, device: str = "dev-1", anomalous: bool = False) -> Reading:
    """dev-1 reads once a minute from 22:00; the values vary so a wrong fold shows."""
    ts = BASE + seq * MIN
    return Reading(device=device, boot="b00710ad", seq=seq, type="motor", ts_ms=ts,
                   device_ts_ms=ts, received_ms=ts, metrics=values(seq), score=0.1,
                   scorer="stat", anomalous=anomalous)


def values(seq: int) -> dict[str, float]:
    """The metrics of reading ``seq``."""
    return {"temperature_c": 40.0 + seq % 10, "current_a": 3.5 + seq / 100}


@pytest.fixture
def biz(biz: Biz) -> Biz:
    """dev-1: readings each minute 22:00..02:59 (seqs 100..104 lost, 150 and 151 anomalous),
    an alert resolved as a confirmed failure with an order, one left open, one before the
    range; dev-2: four readings."""
    seqs = [i for i in range(300) if i not in GAP]
    first = [motor(i, anomalous=i in {150, 151}) for i in seqs if i < 200]
    upload(biz.dsn, [make_alert("aaaa0001", opened_ms=BASE + 60 * MIN),
                     make_alert("aaaa0002", severity="low", opened_ms=BASE + 180 * MIN),
                     make_alert("aaaa0003", opened_ms=BASE - 60 * MIN)], first)
    with psycopg.connect(biz.dsn) as conn:
        fold_pending(conn)  # the first batch in the rollup tables, the second maybe pending
    upload(biz.dsn, readings=[motor(i) for i in seqs if i >= 200]
           + [motor(40 + i, device="dev-2") for i in range(4)])
    r = biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0001/resolve",
                 {"decision": "confirmed_failure", "comment": "bearing worn — replaced ✓"})
    assert r.status_code == 200, r.text
    r = biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0001/orders",
                 {"title": "replace bearing", "priority": "high"})
    assert r.status_code == 201, r.text
    return biz


def test_device_figures(biz: Biz) -> None:
    report = biz.get("viewer", URL, device="dev-1", **RANGE).json()
    assert report["scope"] == "dev-1"
    assert (report["since"], report["until"]) == ("2023-11-14T22:30:00Z",
                                                  "2023-11-15T02:45:00Z")
    [dev] = report["devices"]
    assert dev["completeness"] == {"readings": 250, "expected": 255, "missing": 5, "boots": 1,
                                   "aggregated": 0, "share": round(250 / 255, 6)}
    assert dev["anomalous"] == 2
    for summary in dev["metrics"]:
        series = [values(i)[summary["metric"]] for i in IN_RANGE]
        assert summary["values"] == len(series)
        assert summary["min"] == min(series)
        assert summary["max"] == max(series)
        assert summary["mean"] == pytest.approx(fmean(series))
    assert [m["metric"] for m in dev["metrics"]] == ["temperature_c", "current_a"]  # profile
    assert dev["metrics"][0]["unit"] == "°C"
    assert [(a["alert_id"], a["review"], a["decision"], a["comment"]) for a in dev["alerts"]] \
        == [("aaaa0001", "resolved", "confirmed_failure", "bearing worn — replaced ✓"),
            ("aaaa0002", "open", None, "")]
    assert [(o["title"], o["priority"], o["status"]) for o in dev["orders"]] == [
        ("replace bearing", "high", "open")]
    # 4 h 15 min in buckets of 2 min, a point for each bucket holding a reading.
    for s in dev["series"]:
        assert s["width_s"] == 120
        assert sum(1 for _ in s["points"]) == len({(BASE + i * MIN) // 120_000
                                                  for i in IN_RANGE})


def test_fleet_csv_rows(biz: Biz) -> None:
    resp = biz.get("viewer", URL, format="csv", **RANGE)
    assert resp.headers["content-type"].startswith("text/csv")
    assert 'filename="report-fleet-20231114T2230-20231115T0245.csv"' in resp.headers[
        "content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [(r["device"], r["metric"]) for r in rows] == [
        ("dev-1", "temperature_c"), ("dev-1", "current_a"),
        ("dev-2", "temperature_c"), ("dev-2", "current_a")]
    dev1 = rows[0]
    assert (dev1["readings"], dev1["missing"], dev1["alerts"], dev1["high_alerts"],
            dev1["confirmed_failures"], dev1["orders_not_done"]) == ("250", "5", "2", "1", "1",
                                                                       "1")
    assert (float(dev1["min"]), float(dev1["max"])) == (40.0, 49.0)
    assert rows[2]["values"] == "4"
    assert rows[2]["alerts"] == "0"


def test_html_is_self_contained_with_a_chart_per_metric(biz: Biz) -> None:
    resp = biz.get("viewer", URL, format="html", **RANGE)
    assert resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert "<script" not in page
    assert "src=" not in page
    assert "<link" not in page
    charts = [page[i: page.index("</svg>", i) + 6] for i in range(len(page))
              if page.startswith("<svg", i)]
    trees = [ElementTree.fromstring(svg) for svg in charts]  # noqa: S314 (our own output)
    assert [t.get("data-metric") for t in trees] == ["temperature_c", "current_a"] * 2
    # dev-1's charts mark both its alerts where they opened; dev-2's none.
    marks = [[m.get("data-alert") for m in t.iter(f"{SVG}line") if m.get("data-alert")]
             for t in trees]
    assert marks == [["aaaa0001", "aaaa0002"]] * 2 + [[], []]
    assert all(len(list(t.iter(f"{SVG}polyline"))) >= 1 for t in trees)
    assert "confirmed failure" in page
    assert "bearing worn — replaced ✓" in page
    assert "replace bearing" in page
    assert "250 raw readings of 255" in page


def test_pdf_has_the_same_content(biz: Biz) -> None:
    resp = biz.get("viewer", URL, format="pdf", device="dev-1", **RANGE)
    assert resp.headers["content-type"] == "application/pdf"
    assert 'attachment; filename="report-dev-1-' in resp.headers["content-disposition"]
    assert resp.content.startswith(b"%PDF")
    pdf = pypdf.PdfReader(io.BytesIO(resp.content))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    for expected in ("Maintenance report: dev-1", "aaaa0001", "confirmed failure",
                     "replace bearing", "250 raw readings of 255", "temperature_c (°C)",
                     "current_a"):
        assert expected in text, expected
    # Outside Latin-1 (all the PDF core fonts know): the report's own font prints them.
    assert "bearing worn — replaced ✓" in text
    # The charts are vector drawings on the page, not pictures: their labels are text.
    assert "mean per 2 min bucket" in text


def test_simulated_faults_and_manual_entries_are_marked(biz: Biz) -> None:
    """dev-3: ten readings, the last four with an injected SIMULATED fault, an alert they
    opened, and two manual entries by a technician: counted apart (not as a boot of the
    device's), and marked SIMULATED in the JSON, the CSV and the HTML."""
    sim = [motor(40 + i, device="dev-3").model_copy(update={"origin": "simulated"})
           if i >= 6 else motor(40 + i, device="dev-3") for i in range(10)]
    manual = [Reading(device="dev-3", boot=MANUAL_BOOT, seq=k, type="motor",
                      ts_ms=BASE + (50 + k) * MIN, device_ts_ms=None,
                      received_ms=BASE + (50 + k) * MIN, metrics=m, score=None,
                      scorer="none", anomalous=False, origin="manual", note=note)
              for k, (m, note) in enumerate([({"temperature_c": 61.5}, "casing warm"),
                                             ({}, "belt checked")])]
    drill = make_alert("aaaa0009", device="dev-3", opened_ms=BASE + 46 * MIN).model_copy(
        update={"simulated": True})
    upload(biz.dsn, [drill], [*sim, *manual])
    [dev] = biz.get("viewer", URL, device="dev-3", **RANGE).json()["devices"]
    assert (dev["simulated"], dev["manual"]) == (4, 2)
    assert dev["completeness"]["boots"] == 1
    assert dev["completeness"]["readings"] == 10
    assert [(a["alert_id"], a["simulated"]) for a in dev["alerts"]] == [("aaaa0009", True)]
    rows = list(csv.DictReader(io.StringIO(
        biz.get("viewer", URL, device="dev-3", format="csv", **RANGE).text)))
    assert {(r["simulated_readings"], r["simulated_alerts"], r["manual_entries"])
            for r in rows} == {("4", "1", "2")}
    page = biz.get("viewer", URL, device="dev-3", format="html", **RANGE).text
    assert "SIMULATED: 4 readings carry an injected fault" in page
    assert "2 manual entries by a technician" in page
    assert "high SIMULATED" in page


def test_range_checks_and_access(biz: Biz) -> None:
    too_long = biz.get("viewer", URL, since="2023-10-01T00:00:00Z",
                       until="2023-11-02T00:00:00Z")
    assert too_long.status_code == 422
    assert "at most 31 days" in too_long.json()["detail"]
    assert biz.get("viewer", URL, since=RANGE["until"], until=RANGE["since"]).status_code == 422
    assert biz.get("viewer", URL, since="2023-11-14T22:30:00Z",
                   until="2023-11-14T22:30:40Z").status_code == 422  # under a minute
    assert biz.get("viewer", URL, format="xml").status_code == 422
    assert biz.get("viewer", URL, device="no such!").status_code == 422
    missing = biz.get("viewer", URL, device="dev-9", **RANGE)
    assert missing.status_code == 404
    assert "dev-9" in missing.json()["detail"]
    assert biz.get("viewer", URL).status_code == 200  # the last 7 days by default
    assert biz.client.get(URL, params=RANGE).status_code == 401
    assert biz.client.get(URL, params=RANGE,
                          headers={"Authorization": "Bearer nope"}).status_code == 401


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1),
                    timezones=st.just(UTC)),
       st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=40)))
def test_any_range_is_either_refused_or_whole_minutes_within_31_days(
        since: datetime, length: timedelta) -> None:
    def minute(at: datetime) -> datetime:
        return at.replace(second=0, microsecond=0)

    span = minute(since + length) - minute(since)
    if not timedelta(0) < span <= timedelta(days=31):
        with pytest.raises(range_report.RangeError, match=r"until|at most 31 days"):
            range_report.bounds(since, since + length)
        return
    lo, hi = range_report.bounds(since, since + length)
    assert (lo, hi) == (minute(since), minute(since + length))
    width = range_report.chart_width_s(lo, hi)
    assert width % 60 == 0
    assert width < 3600 or width % 3600 == 0  # hour-wide buckets come from readings_1h
    assert (hi - lo).total_seconds() / width <= range_report.CHART_POINTS
