"""One device: its state and a live chart of the last hour (values, anomaly score, alerts,
and the model version that scored each reading)."""

from __future__ import annotations

from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from edge.store import now_ms
from shared.schemas import Alert
from shared.sensors import PROFILES
from ui.panel import snapshot, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard
from ui.panel.series import BUCKET_MS, HOUR_MS, MAX_DRAWN, LiveHour, Point
from ui.score_axis import on_log, score_axis

_ALERT_COLORS = {"high": "#c62828", "medium": "#ef6c00", "low": "#f9a825"}


def chart_options(points: list[Point], alerts: list[Alert], shown: list[str],
                  now: int) -> dict[str, Any]:
    """ECharts options: the chosen metrics above, the anomaly score per scorer below."""
    # The axis spans the hour, or less while the device has not been reporting for that long.
    start = max(now - HOUR_MS, min((p.ts_ms for p in points), default=now - HOUR_MS))
    series: list[dict[str, Any]] = []
    for metric in shown:
        series.append({
            "name": metric, "type": "line", "showSymbol": False, "xAxisIndex": 0,
            "yAxisIndex": 0,
            "data": [[p.ts_ms, p.metrics[metric]] for p in points if metric in p.metrics]})
    by_scorer: dict[str, list[list[float]]] = {}
    for p in points:
        if p.score is not None:
            by_scorer.setdefault(p.scored_by, []).append([p.ts_ms, on_log(p.score)])
    for name, data in by_scorer.items():
        series.append({"name": f"score ({name})", "type": "line", "showSymbol": False,
                       "xAxisIndex": 1, "yAxisIndex": 1, "data": data})
    series.append({
        "name": "anomalous reading", "type": "scatter", "symbolSize": 5, "xAxisIndex": 1,
        "yAxisIndex": 1, "itemStyle": {"color": "#c62828"},
        "data": [[p.ts_ms, on_log(p.score)] for p in points
                 if p.anomalous and p.score is not None]})
    series.append({
        "name": "alert opened", "type": "scatter", "symbol": "pin", "symbolSize": 26,
        "xAxisIndex": 1, "yAxisIndex": 1,
        "data": [{"value": [max(a.opened_ms, start), on_log(a.score)],
                  "itemStyle": {"color": _ALERT_COLORS[a.severity]},
                  "name": f"{a.severity} alert, {a.state}"} for a in alerts],
        "markArea": {"silent": True, "itemStyle": {"color": "rgba(198,40,40,0.08)"},
                     "data": [[{"xAxis": max(a.opened_ms, start)},
                               {"xAxis": a.resolved_ms or now}] for a in alerts]},
    })
    axis = {"type": "time", "min": start, "max": now}
    return {
        "animation": False,
        "legend": {"top": 0, "type": "scroll"},
        "tooltip": {"trigger": "axis"},
        "grid": [{"left": 64, "right": 24, "top": 40, "height": "36%"},
                 {"left": 64, "right": 24, "top": "58%", "height": "32%"}],
        "xAxis": [{**axis, "gridIndex": 0}, {**axis, "gridIndex": 1}],
        "yAxis": [{"type": "value", "gridIndex": 0, "scale": True, "name": "value"},
                  score_axis(gridIndex=1)],
        "series": series,
    }


def _facts(panel: Panel, device_id: str) -> str:
    gw = panel.gateway
    d = snapshot.device(gw, device_id)
    if d is None:
        return ""
    now = now_ms()
    gaps = gw.health.device_gaps().get(device_id, 0)
    return (f"{d['state'] or 'unknown'} · type {d['type'] or '?'} · firmware {d['fw'] or '?'}"
            f" · boot {d['boot']} · last seen {units.ago(d['last_seen_ms'], now)}"
            f" · {gw.health.rate(device_id):.2f} readings/s · {gaps} seq gaps")


def register(panel: Panel) -> None:
    """Add the device page at /devices/<device>."""

    @ui.page("/devices/{device_id}", title=f"Device · {panel.gateway.settings.gateway_id}")
    def device_page(device_id: str) -> RedirectResponse | None:
        if (redirect := guard(panel, f"/devices/{device_id}")) is not None:
            return redirect
        gw = panel.gateway
        known = snapshot.device(gw, device_id)
        with frame(panel, f"Device {device_id}"):
            if known is None:
                ui.label(f"No device {device_id!r} has reported to this gateway.").mark(
                    "unknown-device")
                ui.link("Back to the devices", "/")
                return None
            prof = PROFILES.get(known["type"] or "")
            live = LiveHour(device_id)
            live.load(gw.store.conn, now_ms())
            names = list(prof.metric_names) if prof else sorted(
                {m for p in live.points() for m in p.metrics})
            facts = ui.label(_facts(panel, device_id)).mark("device-facts")
            with ui.row().classes("items-center w-full"):
                shown = ui.select(names, multiple=True, value=names[:1],
                                  label="Metrics shown").classes("w-96").mark("metric-select")
                newest = ui.label().classes("text-body2").mark("chart-newest")
            ui.label(f"The last hour, at most one point per {BUCKET_MS} ms and {MAX_DRAWN:,} "
                     "in all: where readings are denser, each point is the reading with the "
                     "highest anomaly score of its slice of time.").classes(
                "text-caption text-grey-7")
            chart = ui.echart({}).classes("w-full h-[32rem]").mark("device-chart")
            scorers = ui.label().classes("text-body2").mark("scored-by")

            def redraw() -> None:
                now = now_ms()
                points = live.drawn()
                alerts = snapshot.device_alerts(gw, device_id, now - HOUR_MS)
                chart.options.clear()
                chart.options.update(chart_options(points, alerts, list(shown.value or []),
                                                   now))
                chart.update()
                if points:
                    last = points[-1]
                    newest.set_text(f"{len(points):,} points drawn; newest reading "
                                    f"{units.clock(last.ts_ms)} (boot {last.boot}, seq "
                                    f"{last.seq})")
                else:
                    newest.set_text("No reading in the last hour.")
                counts: dict[str, int] = {}
                for p in points:
                    counts[p.scored_by] = counts.get(p.scored_by, 0) + 1
                scorers.set_text("Scored by: " + ", ".join(
                    f"{k} ({n} point{'' if n == 1 else 's'})" for k, n in sorted(counts.items()))
                    if counts else
                    "No reading in the last hour to say what scored it.")

            def tick() -> None:
                facts.set_text(_facts(panel, device_id))
                if live.refresh(gw.store.conn, now_ms()):
                    redraw()

            shown.on_value_change(redraw)
            redraw()
            ui.timer(panel.refresh_s, tick)
        return None
