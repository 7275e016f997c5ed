"""The range report's charts as plain SVG: one line chart per metric (mean per bucket, the
min..max band around it), with the alerts opened in the range marked where they opened.

The same SVG goes inline into the HTML report and, drawn by fpdf2, into the PDF: one chart
implementation. So it sticks to what both read well: rect, line, polyline, polygon and text
with Latin-1 characters, no CSS, no scripts.
"""

from __future__ import annotations

import html
import math
from datetime import datetime

from cloud.query.range_report import ChartPoint, MetricSeries, MetricSummary, ReportAlert

WIDTH, HEIGHT = 720, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 12, 26, 30
SEVERITY_COLOURS = {"high": "#c62828", "medium": "#ef6c00", "low": "#f9a825"}
_LINE, _BAND, _GRID, _TEXT = "#1565c0", "#bbdefb", "#e0e0e0", "#424242"
_TICKS = 4


def _num(value: float) -> str:
    """A tick label short enough for the axis."""
    return f"{value:.4g}"


def _axis(lo: float, hi: float) -> tuple[float, float, float]:
    """Axis ends on round numbers around [lo, hi] and the step between about _TICKS ticks."""
    if hi - lo < 1e-9:  # a flat line: give it some room around its value
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / _TICKS
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def _stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M}"


def line_chart(series: MetricSeries, summary: MetricSummary, alerts: list[ReportAlert],
               since: datetime, until: datetime) -> str:
    """An SVG line chart of ``series`` over [since, until) with ``alerts`` marked."""
    esc = html.escape
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    lo, hi, step = _axis(min((p.min for p in series.points), default=0.0),
                         max((p.max for p in series.points), default=1.0))
    span_s = (until - since).total_seconds()

    def x(at: datetime) -> float:
        return _LEFT + (at - since).total_seconds() / span_s * plot_w

    def y(value: float) -> float:
        return _TOP + (hi - value) / (hi - lo) * plot_h

    unit = f" ({summary.unit})" if summary.unit else ""
    width_text = (f"{series.width_s // 3600} h" if series.width_s % 3600 == 0
                  else f"{series.width_s // 60} min")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(series.metric)} chart"'
        f' data-metric="{esc(series.metric)}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{_LEFT}" y="16" font-family="Helvetica" font-size="13" fill="{_TEXT}"'
        f' font-weight="bold">{esc(series.metric)}{esc(unit)}</text>',
        f'<text x="{WIDTH - _RIGHT}" y="16" font-family="Helvetica" font-size="10"'
        f' fill="{_TEXT}" text-anchor="end">mean per {width_text} bucket, band min to max;'
        f" alerts marked</text>",
    ]
    for i in range(round((hi - lo) / step) + 1):
        value = lo + step * i
        ty = y(value)
        parts.append(f'<line x1="{_LEFT}" y1="{ty:.1f}" x2="{WIDTH - _RIGHT}" y2="{ty:.1f}"'
                     f' stroke="{_GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{ty + 3.5:.1f}" font-family="Helvetica"'
                     f' font-size="10" fill="{_TEXT}" text-anchor="end">{_num(value)}</text>')
    for segment in _segments(series):
        upper = " ".join(f"{x(p.start):.1f},{y(p.max):.1f}" for p in segment)
        lower = " ".join(f"{x(p.start):.1f},{y(p.min):.1f}" for p in reversed(segment))
        parts.append(f'<polygon points="{upper} {lower}" fill="{_BAND}" stroke="none"/>')
        if len(segment) == 1:
            p = segment[0]
            parts.append(f'<rect x="{x(p.start) - 1.5:.1f}" y="{y(p.avg) - 1.5:.1f}"'
                         f' width="3" height="3" fill="{_LINE}"/>')
        else:
            line = " ".join(f"{x(p.start):.1f},{y(p.avg):.1f}" for p in segment)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{_LINE}"'
                         ' stroke-width="1.5"/>')
    for alert in alerts:
        ax = x(alert.opened_at)
        colour = SEVERITY_COLOURS.get(alert.severity, _TEXT)
        parts.append(
            f'<line x1="{ax:.1f}" y1="{_TOP}" x2="{ax:.1f}" y2="{_TOP + plot_h}"'
            f' stroke="{colour}" stroke-width="1.5" data-alert="{esc(alert.alert_id)}">'
            f"<title>{esc(alert.severity)} alert {esc(alert.alert_id)} opened"
            f" {_stamp(alert.opened_at)} UTC</title></line>"
            f'<polygon points="{ax - 5:.1f},{_TOP - 6} {ax + 5:.1f},{_TOP - 6} {ax:.1f},{_TOP}"'
            f' fill="{colour}"/>'
        )
    base = _TOP + plot_h
    parts.append(f'<line x1="{_LEFT}" y1="{base}" x2="{WIDTH - _RIGHT}" y2="{base}"'
                 f' stroke="{_TEXT}" stroke-width="1"/>')
    middle = since + (until - since) / 2
    for at, anchor, tx in ((since, "start", _LEFT), (middle, "middle", _LEFT + plot_w / 2),
                           (until, "end", WIDTH - _RIGHT)):
        parts.append(f'<text x="{tx:.1f}" y="{base + 16}" font-family="Helvetica"'
                     f' font-size="10" fill="{_TEXT}" text-anchor="{anchor}">'
                     f"{_stamp(at)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _segments(series: MetricSeries) -> list[list[ChartPoint]]:
    """The points split where buckets are missing: no line is drawn across a data gap."""
    out: list[list[ChartPoint]] = []
    previous = None
    for p in series.points:
        if previous is None or (p.start - previous).total_seconds() > series.width_s:
            out.append([])
        out[-1].append(p)
        previous = p.start
    return out
