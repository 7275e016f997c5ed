"""The fleet health report for a time range: as data, as CSV, as HTML with inline SVG charts.

Per device: readings (those folded into gateway aggregates included), share of them scored
anomalous, alerts opened (and how many high), and maintenance orders still open; plus alerts
per day over the range. No chart library: the SVG is a few rectangles, and the HTML page is
self-contained (prints to PDF from any browser).
"""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from cloud.db.pool import Conn

MAX_DAYS = 366
Health = Literal["ok", "warning", "critical"]
# Above this share of anomalous readings a device is flagged even without alerts.
_WARN_SHARE = 0.05
_CHART_DEVICES = 40


class DeviceHealth(BaseModel):
    """One device over the report's range."""

    device: str
    readings: int
    anomalous: int
    anomalous_share: float = Field(description="anomalous / readings (0 with no readings)")
    alerts: int = Field(description="alerts opened in the range")
    high_alerts: int
    open_orders: int = Field(description="maintenance orders not done, now")
    health: Health = Field(description="critical: a high alert; warning: any alert or ≥ 5 %")


class DayCount(BaseModel):
    """Alerts opened on one UTC day."""

    day: date
    alerts: int
    high: int


class FleetReport(BaseModel):
    """The fleet health report."""

    since: datetime
    until: datetime
    generated_at: datetime
    devices: list[DeviceHealth]
    alerts_per_day: list[DayCount]


def fleet_health(conn: Conn, since: datetime, until: datetime) -> FleetReport:
    """Build the report for ``[since, until)`` (the caller checks the range is sane)."""
    rows = conn.execute(
        # Readings folded into per-minute aggregates at the gateway count too (as many as
        # the minute's best-covered metric holds); none of them is known to be anomalous.
        "WITH r AS (SELECT device_id, sum(n)::bigint AS n, sum(bad)::bigint AS bad FROM ("
        "   SELECT device_id, count(*) AS n, count(*) FILTER (WHERE anomalous) AS bad"
        "   FROM readings WHERE ts >= %(since)s AND ts < %(until)s GROUP BY device_id"
        "   UNION ALL SELECT device_id, sum(n), 0 FROM ("
        "     SELECT device_id, minute, max(n) AS n FROM reading_aggregates"
        "     WHERE minute >= %(since)s AND minute < %(until)s GROUP BY 1, 2) m GROUP BY 1"
        "  ) x GROUP BY device_id),"
        " a AS (SELECT device_id, count(*) AS n, count(*) FILTER (WHERE severity = 'high') AS hi"
        "   FROM alerts WHERE opened_at >= %(since)s AND opened_at < %(until)s"
        "   GROUP BY device_id),"
        " o AS (SELECT device_id, count(*) AS n FROM maintenance_orders"
        "   WHERE status <> 'done' GROUP BY device_id),"
        " d AS (SELECT device_id FROM devices UNION SELECT device_id FROM r"
        "   UNION SELECT device_id FROM a UNION SELECT device_id FROM o)"
        " SELECT d.device_id, coalesce(r.n, 0), coalesce(r.bad, 0), coalesce(a.n, 0),"
        "  coalesce(a.hi, 0), coalesce(o.n, 0)"
        " FROM d LEFT JOIN r USING (device_id) LEFT JOIN a USING (device_id)"
        " LEFT JOIN o USING (device_id) ORDER BY d.device_id",
        {"since": since, "until": until},
    ).fetchall()
    devices = []
    for device, n, bad, alerts, high, orders in rows:
        share = bad / n if n else 0.0
        health: Health = (
            "critical" if high else "warning" if alerts or share >= _WARN_SHARE else "ok"
        )
        devices.append(DeviceHealth(
            device=device, readings=n, anomalous=bad, anomalous_share=round(share, 6),
            alerts=alerts, high_alerts=high, open_orders=orders, health=health,
        ))
    per_day = {
        day: (n, hi)
        for day, n, hi in conn.execute(
            "SELECT (opened_at AT TIME ZONE 'UTC')::date, count(*),"
            " count(*) FILTER (WHERE severity = 'high') FROM alerts"
            " WHERE opened_at >= %s AND opened_at < %s GROUP BY 1",
            (since, until),
        )
    }
    first, last = since.astimezone(UTC).date(), (until - timedelta(microseconds=1)).astimezone(
        UTC).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return FleetReport(
        since=since, until=until, generated_at=datetime.now(UTC), devices=devices,
        alerts_per_day=[
            DayCount(day=d, alerts=per_day.get(d, (0, 0))[0], high=per_day.get(d, (0, 0))[1])
            for d in days
        ],
    )


