"""The console mounted on the cloud's API app: one process, one port.

The API's routes (/api/..., /healthz, /metrics, /docs) come first and stay exactly as
without the console; NiceGUI's pages are mounted behind them at /. ``smaint cloud serve``
calls :func:`compose` when nicegui is installed (smaint/cloud.py): the cloud never imports
the console, and the console calls the API through :class:`ui.console.api.CloudApi`.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI
from nicegui import ui
from starlette.types import ASGIApp

from shared.origin import SameOriginOnly
from ui.console.api import CloudApi
from ui.console.config import ConsoleConfig
from ui.console.context import Console
from ui.console.pages import register
from ui.console.sessions import Sessions

log = logging.getLogger(__name__)


def console_for(api_app: ASGIApp, config: ConsoleConfig) -> Console:
    """The console's state: the API it calls, the signed-in browsers, its settings."""
    return Console(CloudApi(api_app), Sessions(config.session_s), config)


def compose(app: FastAPI, config: ConsoleConfig) -> ASGIApp:
    """``app`` with the console at / (once per process: NiceGUI's pages are global)."""
    register(console_for(app, config))
    # A fresh secret per start signs the browser-id cookie; sessions are in memory anyway.
    ui.run_with(app, title="Smart Maintenance console", storage_secret=secrets.token_urlsafe(32),
                show_welcome_message=False, favicon="🛠️", reconnect_timeout=10.0,
                session_middleware_kwargs={"same_site": "lax"})
    log.info("console at / (sessions last %.1f h)", config.session_s / 3600)
    return SameOriginOnly(app)
