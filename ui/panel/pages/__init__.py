"""The panel's pages, one module each; :func:`register` adds them all."""

from __future__ import annotations

from ui.panel.context import Panel
from ui.panel.pages import alerts, device, devices, health, models, signin, sync


def register(panel: Panel) -> None:
    """Add every page of the panel to NiceGUI's app."""
    for module in (signin, devices, device, alerts, sync, models, health):
        module.register(panel)