CSV_COLUMNS = (
    "device", "readings", "anomalous", "anomalous_share", "alerts", "high_alerts",
    "open_orders", "health",
)


def to_csv(report: FleetReport) -> str:
    """One row per device (device ids match the wire pattern: no formula characters)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for d in report.devices:
        writer.writerow([getattr(d, c) for c in CSV_COLUMNS])
    return out.getvalue()


def _bars_by_day(days: list[DayCount], width: int = 720, height: int = 180) -> str:
    top = max((d.alerts for d in days), default=0) or 1
    step = width / max(len(days), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}"'
        ' role="img" aria-label="alerts per day">',
        f'<text x="0" y="12" font-size="11">max {top} alerts/day</text>',
    ]
    for i, d in enumerate(days):
        x = i * step
        for value, colour in ((d.alerts, "#f0ad4e"), (d.high, "#d9534f")):
            h = value / top * (height - 20)
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(step - 1, 1):.1f}"'
                f' height="{h:.1f}" fill="{colour}"><title>{d.day}: {d.alerts} alerts,'
                f" {d.high} high</title></rect>"
            )
    parts.append(f'<text x="0" y="{height + 15}" font-size="11">{days[0].day if days else ""}'
                 f"</text>")
    parts.append(f'<text x="{width}" y="{height + 15}" font-size="11" text-anchor="end">'
                 f'{days[-1].day if days else ""}</text></svg>')
    return "".join(parts)


def _bars_by_device(devices: list[DeviceHealth], width: int = 720) -> str:
    shown = sorted(devices, key=lambda d: -d.anomalous_share)[:_CHART_DEVICES]
    row = 18
    colour = {"ok": "#5cb85c", "warning": "#f0ad4e", "critical": "#d9534f"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(shown) + 4}"'
        ' role="img" aria-label="anomalous share per device">'
    ]
    for i, d in enumerate(shown):
        y = i * row
        w = d.anomalous_share * (width - 260)
        parts.append(
            f'<text x="0" y="{y + 13}" font-size="12">{html.escape(d.device)}</text>'
            f'<rect x="180" y="{y + 3}" width="{w:.1f}" height="{row - 6}"'
            f' fill="{colour[d.health]}"/>'
            f'<text x="{184 + w:.1f}" y="{y + 13}" font-size="11">'
            f"{d.anomalous_share:.1%}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: FleetReport) -> str:
    """A self-contained HTML page: totals, two SVG charts and the per-device table."""
    esc = html.escape
    rows = "".join(
        f'<tr class="{d.health}"><td>{esc(d.device)}</td><td>{d.readings}</td>'
        f"<td>{d.anomalous_share:.2%}</td><td>{d.alerts}</td><td>{d.high_alerts}</td>"
        f"<td>{d.open_orders}</td><td>{d.health}</td></tr>"
        for d in report.devices
    )
    total = sum(d.readings for d in report.devices)
    alerts = sum(d.alerts for d in report.devices)
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<title>Fleet health report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}tr.critical{background:#fbe3e2}"
        "tr.warning{background:#fdf3e1}</style></head><body>"
        "<h1>Fleet health report</h1>"
        f"<p>{esc(report.since.isoformat())} to {esc(report.until.isoformat())} "
        f"(generated {esc(report.generated_at.isoformat(timespec='seconds'))}): "
        f"{len(report.devices)} devices, {total} readings, {alerts} alerts.</p>"
        "<h2>Alerts per day</h2>" + _bars_by_day(report.alerts_per_day)
        + "<h2>Anomalous share per device</h2>" + _bars_by_device(report.devices)
        + "<h2>Devices</h2><table><tr><th>device</th><th>readings</th><th>anomalous</th>"
        "<th>alerts</th><th>high</th><th>open orders</th><th>health</th></tr>"
        + rows + "</table></body></html>"
    )
