"""The range report of one device or the whole fleet: what each device measured (min, mean and
max of every metric, from the rollups), how complete its data is, its anomalies, the alerts
opened in the range with the operators' decisions, its maintenance orders, and the series
its charts draw. Rendered as CSV, HTML and PDF by cloud/query/report_formats.py.

Times are whole minutes: the rollups the summaries come from hold minute buckets, so the
range's ends are rounded down to the minute and every figure covers the same span.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, Field

from cloud.db.pool import Conn
from cloud.query.readings import bucketed
from shared.schemas import MANUAL_BOOT
from shared.sensors import PROFILES

MAX_DAYS = 31
MAX_FLEET_DEVICES = 200
# A chart draws at most this many buckets: a minute wide for short ranges, whole hours
# (served by the hourly rollup) once a range is longer than CHART_POINTS hours.
CHART_POINTS = 240


class RangeError(ValueError):
    """The range or scope asked for cannot be reported; the message says what to change."""


class MetricSummary(BaseModel):
    """One metric of one device over the range, from the minute and hour rollups."""

    metric: str
    unit: str = Field(description="from the device type's sensor profile; empty if unknown")
    values: int = Field(description="values summarised (aggregated readings included)")
    min: float
    mean: float
    max: float


class ChartPoint(BaseModel):
    """One bucket of a metric's chart."""

    start: datetime
    min: float
    avg: float
    max: float


class MetricSeries(BaseModel):
    """A metric over the range in buckets of ``width_s``."""

    metric: str
    width_s: int
    points: list[ChartPoint]


class Completeness(BaseModel):
    """How much of what the device counted reached the cloud as raw readings."""

    readings: int = Field(description="raw readings stored in the range")
    expected: int = Field(description="seq numbers spanned in the range, per boot")
    missing: int = Field(description="seqs inside those spans with no stored reading")
    boots: int = Field(description="device boots seen in the range")
    aggregated: int = Field(
        description="readings the gateway folded into minute aggregates (disk budget)")
    share: float = Field(description="readings / expected (1 with nothing expected)")


class ReportAlert(BaseModel):
    """An alert opened in the range with its review."""

    gateway: str
    alert_id: str
    opened_at: datetime
    severity: str
    score: float
    gateway_state: str = Field(description="the alert's state on its gateway")
    review: str = Field(description="open, acknowledged or resolved in the cloud")
    decision: str | None = Field(description="the resolver's decision, if resolved")
    reviewed_by: str | None
    comment: str
    simulated: bool = Field(description="opened on an injected SIMULATED fault")


class ReportOrder(BaseModel):
    """A maintenance order created in the range, raised for an alert opened in it, or not
    done yet."""

    order_id: int
    alert_id: str
    title: str
    priority: str
    status: str
    assignee: str | None
    due_date: date | None
    created_at: datetime


class DeviceSection(BaseModel):
    """Everything the report says about one device."""

    device: str
    type: str
    gateway: str
    anomalous: int = Field(description="raw readings the scorer flagged anomalous")
    simulated: int = Field(description="raw readings carrying an injected SIMULATED fault")
    manual: int = Field(description="a technician's manual entries (measurements, notes)")
    completeness: Completeness
    metrics: list[MetricSummary]
    series: list[MetricSeries]
    alerts: list[ReportAlert]
    orders: list[ReportOrder]


class RangeReport(BaseModel):
    """The report of one device (``scope`` is its id) or of the fleet (``scope`` = fleet)."""

    scope: str
    since: datetime
    until: datetime
    generated_at: datetime
    devices: list[DeviceSection]


