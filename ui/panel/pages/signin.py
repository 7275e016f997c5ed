"""Sign-in and first-start pages: the only pages open without a session."""

from __future__ import annotations

import asyncio
import logging

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.panel.auth import MIN_PASSWORD, PanelAuthError
from ui.panel.context import Panel
from ui.panel.frame import NAV, browser_id

log = logging.getLogger(__name__)
_PATHS = {path for _, path, _ in NAV}


def _safe_next(target: str) -> str:
    """Only the panel's own pages: a crafted ``next`` must not send anyone off-site."""
    if target in _PATHS or (target.startswith("/devices/") and "//" not in target):
        return target
    return "/"


def register(panel: Panel) -> None:
    """Add /login and /setup."""
    gw_id = panel.gateway.settings.gateway_id

    @ui.page("/login", title=f"Sign in · {gw_id}")
    def login(next: str = "/") -> RedirectResponse | None:  # noqa: A002  (the query parameter)
        if not panel.auth.configured:
            return RedirectResponse("/setup", status_code=303)
        target = _safe_next(next)
        if panel.auth.signed_in(browser_id()):
            return RedirectResponse(target, status_code=303)

        async def sign_in() -> None:
            browser = browser_id()
            ok = await asyncio.to_thread(panel.auth.check, password.value or "")
            if ok and browser is not None:
                panel.auth.sign_in(browser)
                log.info("panel: signed in")
                ui.navigate.to(target)
                return
            log.warning("panel: failed sign-in")
            await asyncio.sleep(panel.failed_sign_in_delay_s)
            password.value = ""
            ui.notify("Wrong password.", type="negative")

        with ui.card().classes("absolute-center w-96"):
            ui.label("Smart Maintenance gateway panel").classes("text-h6")
            ui.label(f"gateway {gw_id}").classes("text-subtitle2")
            password = ui.input("Password", password=True).props("autofocus").classes(
                "w-full").mark("password").on("keydown.enter", sign_in)
            ui.button("Sign in", on_click=sign_in).mark("sign-in")
        return None

    @ui.page("/setup", title=f"Choose the panel password · {gw_id}")
    def setup() -> RedirectResponse | None:
        if panel.auth.configured:
            return RedirectResponse("/login", status_code=303)

        async def choose() -> None:
            if first.value != second.value:
                ui.notify("The two passwords differ.", type="negative")
                return
            try:
                await asyncio.to_thread(panel.auth.set_first_password, code.value or "",
                                        first.value or "")
            except PanelAuthError as exc:
                ui.notify(str(exc), type="negative", multi_line=True)
                return
            ui.notify("Password set: sign in with it.", type="positive")
            ui.navigate.to("/login")

        with ui.card().classes("absolute-center w-[28rem]"):
            ui.label("Choose the panel password").classes("text-h6")
            ui.label(f"First start of gateway {gw_id}. The setup code is in "
                     f"{panel.auth.setup_code_file} on the gateway (and named in its log)."
                     ).classes("text-body2")
            code = ui.input("Setup code").classes("w-full").mark("setup-code")
            first = ui.input(f"New password (at least {MIN_PASSWORD} characters)",
                             password=True).classes("w-full").mark("new-password")
            second = ui.input("New password again", password=True).classes("w-full").mark(
                "new-password-again")
            ui.button("Set password", on_click=choose).mark("set-password")
        return None
