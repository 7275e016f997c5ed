"""The range report (cloud/query/range_report.py) as CSV, as a self-contained HTML page and as
a PDF; the HTML and the PDF carry the same sections and the same SVG charts.

PDF: fpdf2 (pure Python, no system libraries) with DejaVu Sans, shipped in ``fonts/`` (its
license beside it): a comment in Greek or Cyrillic, a "≥" or a "µm" prints as typed, where
the PDF core fonts know Latin-1 only. A character outside DejaVu Sans (CJK, say) is drawn as
its missing-glyph box; fpdf2 logs which.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from cloud.query.range_report import DeviceSection, RangeReport
from cloud.query.report_charts import SEVERITY_COLOURS, line_chart

CSV_COLUMNS = (
    "device", "type", "gateway", "metric", "unit", "values", "min", "mean", "max",
    "readings", "expected", "missing", "aggregated", "completeness", "anomalous", "alerts",
    "high_alerts", "confirmed_failures", "false_positives", "orders_not_done",
    "simulated_readings", "simulated_alerts", "manual_entries",
)
DECISIONS = {"confirmed_failure": "confirmed failure", "false_positive": "false positive",
             "needs_inspection": "needs inspection"}


def title(report: RangeReport) -> str:
    """The report's heading."""
    return ("Fleet maintenance report" if report.scope == "fleet"
            else f"Maintenance report: {report.scope}")


def filename(report: RangeReport, extension: str) -> str:
    """``report-<scope>-<since>-<until>.<extension>`` (scope is a wire id: safe in a name)."""
    return f"report-{report.scope}-{report.since:%Y%m%dT%H%M}-{report.until:%Y%m%dT%H%M}." \
           f"{extension}"


def _stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _span(report: RangeReport) -> str:
    return (f"{_stamp(report.since)} to {_stamp(report.until)} "
            f"(generated {_stamp(report.generated_at)})")


def _counts(d: DeviceSection) -> dict[str, int]:
    decisions = [a.decision for a in d.alerts]
    return {
        "alerts": len(d.alerts), "high_alerts": sum(a.severity == "high" for a in d.alerts),
        "confirmed_failures": decisions.count("confirmed_failure"),
        "false_positives": decisions.count("false_positive"),
        "orders_not_done": sum(o.status != "done" for o in d.orders),
        "simulated_alerts": sum(a.simulated for a in d.alerts),
    }


def _completeness_text(d: DeviceSection) -> str:
    c = d.completeness
    if not c.expected:
        text = "No raw readings in the range."
    else:
        text = (f"{c.readings} raw readings of {c.expected} counted by the device over "
                f"{c.boots} boot{'s' if c.boots != 1 else ''} ({c.share:.2%}); {c.missing} "
                f"missing. {d.anomalous} scored anomalous.")
    if c.aggregated:
        text += f" {c.aggregated} readings were folded into minute aggregates by the gateway."
    if d.simulated:
        text += (f" SIMULATED: {d.simulated} readings carry an injected fault (a drill or a "
                 "demo, not the machine).")
    if d.manual:
        text += f" {d.manual} manual entr{'y' if d.manual == 1 else 'ies'} by a technician."
    return text


def _review(d: DeviceSection) -> list[list[str]]:
    return [[_stamp(a.opened_at), f"{a.severity} SIMULATED" if a.simulated else a.severity,
             f"{a.score:.3f}", f"{a.gateway}/{a.alert_id}",
             a.review, DECISIONS.get(a.decision or "", ""), a.reviewed_by or "", a.comment]
            for a in d.alerts]


def _orders(d: DeviceSection) -> list[list[str]]:
    return [[str(o.order_id), o.title, o.priority, o.status, o.assignee or "",
             str(o.due_date or ""), _stamp(o.created_at)] for o in d.orders]


_ALERT_HEAD = ["opened", "severity", "score", "alert", "review", "decision", "by", "comment"]
_ORDER_HEAD = ["order", "title", "priority", "status", "assignee", "due", "created"]
_METRIC_HEAD = ["metric", "unit", "values", "min", "mean", "max"]
_OVERVIEW_HEAD = ["device", "type", "readings", "complete", "anomalous", "alerts", "high",
                  "confirmed", "orders open"]


