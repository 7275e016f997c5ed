"""``smaint cloud``: the cloud's commands; ``serve`` adds the web console at / when the ui
extra (nicegui) is installed and SMAINT_CLOUD_CONSOLE__ENABLED is true (the default).

The choice is made here, above both packages: the cloud never imports the console, and the
console reaches the cloud only through its HTTP API.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from cloud import cli
from cloud.settings import CloudSettings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp


def _with_console(app: FastAPI, settings: CloudSettings) -> ASGIApp:
    if not settings.console.enabled:
        return app
    from ui.console.config import ConsoleConfig  # noqa: PLC0415  (loads nothing heavy)
    from ui.console.server import compose  # noqa: PLC0415  (loads nicegui)

    return compose(app, ConsoleConfig(
        environment=settings.env,
        session_s=settings.console.session_hours * 3600,
        refresh_s=settings.console.refresh_s,
    ))


def main(argv: list[str]) -> int:
    """Entry point of ``smaint cloud ...``; returns the process exit status."""
    with_console = importlib.util.find_spec("nicegui") is not None
    return cli.main(argv, compose=_with_console if with_console else None)
