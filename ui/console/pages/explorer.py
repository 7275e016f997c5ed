"""Device explorer: one metric of one device over any range, from the rollups down to every
raw reading by zooming in; the CSV of exactly what is drawn."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from nicegui import events, ui
from starlette.responses import RedirectResponse

from shared.sensors import PROFILES
from ui.console import explorer_data, scenario, timefmt
from ui.console.context import Console
from ui.console.explorer_data import View
from ui.console.frame import call, expose_markers, frame, guard, session_of

# Ranges anchored at the device's newest reading, so a device that stopped reporting still
# shows its last data (and one that reports shows its newest, updated on a timer).
LATEST = {
    "15m": ("Latest 15 minutes of data", timedelta(minutes=15)),
    "1h": ("Latest hour of data", timedelta(hours=1)),
    "6h": ("Latest 6 hours of data", timedelta(hours=6)),
    "1d": ("Latest day of data", timedelta(days=1)),
    "7d": ("Latest week of data", timedelta(days=7)),
    "30d": ("Latest 30 days of data", timedelta(days=30)),
}
ALL, CUSTOM = "all", "custom"
RANGES = {**{k: v[0] for k, v in LATEST.items()}, ALL: "All data of the device",
          CUSTOM: "Custom range (UTC)"}
ZOOM_SETTLE_S = 0.6  # a drag on the slider sends many events: act on the last one
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def metrics_of(device: dict[str, Any]) -> list[str]:
    """The metric names of the device's sensor profile."""
    profile = PROFILES.get(device["type"])
    return list(profile.metric_names) if profile else []


def span_of(device: dict[str, Any], choice: str) -> tuple[datetime, datetime]:
    """[since, until) of a range choice anchored at the device's readings."""
    last = timefmt.parse(device["last_seen_at"]) + timedelta(seconds=1)
    if choice == ALL:
        return timefmt.parse(device["first_seen_at"]), last
    return last - LATEST[choice][1], last


