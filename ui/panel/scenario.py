"""SIMULATION ONLY: the device page's "inject a scenario" control.

Shown only when the gateway's site runs simulated devices (SMAINT_GATEWAY_SIMULATION__ENABLED);
on a real plant it does not exist. A click (by a signed-in user) stores the request and the
gateway publishes it once on ``smaint/v1/dev/<device>/simulate`` (edge/scenarios.py); the
card lists the device's latest requests, each labelled SIMULATED, and what became of them.
"""

from __future__ import annotations

from nicegui import ui
from pydantic import ValidationError

from edge.scenarios import SimulationOffError
from edge.store import now_ms
from ui.panel import units
from ui.panel.context import Panel
from ui.panel.frame import still_signed_in
from ui.scenario_controls import KIND_LABELS, scenario_controls


def history_rows(panel: Panel, device_id: str) -> list[dict[str, str]]:
    """The device's latest scenario requests as table rows, newest first."""
    now = now_ms()
    return [{"id": r.request.id, "requested": units.ago(r.requested_ms, now),
             "scenario": f"SIMULATED {KIND_LABELS[r.request.kind].lower()}",
             "seconds": f"{r.request.seconds:g}",
             "by": f"{r.request.requested_by} ({r.source})",
             "state": r.outcome or "waiting for the broker",
             "reason": r.reason}
            for r in panel.gateway.scenarios.recent(device_id)]


def controls(panel: Panel, device_id: str) -> None:
    """Add the scenario card for ``device_id`` (nothing unless simulation is enabled)."""
    desk = panel.gateway.scenarios
    if not desk.enabled:
        return
    with ui.card().classes("w-full bg-orange-1").mark("scenario-card"):
        ui.label("SIMULATION: make this simulated device play a scenario").classes(
            "text-subtitle1 text-orange-10")
        ui.label("For simulated devices only (this gateway runs with simulation enabled). "
                 "Readings, alerts and reports it causes are simulated.").classes(
            "text-caption")
        kind, seconds, button = scenario_controls()
        table = ui.table(columns=[
            {"name": n, "label": label, "field": n, "align": "left"} for n, label in (
                ("requested", "Requested"), ("scenario", "Scenario"), ("seconds", "Seconds"),
                ("by", "By"), ("state", "State"), ("reason", "Reason"))],
            rows=history_rows(panel, device_id), row_key="id").classes("w-full").mark(
            "scenario-history")

        def refresh() -> None:
            table.rows = history_rows(panel, device_id)
            table.update()

        def inject() -> None:
            if not still_signed_in(panel):
                return
            try:
                req = desk.request(device_id, str(kind.value), float(seconds.value or 0))
            except SimulationOffError as exc:
                ui.notify(str(exc), type="negative", multi_line=True)
                return
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                ui.notify(f"Not a valid scenario: {err['loc'][-1]}: {err['msg']}",
                          type="negative")
                return
            ui.notify(f"SIMULATED {req.kind} queued for {device_id} ({req.seconds:g} s)",
                      type="warning")
            refresh()

        button.on_click(inject)
        ui.timer(panel.refresh_s, refresh)
