"""One device: its state and a live chart of the last hour (values, anomaly score, alerts,
and the model version that scored each reading), readings with an injected fault marked
SIMULATED, and a form to record a manual measurement or inspection note (edge/manual.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from edge.manual import ManualEntryError
from edge.store import now_ms
from shared.schemas import MAX_NOTE, Alert
from shared.sensors import PROFILES, SensorProfile
from ui.panel import scenario, snapshot, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard, still_signed_in
from ui.panel.series import BUCKET_MS, HOUR_MS, MAX_DRAWN, LiveHour, Point
from ui.score_axis import on_log, score_axis

log = logging.getLogger(__name__)
_ALERT_COLORS = {"high": "#c62828", "medium": "#ef6c00", "low": "#f9a825"}
_MANUAL = "#1565c0"  # a technician's manual entry
_SIMULATED = "#8e24aa"  # a reading with an injected SIMULATED fault


def chart_options(points: list[Point], alerts: list[Alert], shown: list[str],
                  now: int, entries: Sequence[Point] = ()) -> dict[str, Any]:
    """ECharts options: the chosen metrics above, the anomaly score per scorer below;
    manual ``entries`` and SIMULATED readings marked apart."""
    # The axis spans the hour, or less while the device has not been reporting for that long.
    start = max(now - HOUR_MS, min((p.ts_ms for p in points), default=now - HOUR_MS))
    series: list[dict[str, Any]] = []
    for metric in shown:
        series.append({
            "name": metric, "type": "line", "showSymbol": False, "xAxisIndex": 0,
            "yAxisIndex": 0,
            "data": [[p.ts_ms, p.metrics[metric]] for p in points if metric in p.metrics]})
        simulated = [[p.ts_ms, p.metrics[metric]] for p in points
                     if p.origin == "simulated" and metric in p.metrics]
        if simulated:
            series.append({"name": f"{metric} SIMULATED fault", "type": "scatter",
                           "symbol": "triangle", "symbolSize": 7, "xAxisIndex": 0,
                           "yAxisIndex": 0, "itemStyle": {"color": _SIMULATED},
                           "data": simulated})
        entered = [[p.ts_ms, p.metrics[metric]] for p in entries if metric in p.metrics]
        if entered:
            series.append({"name": f"{metric} MANUAL", "type": "scatter", "symbol": "diamond",
                           "symbolSize": 12, "xAxisIndex": 0, "yAxisIndex": 0,
                           "itemStyle": {"color": _MANUAL}, "data": entered})
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
                  "name": f"{'SIMULATED ' if a.simulated else ''}{a.severity} alert, "
                          f"{a.state}"} for a in alerts],
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


def entry_line(p: Point) -> str:
    """One manual entry as listed under the chart: time, values entered, note."""
    values = ", ".join(f"{k} = {v:g}" for k, v in p.metrics.items())
    said = " · ".join(x for x in (values, p.note or "") if x)
    return f"{units.clock(p.ts_ms)} · MANUAL · {said}"


def record_entry(panel: Panel, device_id: str, values: dict[str, float | None],
                 note: str | None) -> str:
    """Store a technician's entry through the gateway; what to tell them.

    Raises ManualEntryError (the message says what to correct).
    """
    entered = {k: v for k, v in values.items() if v is not None}
    reading = panel.gateway.record_manual(device_id, entered, note)
    log.info("panel: manual entry %d of %s recorded", reading.seq, device_id)
    what = [f"{len(entered)} value{'' if len(entered) == 1 else 's'}"] if entered else []
    if reading.note:
        what.append("a note")
    return (f"Recorded {' and '.join(what)} for {device_id}, marked manual; it syncs "
            "with the readings.")


class OriginMarks:
    """Under the chart: how many readings drawn are SIMULATED, and the manual entries."""

    def __init__(self) -> None:
        self.simulated = ui.label().classes("text-body2 text-purple-8").mark(
            "simulated-readings")
        ui.label("Manual entries of the last hour").classes("text-subtitle1")
        self.entries = ui.column().classes("gap-1").mark("manual-entries")

    def show(self, drawn: Sequence[Point], entries: Sequence[Point]) -> None:
        """Say what is simulated among the ``drawn`` points; list the ``entries``."""
        n = sum(p.origin == "simulated" for p in drawn)
        self.simulated.set_text(
            f"SIMULATED: {n} of the points drawn carry an injected fault (a drill or a demo, "
            "not the machine)." if n else "")
        self.entries.clear()
        with self.entries:
            for p in reversed(entries):
                ui.label(entry_line(p)).classes("text-body2").mark("manual-entry")
            if not entries:
                ui.label("No manual entry in the last hour.").classes("text-body2 text-grey-7")


class ManualForm:
    """Record a measurement (in the profile's units) and/or an inspection note."""

    def __init__(self, panel: Panel, device_id: str, prof: SensorProfile | None,
                 done: Callable[[], object]) -> None:
        self.panel, self.device_id, self.done = panel, device_id, done
        with ui.card().classes("w-full").mark("manual-form"):
            ui.label("Record a manual measurement or inspection note").classes("text-h6")
            ui.label("Stored like a reading, marked manual, and synced to the cloud. It does "
                     "not feed the anomaly detector: a hand-held reading is not a sample of "
                     "the device's stream.").classes("text-caption text-grey-7")
            self.values: dict[str, ui.number] = {}
            with ui.row().classes("gap-4"):
                for m in prof.metrics if prof else ():
                    self.values[m.name] = ui.number(
                        f"{m.name} ({m.unit})", placeholder=f"{m.low:g} … {m.high:g}").classes(
                        "w-48").mark(f"manual-{m.name}")
            self.note = ui.textarea("Inspection note", placeholder="What you saw or did").props(
                f"maxlength={MAX_NOTE} autogrow").classes("w-full").mark("manual-note")
            ui.button("Record", icon="edit_note", on_click=self.record).mark("manual-record")

    def record(self) -> None:
        """Store the entry; say what happened; clear the form if stored."""
        if not still_signed_in(self.panel):
            return
        values = {k: (None if n.value is None else float(n.value))
                  for k, n in self.values.items()}
        try:
            said = record_entry(self.panel, self.device_id, values, self.note.value)
        except ManualEntryError as exc:
            ui.notify(f"Not recorded: {exc}", type="warning")
            return
        ui.notify(said, type="positive")
        for n in self.values.values():
            n.value = None
        self.note.value = ""
        self.done()


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
            marks = OriginMarks()

            def redraw() -> None:
                now = now_ms()
                points = live.drawn()
                alerts = snapshot.device_alerts(gw, device_id, now - HOUR_MS)
                chart.options.clear()
                entries = live.entries()
                chart.options.update(chart_options(points, alerts, list(shown.value or []),
                                                   now, entries))
                chart.update()
                marks.show(points, entries)
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
            scenario.controls(panel, device_id)  # SIMULATION ONLY: absent on a real plant

            def recorded() -> None:
                live.refresh(gw.store.conn, now_ms())
                redraw()

            ManualForm(panel, device_id, prof, recorded)
        return None
