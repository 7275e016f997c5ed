"""The sign-in page: the only console page open without a session.

Users sign in with their API key (``smaint cloud user add NAME --role ROLE`` prints the
first one; an admin issues more with ``POST /api/v1/users/NAME/keys``). The key is checked by
the API itself (``GET /api/v1/me``), which also counts failed attempts per address.
"""

from __future__ import annotations

import asyncio
import logging

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console.api import ApiError, SignedOutError
from ui.console.context import Console
from ui.console.frame import NAV, browser_id, expose_markers

log = logging.getLogger(__name__)
_PATHS = {path for _, path, _ in NAV}


def safe_next(target: str) -> str:
    """Only the console's own pages: a crafted ``next`` must not send anyone off-site."""
    path = target.split("?", 1)[0]
    if path in _PATHS and "//" not in target and "\\" not in target:
        return target
    return "/"


def register(console: Console) -> None:
    """Add /login."""

    @ui.page("/login", title="Sign in · Smart Maintenance console")
    def login(next: str = "/") -> RedirectResponse | None:  # noqa: A002  (the query parameter)
        target = safe_next(next)
        if console.sessions.get(browser_id()) is not None:
            return RedirectResponse(target, status_code=303)

        async def sign_in() -> None:
            browser = browser_id()
            key = (key_field.value or "").strip()
            api = console.api.as_user(key, ui.context.client.ip)
            try:
                me = await api.me()
            except SignedOutError as exc:
                log.warning("console: failed sign-in: %s", exc.detail)
                await asyncio.sleep(console.config.failed_sign_in_delay_s)
                key_field.value = ""
                ui.notify(f"Not signed in: {exc.detail}.", type="negative")
                return
            except ApiError as exc:  # 429 after too many failures, 503 without a database
                ui.notify(f"Not signed in: {exc.detail}", type="negative", multi_line=True)
                return
            if browser is None:
                ui.notify("This browser refuses the console's cookie: allow it to sign in.",
                          type="negative")
                return
            console.sessions.start(browser, key, me["name"], me["role"])
            log.info("console: %s (%s) signed in", me["name"], me["role"])
            ui.navigate.to(target)

        with ui.card().classes("absolute-center w-[30rem]"):
            ui.label("Smart Maintenance cloud console").classes("text-h6")
            ui.label("Sign in with your API key. `smaint cloud user add NAME --role ROLE` "
                     "prints a user's first key; an admin can issue more.").classes(
                "text-body2 text-grey-8")
            key_field = ui.input("API key", password=True, password_toggle_button=True).props(
                "autofocus").classes("w-full").mark("api-key").on("keydown.enter", sign_in)
            ui.button("Sign in", icon="login", on_click=sign_in).mark("sign-in")
            hours = console.config.session_s / 3600
            ui.label(f"A sign-in lasts {hours:g} h (SMAINT_CLOUD_CONSOLE__SESSION_HOURS)."
                     ).classes("text-caption text-grey-7")
        expose_markers(ui.context.client)
        return None
