"""The sign-in page: the only console page open without a session.

Users sign in with their name and console password (``smaint cloud user passwd NAME``; the
API's ``POST /api/v1/sessions`` checks it, argon2id, and issues a key that expires with the
session), or with an API key (``smaint cloud user add NAME --role ROLE`` prints the first
one), checked by ``GET /api/v1/me``. The API counts failed attempts per user and address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console.api import ApiError, SignedOutError
from ui.console.context import Console
from ui.console.frame import NAV, api_as, browser_id, expose_markers

log = logging.getLogger(__name__)
_PATHS = {path for _, path, _ in NAV}


def safe_next(target: str) -> str:
    """Only the console's own pages: a crafted ``next`` must not send anyone off-site."""
    path = target.split("?", 1)[0]
    if path in _PATHS and "//" not in target and "\\" not in target:
        return target
    return "/"


Handler = Callable[[], Awaitable[None]]


def _card(console: Console, with_password: Handler, with_key: Handler
          ) -> tuple[ui.input, ui.input, ui.input]:
    """The sign-in card; its user-name, password and API-key fields."""
    with ui.card().classes("absolute-center w-[30rem]"):
        ui.label("Smart Maintenance cloud console").classes("text-h6")
        ui.label("Sign in with your user name and console password "
                 "(`smaint cloud user passwd NAME` sets one).").classes(
            "text-body2 text-grey-8")
        name_field = ui.input("User name").props("autofocus").classes("w-full").mark(
            "user-name")
        password_field = ui.input("Password", password=True).classes("w-full").mark(
            "password").on("keydown.enter", with_password)
        ui.button("Sign in", icon="login", on_click=with_password).mark("sign-in-password")
        ui.separator()
        ui.label("Or with an API key: `smaint cloud user add NAME --role ROLE` prints a "
                 "user's first key; an admin can issue more.").classes(
            "text-body2 text-grey-8")
        key_field = ui.input("API key", password=True, password_toggle_button=True).classes(
            "w-full").mark("api-key").on("keydown.enter", with_key)
        ui.button("Sign in with key", icon="key", on_click=with_key).mark("sign-in")
        hours = console.config.session_s / 3600
        ui.label(f"A sign-in lasts {hours:g} h (SMAINT_CLOUD_CONSOLE__SESSION_HOURS)."
                 ).classes("text-caption text-grey-7")
    return name_field, password_field, key_field


def register(console: Console) -> None:
    """Add /login."""

    @ui.page("/login", title="Sign in · Smart Maintenance console")
    def login(next: str = "/") -> RedirectResponse | None:  # noqa: A002  (the query parameter)
        target = safe_next(next)
        if console.sessions.get(browser_id()) is not None:
            return RedirectResponse(target, status_code=303)

        async def with_password() -> None:
            name = (name_field.value or "").strip()
            password = password_field.value or ""
            anonymous = api_as(console, "")
            try:
                issued = await anonymous.sign_in(name, password)
            except SignedOutError as exc:
                log.warning("console: failed password sign-in of %r: %s", name[:64], exc.detail)
                await asyncio.sleep(console.config.failed_sign_in_delay_s)
                password_field.value = ""
                ui.notify(f"Not signed in: {exc.detail}.", type="negative")
                return
            except ApiError as exc:  # 429 after too many failures, 422, 503
                ui.notify(f"Not signed in: {exc.detail}", type="negative", multi_line=True)
                return
            await sign_in(issued["key"], password=True)

        async def with_key() -> None:
            await sign_in((key_field.value or "").strip(), password=False)

        async def sign_in(key: str, *, password: bool) -> None:
            browser = browser_id()
            api = api_as(console, key)
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
            console.sessions.start(browser, key, me["name"], me["role"], password=password)
            log.info("console: %s (%s) signed in", me["name"], me["role"])
            ui.navigate.to(target)

        name_field, password_field, key_field = _card(console, with_password, with_key)
        expose_markers(ui.context.client)
        return None
