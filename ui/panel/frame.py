"""The frame around every page (header, left navigation, sign-out) and the sign-in guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from nicegui import app, ui
from starlette.responses import RedirectResponse

from ui.panel.context import Panel

# (label, path, Material icon): the left navigation, in this order.
NAV = (
    ("Devices", "/", "sensors"),
    ("Alerts", "/alerts", "notifications"),
    ("Sync", "/sync", "cloud_upload"),
    ("Models", "/models", "model_training"),
    ("Health", "/health", "monitor_heart"),
)


def browser_id() -> str | None:
    """The id NiceGUI keeps for this browser in its signed session cookie."""
    value = app.storage.browser.get("id")
    return str(value) if value is not None else None


def guard(panel: Panel, path: str) -> RedirectResponse | None:
    """A redirect to the sign-in (or first-start) page unless this browser is signed in."""
    if not panel.auth.configured:
        return RedirectResponse("/setup", status_code=303)
    if panel.auth.signed_in(browser_id()):
        return None
    return RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)


def still_signed_in(panel: Panel) -> bool:
    """For actions: True if the session still holds, else say so and go to the sign-in."""
    if panel.auth.signed_in(browser_id()):
        return True
    ui.notify("Your session has ended: sign in again.", type="warning")
    ui.navigate.to("/login")
    return False


@contextmanager
def frame(panel: Panel, title: str) -> Iterator[None]:
    """Header and navigation; the page's content goes inside the ``with`` block."""
    gw = panel.gateway
    with ui.header().classes("items-center bg-blue-grey-9 q-py-sm"):
        ui.label("Smart Maintenance").classes("text-h6")
        ui.label(f"gateway {gw.settings.gateway_id}").classes("text-subtitle2 opacity-80")
        ui.space()
        ui.button("Sign out", icon="logout", on_click=lambda: _sign_out(panel)).props(
            "flat color=white").mark("sign-out")
    with ui.left_drawer(value=True, fixed=True).classes("bg-grey-2").props("width=190"):
        for label, path, icon in NAV:
            link = ui.link(target=path).classes("no-underline text-grey-9 w-full").mark(
                f"nav-{label.lower()}")
            with link, ui.row().classes("items-center q-py-sm q-px-xs no-wrap"):
                ui.icon(icon)
                ui.label(label).classes("text-body1")
    with ui.column().classes("w-full q-pa-md"):
        ui.label(title).classes("text-h5")
        yield


def _sign_out(panel: Panel) -> None:
    browser = browser_id()
    if browser is not None:
        panel.auth.sign_out(browser)
    ui.navigate.to("/login")
