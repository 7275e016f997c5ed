"""SIMULATION ONLY: the device explorer's "inject a scenario" control.

Shown only when the cloud says its fleet is simulated (``GET /api/v1/devices/<d>/scenarios``
answers ``simulation: true``; SMAINT_CLOUD_SIMULATION__ENABLED); otherwise it does not exist.
Operators and admins get the button (``POST`` the same path: the request travels down to the
device's gateway in its next sync answer and is published to the device once); everyone sees
the device's latest requests, each labelled SIMULATED, and what became of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from ui.console import timefmt
from ui.console.context import Console
from ui.console.frame import call, session_of
from ui.scenario_controls import KIND_LABELS, scenario_controls

STATES = {"queued": "queued for the gateway's next sync", "published": "published to the device",
          "refused": "refused by the gateway", "expired": "expired: never picked up"}


def _path(device: str) -> str:
    return f"/api/v1/devices/{device}/scenarios"


def history_rows(scenarios: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The API's scenario list as table rows, newest first."""
    return [{"id": s["id"], "requested": timefmt.stamp(s["requested_at"]),
             "scenario": f"SIMULATED {KIND_LABELS.get(s['kind'], s['kind']).lower()}",
             "seconds": f"{s['seconds']:g}", "by": s["requested_by"], "gateway": s["gateway"],
             "state": STATES.get(s["state"], s["state"]), "reason": s["reason"]}
            for s in scenarios]


async def controls(console: Console, device: Callable[[], str]) -> None:
    """Add the scenario card for the explorer's current ``device()`` (nothing unless the cloud
    runs with simulation enabled)."""
    info = await call(console, lambda api: api.get(_path(device())))
    if not info or not info.get("simulation"):
        return
    may = session_of(console).may("operator")
    with ui.card().classes("w-full bg-orange-1").mark("scenario-card"):
        title = ui.label().classes("text-subtitle1 text-orange-10")
        ui.label("For simulated devices only (this cloud runs with simulation enabled): the "
                 "request goes to the device's gateway with its next sync answer. Readings, "
                 "alerts and reports it causes are simulated.").classes("text-caption")
        kind, seconds, button = scenario_controls()
        if not may:
            button.set_enabled(False)
            ui.label("Operators and admins may inject scenarios.").classes(
                "text-caption").mark("scenario-role")
        table = ui.table(columns=[
            {"name": n, "label": label, "field": n, "align": "left"} for n, label in (
                ("requested", "Requested"), ("scenario", "Scenario"), ("seconds", "Seconds"),
                ("by", "By"), ("gateway", "Gateway"), ("state", "State"),
                ("reason", "Reason"))], rows=history_rows(info["scenarios"]),
            row_key="id").classes("w-full").mark("scenario-history")

        def show(rows: list[dict[str, Any]]) -> None:
            title.set_text(f"SIMULATION: make {device()} play a scenario")
            table.rows = history_rows(rows)
            table.update()

        async def refresh() -> None:
            fresh = await call(console, lambda api: api.get(_path(device())))
            if fresh:
                show(fresh["scenarios"])

        async def inject() -> None:
            dev = device()
            body = {"kind": str(kind.value), "seconds": float(seconds.value or 0)}
            made = await call(console, lambda api: api.send("POST", _path(dev), body))
            if made is None:
                return  # call() said why
            ui.notify(f"SIMULATED {made['kind']} queued for {dev} via gateway "
                      f"{made['gateway']}", type="warning")
            await refresh()

        button.on_click(inject)
        show(info["scenarios"])
        ui.timer(console.config.refresh_s, refresh)
