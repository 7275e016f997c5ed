"""Reports: pick a range (a preset or custom, UTC) and one device or the whole fleet, preview
the report as the cloud renders it, and download it as CSV, HTML or PDF.

Every file comes from the API's /api/v1/reports/devices as the signed-in user (the console's
session holds the key; no key ever travels in a URL), handed to the browser as a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console.context import Console
from ui.console.frame import call, expose_markers, frame, guard, session_of

PRESETS = {"24h": ("Last 24 hours", timedelta(hours=24)),
           "7d": ("Last 7 days", timedelta(days=7)),
           "31d": ("Last 31 days (the longest report)", timedelta(days=31))}
CUSTOM = "custom"
RANGES = {**{k: v[0] for k, v in PRESETS.items()}, CUSTOM: "Custom range (UTC)"}
FLEET = ""
FORMATS = (("csv", "CSV", "table_view"), ("html", "HTML", "html"),
           ("pdf", "PDF", "picture_as_pdf"))
_TIME_FORMAT = "%Y-%m-%d %H:%M"
_MEDIA = {"csv": "text/csv", "html": "text/html", "pdf": "application/pdf"}


def parse_minute(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM`` (UTC) typed in a range field; ValueError names the format."""
    try:
        return datetime.strptime(text.strip(), _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time like 2025-01-31 13:45") from exc


@dataclass(frozen=True)
class Choice:
    """A report asked for: its range and its device (None for the fleet)."""

    since: datetime
    until: datetime
    device: str | None

    def describe(self) -> str:
        """One line naming what the report covers."""
        scope = f"device {self.device}" if self.device else "the whole fleet"
        return (f"Report of {scope}, {self.since:{_TIME_FORMAT}} to "
                f"{self.until:{_TIME_FORMAT}} UTC")


def resolve(preset: str, since_text: str, until_text: str, device: str,
            now: datetime) -> Choice:
    """The choice the controls describe, ``now`` ending a preset; ValueError if unreadable."""
    if preset == CUSTOM:
        since, until = parse_minute(since_text), parse_minute(until_text)
    else:
        until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        since = until - PRESETS[preset][1]
    return Choice(since, until, device or None)


def register(console: Console) -> None:
    """Add the reports page at /reports."""

    @ui.page("/reports", title="Reports · Smart Maintenance console")
    async def reports_page() -> RedirectResponse | None:
        if (redirect := guard(console, "/reports")) is not None:
            return redirect
        session = session_of(console)
        devices = await call(console, lambda api: api.devices()) or []
        with frame(console, session, "Reports"):
            Reports(console, [d["device"] for d in devices]).build()
        return None


class Reports:
    """The controls, the preview and the downloads of one open reports page."""

    def __init__(self, console: Console, devices: list[str]) -> None:
        self.console = console
        self.client = ui.context.client
        self.devices = {FLEET: "Whole fleet", **{d: d for d in devices}}
        self.shown: Choice | None = None

    def build(self) -> None:
        """Range, device, Generate; the download buttons; the preview."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        with ui.row().classes("items-end w-full gap-4"):
            self.preset = ui.select(RANGES, value="24h", label="Range",
                                    on_change=self._changed).classes("w-72").mark("report-range")
            self.since = ui.input("From (UTC)", value=f"{now - timedelta(days=7):{_TIME_FORMAT}}",
                                  on_change=self._changed).classes("w-44").mark("report-since")
            self.until = ui.input("To (UTC)", value=f"{now:{_TIME_FORMAT}}",
                                  on_change=self._changed).classes("w-44").mark("report-until")
            for custom in (self.since, self.until):
                custom.bind_visibility_from(self.preset, "value", value=CUSTOM)
            self.device = ui.select(self.devices, value=FLEET, label="Device", with_input=True,
                                    on_change=self._changed).classes("w-56").mark(
                "report-device")
            ui.button("Generate", icon="summarize", on_click=self.generate).mark(
                "report-generate")
        with ui.row().classes("items-center w-full gap-3"):
            self.caption = ui.label("Choose a range and a device, then Generate to preview the "
                                    "report.").classes("text-body2 text-grey-8").mark(
                "report-caption")
            ui.space()
            self.downloads = [
                ui.button(label, icon=icon, on_click=lambda f=fmt: self.download(f)).props(
                    "outline").mark(f"report-{fmt}")
                for fmt, label, icon in FORMATS]
        self.preview = ui.element("iframe").classes("w-full bg-white").style(
            "height: 70vh; border: 1px solid #cfd8dc; border-radius: 4px").props(
            'title="report preview"').mark("report-preview")
        self._show(None, "")

    def _show(self, choice: Choice | None, page: str) -> None:
        """Preview ``page`` (the report of ``choice``) and allow its downloads, or clear."""
        self.shown = choice
        self.preview.props["srcdoc"] = page
        self.preview.set_visibility(choice is not None)
        self.preview.update()
        for button in self.downloads:
            button.set_enabled(choice is not None)
        if choice is not None:
            self.caption.set_text(f"{choice.describe()}. Download it as:")
        expose_markers(self.client)

    def _changed(self) -> None:
        """Another range or device: the preview and downloads no longer match the controls."""
        if self.shown is not None:
            self._show(None, "")
            self.caption.set_text("The choice changed: Generate to preview the new report.")

    def _choice(self) -> Choice | None:
        try:
            return resolve(str(self.preset.value), str(self.since.value or ""),
                           str(self.until.value or ""), str(self.device.value or ""),
                           datetime.now(UTC))
        except ValueError as exc:
            ui.notify(str(exc), type="warning")
            return None

    async def generate(self) -> None:
        """Ask the cloud for the report's HTML and preview it."""
        choice = self._choice()
        if choice is None:
            return
        got = await call(self.console, lambda api: api.report(
            "html", choice.since, choice.until, choice.device))
        if got is not None:
            self._show(choice, got[0].decode())

    async def download(self, fmt: str) -> None:
        """The previewed report as ``fmt``, saved by the browser."""
        choice = self.shown
        if choice is None:
            return
        got = await call(self.console, lambda api: api.report(
            fmt, choice.since, choice.until, choice.device))
        if got is not None:
            ui.download.content(got[0], got[1], _MEDIA[fmt])
