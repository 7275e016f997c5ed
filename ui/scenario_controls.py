"""The SIMULATED scenario controls both screens show: the scenario, its seconds, the button."""

from __future__ import annotations

from nicegui import ui

from shared.schemas import MAX_SCENARIO_SECONDS, SCENARIO_KINDS

KIND_LABELS = {"spike": "Spike", "drift": "Drift", "stuck": "Stuck sensor",
               "noise": "Noise burst"}
DEFAULT_SECONDS = 10


def scenario_controls() -> tuple[ui.select, ui.number, ui.button]:
    """One row: the scenario to play, for how many seconds, and the inject button."""
    with ui.row().classes("items-end gap-4"):
        kind = ui.select({k: KIND_LABELS[k] for k in SCENARIO_KINDS}, value="spike",
                         label="Scenario").classes("w-48").mark("scenario-kind")
        seconds = ui.number("Seconds", value=DEFAULT_SECONDS, min=1,
                            max=MAX_SCENARIO_SECONDS, step=1).classes("w-32").mark(
            "scenario-seconds")
        button = ui.button("Inject SIMULATED scenario", icon="science").props(
            "color=deep-orange").mark("scenario-inject")
    return kind, seconds, button