def parse_utc(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) typed in a range field; ValueError names the format."""
    try:
        return datetime.strptime(text.strip(), _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time like 2025-01-31 13:45:00") from exc


def register(console: Console) -> None:
    """Add the explorer at /explorer (``?device=&metric=`` preselect)."""

    @ui.page("/explorer", title="Device explorer · Smart Maintenance console")
    async def explorer_page(device: str = "", metric: str = "") -> RedirectResponse | None:
        asked = urlencode({k: v for k, v in (("device", device), ("metric", metric)) if v})
        if (redirect := guard(console, f"/explorer?{asked}" if asked else "/explorer")) \
                is not None:
            return redirect
        session = session_of(console)
        devices = await call(console, lambda api: api.devices()) or []
        by_id = {d["device"]: d for d in devices}
        with frame(console, session, "Device explorer"):
            if not devices:
                ui.label("No device has synced readings yet: the explorer shows them once a "
                         "gateway uploads some.").mark("no-devices")
                return None
            explorer = Explorer(console, by_id,
                                device if device in by_id else devices[0]["device"], metric)
            explorer.build()
            # SIMULATION ONLY: absent unless the cloud's fleet is simulated.
            await scenario.controls(console, lambda: explorer.device)
            # Loaded before the page is sent: its first drawing already shows the data.
            await explorer.show_range()
        return None


class Explorer:
    """The page's state: the chosen device, metric and range, and the zoom history."""

    def __init__(self, console: Console, devices: dict[str, dict[str, Any]], device: str,
                 metric: str) -> None:
        self.console, self.devices = console, devices
        self.client = ui.context.client
        self.device = device
        names = metrics_of(devices[device])
        self.metric = metric if metric in names else (names[0] if names else "")
        self.choice = "1h"
        self.view: View | None = None
        self.history: list[tuple[datetime, datetime]] = []
        self._zoom_generation = 0
        self.chart: ui.echart | None = None
        self.note_lines: list[str] = []

    def build(self) -> None:
        """Lay out the filters, the chart and its caption, and start the refresh timer."""
        with ui.row().classes("items-end w-full gap-4"):
            self.device_select = ui.select(
                {d: f"{d} ({v['type']}, {v['gateway']})" for d, v in self.devices.items()},
                value=self.device, label="Device", with_input=True,
                on_change=self._device_changed).classes("w-72").mark("device-select")
            self.metric_select = ui.select(
                metrics_of(self.devices[self.device]), value=self.metric or None,
                label="Metric", on_change=self._metric_changed).classes("w-48").mark(
                "metric-select")
            self.range_select = ui.select(RANGES, value=self.choice, label="Range",
                                          on_change=self._range_changed).classes(
                "w-60").mark("range-select")
            self.back = ui.button("Zoom out", icon="zoom_out", on_click=self._zoom_out).props(
                "outline").mark("zoom-out")
            self.back.set_enabled(False)
            ui.button("Download CSV", icon="download", on_click=self._download).props(
                "outline").mark("download-csv")
        with ui.row().classes("items-end gap-4") as self.custom_row:
            self.since_input = ui.input("From (UTC)", placeholder="2025-01-31 13:45:00").mark(
                "custom-since")
            self.until_input = ui.input("To (UTC)", placeholder="2025-01-31 14:45:00").mark(
                "custom-until")
            ui.button("Show range", icon="check", on_click=self._apply_custom).mark(
                "apply-range")
        self.custom_row.set_visibility(False)
        self.caption = ui.label().classes("text-body2").mark("chart-caption")
        self.chart_box = ui.element("div").classes("w-full")
        # A technician's entries on the gateway panel, with their notes, for the range shown.
        self.notes_box = ui.column().classes("w-full gap-1").mark("manual-notes")
        ui.label("Drawn from the cloud API: /api/v1/readings/buckets (rollups) and "
                 "/api/v1/readings (raw). Latest-data ranges update themselves.").classes(
            "text-caption text-grey-7")
        ui.timer(self.console.config.refresh_s, self._follow)

    # -- loading ---------------------------------------------------------------------------

    def _range(self) -> tuple[datetime, datetime]:
        return span_of(self.devices[self.device], self.choice)

    async def show_range(self, *, refresh: bool = False) -> None:
        """Load the chosen range (a custom one waits for its fields to be filled in)."""
        self.history.clear()
        if self.choice == CUSTOM:
            return
        since, until = self._range()
        await self._load(since, until, refresh=refresh)

    async def _load(self, since: datetime, until: datetime, *, refresh: bool = False) -> None:
        """Draw [since, until); ``refresh``: the timer's update of the range shown."""
        if not self.metric:
            self.caption.set_text(f"Device {self.device} has no known metrics "
                                  f"(type {self.devices[self.device]['type']}).")
            return
        device, metric = self.device, self.metric
        view = await call(self.console, lambda api: explorer_data.load(
            api, device, metric, since, until))
        if view is None:
            return
        self.view = view
        options = explorer_data.chart_options(view)
        if refresh and self.chart is not None and explorer_data.shape(options) == \
                explorer_data.shape(self.chart.options):
            # The timer's refresh, same layout, new values: merging then overwrites every
            # setting, and the chart stays mounted. Replacing it on every refresh raced its
            # own mounting in the browser (an unmount before ECharts was set up). What a
            # person asks for (a zoom, another range) gets a new chart: a merge would keep
            # the toolbox's zoom window.
            self.chart.options.clear()
            self.chart.options.update(options)
            self.chart.update()
        else:
            # A new layout or a person's choice gets a new chart: ECharts merges new options
            # into old ones (an axis, a line style or a zoom window would survive).
            self.chart_box.clear()
            with self.chart_box:
                self.chart = ui.echart(options).classes("w-full h-[30rem]").mark(
                    "explorer-chart")
                # For tests and the render benchmark: when the browser finished drawing.
                self.chart.on("chart:finished",
                              js_handler="() => performance.mark('explorer-chart-finished')")
                self.chart.on("chart:datazoom", self._zoom_event)
        self.caption.set_text(explorer_data.describe(view))
        lines = explorer_data.notes(view)
        if lines != self.note_lines:  # unchanged notes keep their elements
            self.note_lines = lines
            self.notes_box.clear()
            with self.notes_box:
                for line in lines:
                    ui.label(line).classes("text-body2").mark("manual-note")
        expose_markers(self.client)
        self.back.set_enabled(bool(self.history))

    async def _follow(self) -> None:
        """On the timer: a latest-data range at its top zoom level follows new readings."""
        if self.choice == CUSTOM or self.history:
            return
        devices = await call(self.console, lambda api: api.devices())
        if devices is None:
            return
        fresh = {d["device"]: d for d in devices}
        if fresh.get(self.device, {}).get("last_seen_at") == \
                self.devices[self.device]["last_seen_at"]:
            return
        self.devices.update(fresh)
        await self.show_range(refresh=True)

    # -- controls ----------------------------------------------------------------------------

    async def _device_changed(self, e: events.ValueChangeEventArguments[Any]) -> None:
        if not e.value:
            return
        self.device = str(e.value)
        names = metrics_of(self.devices[self.device])
        self.metric = self.metric if self.metric in names else (names[0] if names else "")
        self.metric_select.set_options(names, value=self.metric or None)
        await self.show_range()

    async def _metric_changed(self, e: events.ValueChangeEventArguments[Any]) -> None:
        if e.value and e.value != self.metric:
            self.metric = str(e.value)
            if self.view is not None:
                await self._load(self.view.since, self.view.until)

    async def _range_changed(self, e: events.ValueChangeEventArguments[Any]) -> None:
        self.choice = str(e.value)
        self.custom_row.set_visibility(self.choice == CUSTOM)
        if self.choice == CUSTOM and self.view is not None:
            self.since_input.value = f"{self.view.since:{_TIME_FORMAT}}"
            self.until_input.value = f"{self.view.until:{_TIME_FORMAT}}"
        await self.show_range()

    async def _apply_custom(self) -> None:
        try:
            since = parse_utc(self.since_input.value or "")
            until = parse_utc(self.until_input.value or "")
        except ValueError as exc:
            ui.notify(str(exc), type="negative")
            return
        if until <= since:
            ui.notify("The range must end after it starts.", type="negative")
            return
        self.history.clear()
        await self._load(since, until)

    async def _zoom_event(self, e: events.GenericEventArguments) -> None:
        if self.view is None or not isinstance(e.args, dict):
            return
        self._zoom_generation += 1
        mine = self._zoom_generation
        await asyncio.sleep(ZOOM_SETTLE_S)
        if mine != self._zoom_generation or self.view is None:
            return  # a later zoom event supersedes this one
        target = explorer_data.zoomed(self.view, e.args)
        if target is None:
            return
        self.history.append((self.view.since, self.view.until))
        await self._load(*target)

    async def _zoom_out(self) -> None:
        if not self.history:
            return
        since, until = self.history.pop()
        await self._load(since, until)

    def _download(self) -> None:
        if self.view is None:
            ui.notify("Nothing is drawn yet to download.", type="warning")
            return
        ui.download.content(explorer_data.csv_text(self.view), explorer_data.csv_name(self.view),
                            "text/csv")
