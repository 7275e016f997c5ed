"""The frame around every console page (header with the "where it runs" bar, navigation,
the signed-in user, sign-out), the sign-in guard, and how API refusals are shown."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import nicegui
from nicegui import Client, app, ui
from starlette.responses import RedirectResponse

from ui.console.api import ApiError, NotAllowedError, SignedOutError, UserApi
from ui.console.context import Console
from ui.console.sessions import Session

T = TypeVar("T")
log = logging.getLogger(__name__)

# (label, path, Material icon): the left navigation, in this order.
NAV = (
    ("Fleet", "/", "hub"),
    ("Device explorer", "/explorer", "show_chart"),
    ("Alerts", "/alerts", "notifications"),
    ("Orders", "/orders", "build"),
    ("Models", "/models", "model_training"),
    ("Reports", "/reports", "summarize"),
)
_STATE_COLORS = {"ok": "text-green-5", "down": "text-red-5", "unchecked": "text-grey-5"}


def browser_id() -> str | None:
    """The id NiceGUI keeps for this browser in its signed session cookie."""
    value = app.storage.browser.get("id")
    return str(value) if value is not None else None


def guard(console: Console, path: str) -> RedirectResponse | None:
    """A redirect to the sign-in page unless this browser has a live session."""
    if console.sessions.get(browser_id()) is not None:
        return None
    return RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)


def session_of(console: Console) -> Session:
    """The page's session (call after :func:`guard` let the page through)."""
    session = console.sessions.get(browser_id())
    if session is None:
        raise SignedOutError(401, "the console session ended", "console")
    return session


def api_as(console: Console, key: str) -> UserApi:
    """The API as the holder of ``key`` ("" for none), from this browser's address (and the
    X-Forwarded-For its page request carried, which the API believes from a trusted proxy)."""
    client = ui.context.client
    return console.api.as_user(key, client.ip, client.request.headers.get("x-forwarded-for"))


def api_of(console: Console, session: Session) -> UserApi:
    """The API as the session's user, from this browser's address."""
    return api_as(console, session.key)


async def call(console: Console, action: Callable[[UserApi], Awaitable[T]],
               success: str | None = None) -> T | None:
    """Run ``action`` as the signed-in user; show the API's refusal, or ``success``.

    None when it did not happen: the session ended (the browser goes to the sign-in page),
    the role may not (the API's 403), or the API refused for another reason (409, 422, ...).
    """
    session = console.sessions.get(browser_id())
    if session is None:
        _signed_out()
        return None
    try:
        result = await action(api_of(console, session))
    except SignedOutError:
        console.sessions.end(browser_id())
        _signed_out()
        return None
    except NotAllowedError as exc:
        ui.notify(f"Not allowed for your role ({session.role}): {exc.detail}", type="negative",
                  multi_line=True)
        return None
    except ApiError as exc:
        ui.notify(f"The cloud refused: {exc.detail}", type="negative", multi_line=True)
        return None
    if success:
        ui.notify(success, type="positive")
    return result


def _signed_out() -> None:
    ui.notify("Your session has ended: sign in again.", type="warning")
    ui.navigate.to("/login")


def _status_bar(console: Console) -> None:
    """Environment, versions and each connection's state; refreshed on a timer."""
    row = ui.row().classes("items-center gap-x-5 gap-y-0 text-caption w-full").mark(
        "where-it-runs")
    shown: list[str] = []
    client = ui.context.client

    async def refresh() -> None:
        info = await call(console, lambda api: api.system())
        if info is None:
            return
        key = repr(info["connections"]) + repr(info["versions"])
        if shown and shown[0] == key:
            return
        shown[:] = [key]
        row.clear()
        versions = info["versions"]
        with row:
            ui.label(f"environment {info['environment']}").classes("text-no-wrap").mark("env")
            ui.label(f"smart-maintenance {versions['smart_maintenance']} · Python "
                     f"{versions['python']} · FastAPI {versions['fastapi']} · NiceGUI "
                     f"{nicegui.__version__}" + (f" · MLflow {versions['mlflow']}"
                                                 if versions["mlflow"] else ""))
            for conn in info["connections"]:
                with ui.row().classes("items-center gap-1 no-wrap").mark(
                        f"connection-{conn['name'].replace(' ', '-')}"):
                    ui.icon("circle", size="10px").classes(_STATE_COLORS[conn["state"]])
                    ui.label(f"{conn['name']} {conn['state']}: {conn['target']}")
                    ui.tooltip(f"{conn['detail']} (checked in {conn['checked_ms']} ms)")
        expose_markers(client)

    ui.timer(console.config.status_refresh_s, refresh, immediate=True)


@contextmanager
def frame(console: Console, session: Session, title: str) -> Iterator[None]:
    """Header, "where it runs" bar and navigation; the page goes inside the ``with`` block."""
    with ui.header().classes("column items-stretch bg-blue-grey-9 q-py-xs q-px-md gap-0"):
        with ui.row().classes("items-center w-full"):
            ui.label("Smart Maintenance").classes("text-h6")
            ui.label("cloud console").classes("text-subtitle2 opacity-80")
            ui.space()
            ui.label(f"{session.name} ({session.role})").classes("text-body2").mark("whoami")
            ui.button("Sign out", icon="logout", on_click=lambda: _sign_out(console)).props(
                "flat color=white").mark("sign-out")
        _status_bar(console)
    with ui.left_drawer(value=True, fixed=True).classes("bg-grey-2").props("width=200"):
        for label, path, icon in NAV:
            link = ui.link(target=path).classes("no-underline text-grey-9 w-full").mark(
                f"nav-{path.strip('/') or 'fleet'}")
            with link, ui.row().classes("items-center q-py-sm q-px-xs no-wrap"):
                ui.icon(icon)
                ui.label(label).classes("text-body1")
        if console.config.environment == "development":  # production serves no /docs
            ui.separator()
            ui.link("API docs", "/docs", new_tab=True).classes("q-px-xs text-body2").mark(
                "nav-docs")
    with ui.column().classes("w-full q-pa-md gap-3"):
        ui.label(title).classes("text-h5")
        yield
    expose_markers(ui.context.client)


async def _sign_out(console: Console) -> None:
    browser = browser_id()
    session = console.sessions.get(browser)
    console.sessions.end(browser)
    if session is not None and session.password:
        try:
            await api_of(console, session).sign_out()  # the session key ends now, not later
        except ApiError as exc:
            log.warning("console: sign-out of %s: %s", session.name, exc.detail)
    ui.navigate.to("/login")


def expose_markers(client: Client) -> None:
    """Give every element with a NiceGUI marker a ``data-marker`` attribute, so a browser
    test finds by the same name what NiceGUI's simulated user finds (call after building).

    The page's ``client`` is passed in: a handler's own slot may be gone by then (a redraw
    deletes the button that was clicked).
    """
    for element in client.layout.descendants():
        markers = " ".join(element._markers)  # NiceGUI keeps them only here
        if markers and element.props.get("data-marker") != markers:
            element.props["data-marker"] = markers
            element.update()


def fingerprint(*parts: Any) -> str:
    """A cheap identity of fetched data: a view redraws only when it changed."""
    return repr(parts)
