"""The console's pages, one module each; :func:`register` adds them all."""

from __future__ import annotations

from ui.console.context import Console
from ui.console.pages import alerts, explorer, fleet, models, orders, reports, signin


def register(console: Console) -> None:
    """Add every page of the console to NiceGUI's app."""
    for module in (signin, fleet, explorer, alerts, orders, models, reports):
        module.register(console)