def bounds(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The range rounded down to whole minutes; RangeError unless 0 < length <= MAX_DAYS."""
    lo = since.astimezone(UTC).replace(second=0, microsecond=0)
    hi = until.astimezone(UTC).replace(second=0, microsecond=0)
    if hi <= lo:
        raise RangeError("the range is empty: `until` must be at least a minute after `since`")
    if hi - lo > timedelta(days=MAX_DAYS):
        raise RangeError(f"a report covers at most {MAX_DAYS} days ({hi - lo} asked): "
                         "narrow since/until, or run one report per month")
    return lo, hi


def chart_width_s(since: datetime, until: datetime) -> int:
    """Bucket width for the charts: whole minutes, or whole hours past CHART_POINTS hours."""
    span = (until - since).total_seconds()
    width = max(60, math.ceil(span / CHART_POINTS / 60) * 60)
    return width if width < 3600 else -(-width // 3600) * 3600


def build(conn: Conn, since: datetime, until: datetime, device: str | None) -> RangeReport:
    """The report for [since, until) (already through :func:`bounds`) of ``device`` or all."""
    registry = conn.execute(
        "SELECT device_id, type, gateway_id FROM devices"
        " WHERE %(d)s::text IS NULL OR device_id = %(d)s ORDER BY device_id", {"d": device},
    ).fetchall()
    if device is not None and not registry:
        raise LookupError(f"no device {device!r} has synced readings")
    if len(registry) > MAX_FLEET_DEVICES:
        raise RangeError(f"the fleet has {len(registry)} devices, a report at most "
                         f"{MAX_FLEET_DEVICES}: report one device at a time")
    ids = [r[0] for r in registry]
    p = {"lo": since, "hi": until, "ids": ids}
    summaries = _summaries(conn, since, until, {r[0]: r[1] for r in registry})
    completeness = _completeness(conn, p)
    alerts = _alerts(conn, p)
    orders = _orders(conn, p)
    width = chart_width_s(since, until)
    metrics_in_use = sorted({m for per in summaries.values() for m in per})
    series: dict[tuple[str, str], list[ChartPoint]] = {}
    for metric in metrics_in_use:
        holders = [d for d in ids if metric in summaries.get(d, {})]
        for b in bucketed(conn, holders, metric, since=since, until=until,
                          width_s=width).buckets:
            series.setdefault((b.device, metric), []).append(
                ChartPoint(start=b.start, min=b.min, avg=b.avg, max=b.max))
    sections = []
    for device_id, kind, gateway in registry:
        found = summaries.get(device_id, {})
        ordered = _profile_order(kind, found)
        complete, anomalous, simulated, manual = completeness.get(device_id, (_EMPTY, 0, 0, 0))
        sections.append(DeviceSection(
            device=device_id, type=kind, gateway=gateway, anomalous=anomalous,
            simulated=simulated, manual=manual,
            completeness=complete,
            metrics=[found[m] for m in ordered],
            series=[MetricSeries(metric=m, width_s=width, points=series[(device_id, m)])
                    for m in ordered if (device_id, m) in series],
            alerts=alerts.get(device_id, []), orders=orders.get(device_id, []),
        ))
    return RangeReport(scope=device or "fleet", since=since, until=until,
                       generated_at=datetime.now(UTC), devices=sections)


def _profile_order(kind: str, found: dict[str, MetricSummary]) -> list[str]:
    """The sensor profile's metric order, then any other metric by name."""
    profile = PROFILES.get(kind)
    known = [m for m in (profile.metric_names if profile else ()) if m in found]
    return known + sorted(set(found) - set(known))


def _summaries(conn: Conn, since: datetime, until: datetime,
               kinds: dict[str, str]) -> dict[str, dict[str, MetricSummary]]:
    """Per device and metric, min/mean/max: whole hours from readings_1h, the partial hours
    at either end from readings_1m, and deltas not folded yet from rollup_pending."""
    h_lo = since if since.minute == 0 else since.replace(minute=0) + timedelta(hours=1)
    h_hi = until.replace(minute=0)
    if h_lo >= h_hi:  # no whole hour inside: minutes only
        minutes = [(since, until), (until, until)]
        h_lo = h_hi = since
    else:
        minutes = [(since, h_lo), (h_hi, until)]
    rows = conn.execute(
        "SELECT device_id, metric, min(min), sum(sum) / sum(count), max(max),"
        " sum(count)::bigint FROM ("
        " SELECT device_id, metric, min, max, sum, count FROM readings_1h"
        "  WHERE device_id = ANY(%(ids)s) AND bucket >= %(h_lo)s AND bucket < %(h_hi)s"
        " UNION ALL SELECT device_id, metric, min, max, sum, count FROM readings_1m"
        "  WHERE device_id = ANY(%(ids)s) AND (bucket >= %(a_lo)s AND bucket < %(a_hi)s"
        "   OR bucket >= %(b_lo)s AND bucket < %(b_hi)s)"
        " UNION ALL SELECT device_id, metric, min, max, sum, count FROM rollup_pending"
        "  WHERE device_id = ANY(%(ids)s) AND bucket >= %(lo)s AND bucket < %(hi)s"
        ") r GROUP BY 1, 2 HAVING sum(count) > 0",
        {"ids": list(kinds), "h_lo": h_lo, "h_hi": h_hi, "a_lo": minutes[0][0],
         "a_hi": minutes[0][1], "b_lo": minutes[1][0], "b_hi": minutes[1][1], "lo": since,
         "hi": until},
    ).fetchall()
    out: dict[str, dict[str, MetricSummary]] = {}
    for device_id, metric, lo, mean, hi, n in rows:
        profile = PROFILES.get(kinds.get(device_id, ""))
        unit = next((m.unit for m in profile.metrics if m.name == metric), "") if profile else ""
        out.setdefault(device_id, {})[metric] = MetricSummary(
            metric=metric, unit=unit, values=n, min=lo, mean=mean, max=hi)
    return out


_EMPTY = Completeness(readings=0, expected=0, missing=0, boots=0, aggregated=0, share=1.0)


def _completeness(conn: Conn, p: dict[str, object]
                  ) -> dict[str, tuple[Completeness, int, int, int]]:
    """Per device: stored vs spanned seqs per boot, and the anomalous, SIMULATED and manual
    counts, in the range.

    Gaps at the very ends of the range cannot be seen (nothing says the device counted
    there); a gap inside a boot's span is a reading lost before the cloud, not uploaded yet,
    or folded into an aggregate by its gateway. A technician's manual entries (their own
    boot, shared.schemas.MANUAL_BOOT) are counted apart: the device did not count them.
    """
    per_boot = conn.execute(
        "SELECT device_id, count(*)::bigint, count(*) FILTER (WHERE anomalous)::bigint,"
        " (max(seq) - min(seq) + 1)::bigint,"
        " count(*) FILTER (WHERE origin = 'simulated')::bigint, boot_id FROM readings"
        " WHERE device_id = ANY(%(ids)s) AND ts >= %(lo)s AND ts < %(hi)s"
        " GROUP BY device_id, boot_id", p,
    ).fetchall()
    folded: dict[str, int] = dict(conn.execute(
        "SELECT device_id, sum(n)::bigint FROM (SELECT device_id, minute, max(n) AS n"
        " FROM reading_aggregates WHERE device_id = ANY(%(ids)s)"
        " AND minute >= %(lo)s AND minute < %(hi)s GROUP BY 1, 2) m GROUP BY 1", p,
    ).fetchall())
    tally: dict[str, list[int]] = {}
    for device_id, n, bad, span, simulated, boot in per_boot:
        t = tally.setdefault(device_id, [0, 0, 0, 0, 0, 0])
        if boot == MANUAL_BOOT:
            t[5] += n
            continue
        t[0] += n
        t[1] += bad
        t[2] += span
        t[3] += 1
        t[4] += simulated
    out = {}
    for device_id in set(tally) | set(folded):
        n, bad, span, boots, simulated, manual = tally.get(device_id, [0, 0, 0, 0, 0, 0])
        out[device_id] = (Completeness(
            readings=n, expected=span, missing=span - n, boots=boots,
            aggregated=folded.get(device_id, 0), share=round(n / span, 6) if span else 1.0,
        ), bad, simulated, manual)
    return out


def _alerts(conn: Conn, p: dict[str, object]) -> dict[str, list[ReportAlert]]:
    """Alerts opened in the range with their cloud review, per device, oldest first."""
    rows = conn.execute(
        "SELECT a.device_id, a.gateway_id, a.alert_id, a.opened_at, a.severity, a.score,"
        " a.state, coalesce(r.status, 'open'), r.decision,"
        " coalesce(r.resolved_by, r.acknowledged_by), coalesce(r.comment, ''), a.simulated"
        " FROM alerts a LEFT JOIN alert_reviews r USING (gateway_id, alert_id)"
        " WHERE a.device_id = ANY(%(ids)s) AND a.opened_at >= %(lo)s AND a.opened_at < %(hi)s"
        " ORDER BY a.opened_at, a.gateway_id, a.alert_id", p,
    ).fetchall()
    out: dict[str, list[ReportAlert]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(ReportAlert(
            gateway=r[1], alert_id=r[2], opened_at=r[3], severity=r[4], score=r[5],
            gateway_state=r[6], review=r[7], decision=r[8], reviewed_by=r[9], comment=r[10],
            simulated=r[11]))
    return out


def _orders(conn: Conn, p: dict[str, object]) -> dict[str, list[ReportOrder]]:
    """Orders created in the range, raised for an alert opened in it, or created before its
    end and still not done."""
    rows = conn.execute(
        "SELECT o.device_id, o.order_id, o.alert_id, o.title, o.priority, o.status,"
        " o.assignee, o.due_date, o.created_at FROM maintenance_orders o"
        " LEFT JOIN alerts a USING (gateway_id, alert_id)"
        " WHERE o.device_id = ANY(%(ids)s) AND (o.created_at < %(hi)s"
        "  AND (o.created_at >= %(lo)s OR o.status <> 'done')"
        "  OR a.opened_at >= %(lo)s AND a.opened_at < %(hi)s)"
        " ORDER BY o.created_at, o.order_id", p,
    ).fetchall()
    out: dict[str, list[ReportOrder]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(ReportOrder(
            order_id=r[1], alert_id=r[2], title=r[3], priority=r[4], status=r[5],
            assignee=r[6], due_date=r[7], created_at=r[8]))
    return out

