"""What the device explorer shows for a range: raw readings when there are few enough,
buckets from the rollups otherwise; its chart options and its CSV.

Zooming in narrows the range until it holds at most ``RAW_LIMIT`` readings, and from there
on every reading is drawn as it was stored.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ui.console.api import UserApi
from ui.score_axis import on_log, score_axis

RAW_LIMIT = 5000
TARGET_BUCKETS = 500
MANUAL_LIMIT = 500  # manual entries (measurements, notes) fetched per view
_RED = "#c62828"
_MANUAL = "#1565c0"  # a technician's manual entry
_SIMULATED = "#8e24aa"  # a reading with an injected SIMULATED fault


def bucket_width(span: timedelta) -> int:
    """Seconds per bucket (a multiple of 60, the rollups' finest) for about TARGET_BUCKETS."""
    per = span.total_seconds() / TARGET_BUCKETS
    return max(60, math.ceil(per / 60) * 60)


@dataclass
class View:
    """One metric of one device over [since, until), as drawn."""

    device: str
    metric: str
    since: datetime
    until: datetime
    kind: Literal["raw", "buckets"]
    readings: list[dict[str, Any]] = field(default_factory=list)
    buckets: list[dict[str, Any]] = field(default_factory=list)
    width_s: int = 0
    source: str = ""
    counted: int = 0  # readings of the metric in the range, from the rollups
    # A technician's manual entries in the range (drawn on either kind of chart, notes listed).
    manual: list[dict[str, Any]] = field(default_factory=list)

    def points(self) -> int:
        """Points drawn (readings carrying the metric, or buckets)."""
        if self.kind == "buckets":
            return len(self.buckets)
        return sum(1 for r in self.readings if self.metric in r["metrics"])


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def load(api: UserApi, device: str, metric: str, since: datetime,
               until: datetime) -> View:
    """The view of [since, until): the rollups say how many readings it holds; few enough
    are fetched raw, more are drawn as buckets."""
    width = bucket_width(until - since)
    series = await api.buckets(device, metric, since, until, width)
    counted = sum(int(b["count"]) for b in series["buckets"])
    manual, _ = await api.readings(device, since, until, MANUAL_LIMIT, origin="manual")
    buckets = View(device, metric, since, until, "buckets", buckets=series["buckets"],
                   width_s=width, source=series["source"], counted=counted, manual=manual)
    if counted > RAW_LIMIT:
        return buckets
    readings, more = await api.readings(device, since, until, RAW_LIMIT)
    if more:  # the rollups lag ingest by a second or two: trust the readings themselves
        return buckets
    return View(device, metric, since, until, "raw", readings=readings, counted=counted,
                manual=manual)


def zoomed(view: View, event: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """The range an ECharts ``datazoom`` event selects inside the view's range, if any."""
    zoom = (event.get("batch") or [event])[0]
    lo_ms, hi_ms = _ms(view.since), _ms(view.until)
    if zoom.get("startValue") is not None and zoom.get("endValue") is not None:
        lo, hi = float(zoom["startValue"]), float(zoom["endValue"])
    elif zoom.get("start") is not None and zoom.get("end") is not None:
        span = hi_ms - lo_ms
        lo = lo_ms + span * float(zoom["start"]) / 100
        hi = lo_ms + span * float(zoom["end"]) / 100
    else:
        return None
    lo, hi = max(lo, lo_ms), min(hi, hi_ms)
    if hi - lo < 1000 or (lo <= lo_ms and hi >= hi_ms):
        return None  # narrower than a second, or not narrower at all
    return _at(lo), _at(hi)


def describe(view: View) -> str:
    """What the chart shows, in words."""
    span = f"{view.since:%Y-%m-%d %H:%M:%S} to {view.until:%Y-%m-%d %H:%M:%S} UTC"
    marks = ""
    if view.manual:
        notes = sum(1 for r in view.manual if r.get("note"))
        marks += (f" {len(view.manual):,} manual entr{'y' if len(view.manual) == 1 else 'ies'}"
                  f" by a technician ({notes} with a note) are marked MANUAL.")
    if view.kind == "raw":
        simulated = sum(1 for r in view.readings if r.get("origin") == "simulated")
        if simulated:
            marks += (f" {simulated:,} readings carry an injected SIMULATED fault (a drill or "
                      "a demo, not the machine): marked SIMULATED.")
        return (f"{view.points():,} raw readings of {view.metric} from {span}: every stored "
                f"reading, drawn as it is.{marks}")
    minutes = view.width_s / 60
    width = f"{minutes:g}-minute" if minutes < 120 else f"{minutes / 60:g}-hour"
    return (f"{len(view.buckets):,} {width} buckets (min, mean, max) of {view.counted:,} "
            f"readings of {view.metric} from {span}, from the {view.source} rollup. Zoom in "
            f"(drag on the slider, the wheel, or the zoom tool) to reach raw readings: they "
            f"are drawn once the range holds at most {RAW_LIMIT:,}, SIMULATED ones marked.{marks}")


def notes(view: View) -> list[str]:
    """The manual entries of the view, newest first: time, values entered and note."""
    out = []
    for r in sorted(view.manual, key=lambda r: r["ts_ms"], reverse=True):
        values = ", ".join(f"{k} = {v:g}" for k, v in r["metrics"].items())
        said = " · ".join(x for x in (values, r.get("note") or "") if x)
        out.append(f"{_at(r['ts_ms']):%Y-%m-%d %H:%M:%S} UTC · MANUAL · {said}")
    return out


def shape(options: Any) -> Any:
    """The layout of chart options without their values: two options of one shape set the
    same settings, so ECharts merging the second into the first draws exactly the second."""
    if isinstance(options, dict):
        return {k: "data" if k == "data" else shape(v) for k, v in options.items()}
    if isinstance(options, list):
        return [shape(x) for x in options] if any(isinstance(x, dict) for x in options) \
            else "list"
    return "value"


def chart_options(view: View) -> dict[str, Any]:
    """ECharts options: raw values with scores and anomalous readings, or a min-max band."""
    series: list[dict[str, Any]]
    axes: list[dict[str, Any]] = [{"type": "value", "scale": True, "name": view.metric}]
    if view.kind == "raw":
        # Manual entries are not samples of the device's stream: drawn as points of their own.
        rows = [r for r in view.readings
                if view.metric in r["metrics"] and r.get("origin") != "manual"]
        series = [
            {"name": view.metric, "type": "line", "showSymbol": False,
             "data": [[r["ts_ms"], r["metrics"][view.metric]] for r in rows]},
            {"name": "anomalous reading", "type": "scatter", "symbolSize": 6,
             "itemStyle": {"color": _RED},
             "data": [[r["ts_ms"], r["metrics"][view.metric]] for r in rows if r["anomalous"]]},
        ]
        simulated = [[r["ts_ms"], r["metrics"][view.metric]] for r in rows
                     if r.get("origin") == "simulated"]
        if simulated:
            series.append({"name": "SIMULATED fault", "type": "scatter", "symbol": "triangle",
                           "symbolSize": 7, "itemStyle": {"color": _SIMULATED},
                           "data": simulated})
        scored = [[r["ts_ms"], on_log(r["score"])] for r in rows if r["score"] is not None]
        if scored:
            axes.append(score_axis(position="right", splitLine={"show": False}))
            series.append({"name": "anomaly score", "type": "line", "showSymbol": False,
                           "yAxisIndex": 1, "lineStyle": {"width": 1, "opacity": 0.6},
                           "data": scored})
    else:
        times = [_ms(datetime.fromisoformat(b["start"])) for b in view.buckets]
        band = {"type": "line", "stack": "band", "showSymbol": False,
                "lineStyle": {"opacity": 0}}
        series = [
            {**band, "name": "min", "data": [[t, b["min"]] for t, b in
                                             zip(times, view.buckets, strict=True)]},
            {**band, "name": "max", "areaStyle": {"opacity": 0.25},
             "tooltip": {"show": False},
             "data": [[t, b["max"] - b["min"]] for t, b in zip(times, view.buckets, strict=True)]},
            {"name": "mean", "type": "line", "showSymbol": False,
             "data": [[t, b["avg"]] for t, b in zip(times, view.buckets, strict=True)]},
        ]
    entered = [[r["ts_ms"], r["metrics"][view.metric]] for r in view.manual
               if view.metric in r["metrics"]]
    if entered:
        series.append({"name": "MANUAL measurement", "type": "scatter", "symbol": "diamond",
                       "symbolSize": 12, "itemStyle": {"color": _MANUAL}, "data": entered})
    return {
        "animation": False,
        "legend": {"top": 0},
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 70, "right": 70, "top": 64, "bottom": 80},
        "toolbox": {"top": 0, "right": 10, "feature": {"dataZoom": {"yAxisIndex": "none"}}},
        "xAxis": {"type": "time", "min": _ms(view.since), "max": _ms(view.until)},
        "yAxis": axes,
        "dataZoom": [{"type": "inside", "start": 0, "end": 100},
                     {"type": "slider", "start": 0, "end": 100, "bottom": 20}],
        "series": series,
    }


def csv_text(view: View) -> str:
    """What the chart shows as CSV: every raw reading drawn, or every bucket."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    if view.kind == "raw":
        w.writerow(["ts", "device", "gateway", "boot", "seq", view.metric, "score", "scorer",
                    "model_version", "anomalous", "origin", "note"])
        for r in view.readings:
            if view.metric in r["metrics"]:
                w.writerow([_at(r["ts_ms"]).isoformat(), r["device"], r["gateway"], r["boot"],
                            r["seq"], r["metrics"][view.metric],
                            "" if r["score"] is None else r["score"], r["scorer"] or "",
                            r["model_version"] or "", str(r["anomalous"]).lower(),
                            r.get("origin", "sensor"), r.get("note") or ""])
    else:
        w.writerow(["bucket_start", "device", "metric", "width_s", "min", "mean", "max",
                    "count"])
        for b in view.buckets:
            w.writerow([b["start"], b["device"], view.metric, view.width_s, b["min"], b["avg"],
                        b["max"], b["count"]])
    return out.getvalue()


def csv_name(view: View) -> str:
    """``<device>_<metric>_<since>_<until>_<raw|buckets>.csv``."""
    return (f"{view.device}_{view.metric}_{view.since:%Y%m%dT%H%M%S}_"
            f"{view.until:%Y%m%dT%H%M%S}_{view.kind}.csv")
