"""``smaint gateway``: the gateway's commands; ``run`` serves the web panel too when the ui
extra (nicegui) is installed and SMAINT_GATEWAY_PANEL__ENABLED is true (the default).

The choice is made here, above both packages: the gateway never imports the panel.
"""

from __future__ import annotations

import importlib.util

from edge import cli
from edge.settings import GatewaySettings


async def _run_with_panel(settings: GatewaySettings) -> None:
    from ui.panel.server import run_gateway_with_panel  # noqa: PLC0415  (loads nicegui)

    await run_gateway_with_panel(settings)


def main(argv: list[str]) -> int:
    """Entry point of ``smaint gateway ...``; returns the process exit status."""
    with_panel = importlib.util.find_spec("nicegui") is not None
    return cli.main(argv, runner=_run_with_panel if with_panel else None)