def _overview(report: RangeReport) -> list[list[str]]:
    rows = []
    for d in report.devices:
        n = _counts(d)
        rows.append([d.device, d.type, str(d.completeness.readings),
                     f"{d.completeness.share:.1%}", str(d.anomalous), str(n["alerts"]),
                     str(n["high_alerts"]), str(n["confirmed_failures"]),
                     str(n["orders_not_done"])])
    return rows


def _metrics(d: DeviceSection) -> list[list[str]]:
    return [[m.metric, m.unit, str(m.values), f"{m.min:.4g}", f"{m.mean:.4g}", f"{m.max:.4g}"]
            for m in d.metrics]


def charts(report: RangeReport, d: DeviceSection) -> list[str]:
    """The device's SVG charts, one per metric with data."""
    summaries = {m.metric: m for m in d.metrics}
    return [line_chart(s, summaries[s.metric], d.alerts, report.since, report.until)
            for s in d.series]


# -- CSV ---------------------------------------------------------------------------------------

def to_csv(report: RangeReport) -> str:
    """One row per device and metric (a device without data in the range: one row, no metric)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for d in report.devices:
        c, n = d.completeness, _counts(d)
        tail = [c.readings, c.expected, c.missing, c.aggregated, round(c.share, 6),
                d.anomalous, n["alerts"], n["high_alerts"], n["confirmed_failures"],
                n["false_positives"], n["orders_not_done"], d.simulated,
                n["simulated_alerts"], d.manual]
        # Ids match the wire pattern and metric names [a-z0-9_]: no formula characters.
        rows: list[list[object]] = [
            [m.metric, m.unit, m.values, m.min, round(m.mean, 6), m.max] for m in d.metrics]
        for values in rows or [["", "", 0, "", "", ""]]:
            writer.writerow([d.device, d.type, d.gateway, *values, *tail])
    return out.getvalue()


# -- HTML --------------------------------------------------------------------------------------

def _table(head: Sequence[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="none">{html.escape(empty)}</p>'
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


_CSS = (
    "body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#212121;max-width:60em}"
    "h1{font-size:1.6em}h2{margin-top:2em;border-bottom:2px solid #1565c0}"
    "h3{font-size:1.05em;margin:1.2em 0 .4em}"
    "table{border-collapse:collapse;font-size:.9em;margin:.4em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#eceff1}"
    ".none{color:#757575}svg{display:block;margin:.5em 0;max-width:100%;height:auto}"
    + "".join(f".sev-{k}{{color:{v}}}" for k, v in SEVERITY_COLOURS.items())
)


def to_html(report: RangeReport) -> str:
    """A self-contained page: overview, then per device its summary, charts, alerts, orders."""
    esc = html.escape
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title(report))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title(report))}</h1><p>{esc(_span(report))}</p>",
    ]
    if report.scope == "fleet":
        parts.append("<h2>Overview</h2>" + _table(_OVERVIEW_HEAD, _overview(report),
                                                   "No device has synced readings."))
    for d in report.devices:
        parts.append(f'<section id="device-{esc(d.device)}"><h2>{esc(d.device)}</h2>'
                     f"<p>type {esc(d.type)} · gateway {esc(d.gateway)}</p>"
                     f"<h3>Data completeness</h3><p>{esc(_completeness_text(d))}</p>"
                     "<h3>Readings</h3>"
                     + _table(_METRIC_HEAD, _metrics(d), "No readings in the range."))
        parts.extend(charts(report, d))
        parts.append("<h3>Alerts opened in the range</h3>"
                     + _table(_ALERT_HEAD, _review(d), "No alert opened in the range.")
                     + "<h3>Maintenance orders</h3>"
                     + _table(_ORDER_HEAD, _orders(d), "No maintenance order.")
                     + "</section>")
    parts.append("</body></html>")
    return "".join(parts)


# -- PDF ---------------------------------------------------------------------------------------

FONT = "DejaVu"
_FONTS = Path(__file__).with_name("fonts")


class _Pdf(FPDF):
    """A4 pages with the report's title and page numbers in the footer."""

    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.add_font(FONT, "", _FONTS / "DejaVuSans.ttf")
        self.add_font(FONT, "B", _FONTS / "DejaVuSans-Bold.ttf")
        self._footer_text = footer_text
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=15)

    def footer(self) -> None:
        """Report title on the left, page x of y on the right."""
        self.set_y(-11)
        self.set_font(FONT, size=7)
        self.set_text_color(117, 117, 117)
        text = self._footer_text
        room = self.epw - self.get_string_width("page 999 of 999") - 4
        while text and self.get_string_width(text) > room:  # never under the page number
            text = text[:-2] + "…"
        self.cell(0, 5, text, align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(33, 33, 33)


def _pdf_table(pdf: FPDF, head: Sequence[str], rows: list[list[str]], empty: str,
               widths: Sequence[int]) -> None:
    pdf.set_font(FONT, size=7)  # DejaVu's 7 pt is as wide as Helvetica's 8 (and as legible)
    if not rows:
        pdf.set_text_color(117, 117, 117)
        pdf.multi_cell(0, 5, empty, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(33, 33, 33)
        return
    with pdf.table(col_widths=tuple(widths), text_align="LEFT", line_height=4.2,
                   headings_style=FontFace(emphasis="BOLD", fill_color=(236, 239, 241)),
                   padding=0.8) as table:
        for row in [list(head), *rows]:
            cells = table.row()
            for value in row:
                cells.cell(value)
    pdf.ln(2)


def to_pdf(report: RangeReport) -> bytes:
    """The same sections as :func:`to_html`, charts drawn from the same SVG."""
    pdf = _Pdf(f"{title(report)} · {_span(report)}")
    pdf.set_title(title(report))
    pdf.set_creator("Smart Maintenance cloud")
    pdf.add_page()
    pdf.set_text_color(33, 33, 33)
    pdf.set_font(FONT, style="B", size=17)
    pdf.multi_cell(0, 9, title(report), new_x="LMARGIN", new_y="NEXT")
    _para(pdf, _span(report))
    if report.scope == "fleet":
        _heading(pdf, "Overview", 13)
        _pdf_table(pdf, _OVERVIEW_HEAD, _overview(report), "No device has synced readings.",
                   (34, 20, 18, 18, 20, 14, 12, 18, 22))
    for d in report.devices:
        if d is not report.devices[0]:  # a page per device
            pdf.add_page()
        _heading(pdf, d.device, 14)
        _para(pdf, f"type {d.type} · gateway {d.gateway}")
        _heading(pdf, "Data completeness", 11)
        _para(pdf, _completeness_text(d))
        _heading(pdf, "Readings", 11)
        _pdf_table(pdf, _METRIC_HEAD, _metrics(d), "No readings in the range.",
                   (50, 20, 25, 25, 25, 25))
        for svg in charts(report, d):
            pdf.image(io.BytesIO(svg.encode()), w=pdf.epw)
            pdf.ln(2)
        _heading(pdf, "Alerts opened in the range", 11)
        _pdf_table(pdf, _ALERT_HEAD, _review(d), "No alert opened in the range.",
                   (22, 13, 11, 30, 20, 24, 18, 42))
        _heading(pdf, "Maintenance orders", 11)
        _pdf_table(pdf, _ORDER_HEAD, _orders(d), "No maintenance order.",
                   (13, 55, 17, 17, 23, 20, 35))
    return bytes(pdf.output())


def _heading(pdf: FPDF, text: str, size: int) -> None:
    pdf.ln(2)
    pdf.set_font(FONT, style="B", size=size)
    pdf.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)


def _para(pdf: FPDF, text: str) -> None:
    pdf.set_font(FONT, size=9)
    pdf.multi_cell(0, 4.5, text, new_x="LMARGIN", new_y="NEXT")


RENDERERS: dict[str, tuple[str, Callable[[RangeReport], str | bytes]]] = {
    "csv": ("text/csv; charset=utf-8", to_csv),
    "html": ("text/html; charset=utf-8", to_html),
    "pdf": ("application/pdf", to_pdf),
}
