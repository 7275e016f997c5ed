"""The gateway with its web panel: one process, one port (the gateway's HTTP port).

The gateway's own routes (/healthz, /metrics, /api/...) come first and stay exactly as
without the panel; NiceGUI's app is mounted behind them at /. Composed here, in ui/, because
the gateway must stay installable and runnable without NiceGUI (and its FastAPI): edge never
imports ui; ``smaint gateway run`` uses :func:`run_gateway_with_panel` when nicegui is
installed, and the panel runs when ``SMAINT_GATEWAY_PANEL__ENABLED`` is true (the default).
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from starlette.applications import Starlette
from starlette.types import ASGIApp

from edge.service import Gateway, run_gateway
from edge.settings import GatewaySettings
from shared.origin import SameOriginOnly
from ui.panel.auth import PanelAuth
from ui.panel.context import Panel

log = logging.getLogger(__name__)


def panel_for(gw: Gateway) -> Panel:
    """The panel's state for a gateway: its password (a setup code if none yet) and refresh."""
    s = gw.settings
    auth = PanelAuth(s.panel_password_path, s.panel.password_hash,
                     session_s=s.panel.session_hours * 3600)
    auth.prepare()
    return Panel(gw, auth, refresh_s=s.panel.refresh_s)


def compose(panel: Panel, api: Starlette) -> ASGIApp:
    """One ASGI app: the gateway's routes, then the panel's pages, behind the origin check."""
    from fastapi import FastAPI  # noqa: PLC0415  (only a gateway with the panel loads these)
    from nicegui import ui  # noqa: PLC0415

    from ui.panel.pages import register  # noqa: PLC0415

    root = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    root.router.routes.extend(api.routes)
    register(panel)
    # A fresh secret per start signs the browser-id cookie; sessions are in memory anyway.
    ui.run_with(root, title=f"Smart Maintenance · {panel.gateway.settings.gateway_id}",
                storage_secret=secrets.token_urlsafe(32), show_welcome_message=False,
                favicon="🛠️", reconnect_timeout=10.0,
                session_middleware_kwargs={"same_site": "lax"})
    return SameOriginOnly(root)


async def run_gateway_with_panel(settings: GatewaySettings,
                                 stop: asyncio.Event | None = None) -> None:
    """Run the gateway, serving the panel at / of its HTTP port if the settings enable it."""
    if not settings.panel.enabled:
        await run_gateway(settings, stop)
        return
    gw = Gateway(settings)
    panel = panel_for(gw)
    log.info("panel at http://%s:%d/", settings.http.host, settings.http.port)
    await run_gateway(settings, stop, gw, compose_http=lambda _gw, api: compose(panel, api))
