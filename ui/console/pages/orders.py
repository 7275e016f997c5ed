"""Orders board: maintenance orders in their workflow columns (open → scheduled → done), each
moved on by one button, with its history."""

from __future__ import annotations

from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console import timefmt
from ui.console.context import Console
from ui.console.dialogs import AuditDialog
from ui.console.frame import call, expose_markers, fingerprint, frame, guard, session_of
from ui.console.sessions import Session

# status -> (column title, the next status, its button)
WORKFLOW: dict[str, tuple[str, str | None, str]] = {
    "open": ("Open", "scheduled", "Schedule"),
    "scheduled": ("Scheduled", "done", "Mark done"),
    "done": ("Done", None, ""),
}
PRIORITY_COLORS = {"urgent": "red-9", "high": "red-6", "medium": "orange-7", "low": "grey-6"}


def register(console: Console) -> None:
    """Add the board at /orders."""

    @ui.page("/orders", title="Orders · Smart Maintenance console")
    async def orders_page() -> RedirectResponse | None:
        if (redirect := guard(console, "/orders")) is not None:
            return redirect
        session = session_of(console)
        with frame(console, session, "Maintenance orders"):
            board = Board(console, session)
            board.build()
            await board.refresh()
        return None


class Board:
    """The three columns of one open board page."""

    def __init__(self, console: Console, session: Session) -> None:
        self.console, self.session = console, session
        self.client = ui.context.client
        self.history = AuditDialog()
        self._shown = ""

    def build(self) -> None:
        """The columns and the refresh timer."""
        ui.label("Raise an order from an alert (Alerts → Create order); move it along here. "
                 "The API refuses any other step (skipping, going back).").classes(
            "text-body2 text-grey-8")
        with ui.row().classes("w-full no-wrap items-start gap-4"):
            self.columns: dict[str, ui.column] = {}
            self.titles: dict[str, ui.label] = {}
            for status, (title, _, _) in WORKFLOW.items():
                with ui.card().classes("col q-pa-sm bg-grey-1").mark(f"column-{status}"):
                    self.titles[status] = ui.label(title).classes("text-h6")
                    self.columns[status] = ui.column().classes("w-full gap-2")
        ui.timer(self.console.config.refresh_s, self.refresh)

    async def refresh(self) -> None:
        """Fetch the orders; redraw the columns if anything changed."""
        orders = await call(self.console, lambda api: api.orders())
        if orders is None:
            return
        key = fingerprint(orders)
        if key == self._shown:
            return
        self._shown = key
        for status, (title, _, _) in WORKFLOW.items():
            mine = [o for o in orders if o["status"] == status]
            self.titles[status].set_text(f"{title} ({len(mine)})")
            column = self.columns[status]
            column.clear()
            with column:
                if not mine:
                    ui.label("No order here.").classes("text-grey-7")
                for order in mine:
                    self._card(order)
        expose_markers(self.client)

    def _card(self, order: dict[str, Any]) -> None:
        _, following, verb = WORKFLOW[order["status"]]
        with ui.card().classes("w-full q-pa-sm").mark(f"order-{order['order_id']}"):
            with ui.row().classes("items-center w-full gap-2"):
                ui.label(f"#{order['order_id']}").classes("text-grey-7")
                ui.label(order["title"]).classes("text-subtitle2")
                ui.space()
                ui.badge(order["priority"], color=PRIORITY_COLORS[order["priority"]])
            ui.label(f"{order['device']} · alert {order['gateway']}/{order['alert_id']}"
                     ).classes("text-body2")
            ui.label(f"due {order['due_date'] or 'not set'} · assignee "
                     f"{order['assignee'] or 'nobody yet'} · by {order['created_by']} "
                     f"{timefmt.stamp(order['created_at'])} UTC").classes(
                "text-caption text-grey-8")
            with ui.row().classes("gap-2"):
                if following is not None and self.session.may("operator"):
                    ui.button(verb, icon="arrow_forward",
                              on_click=lambda o=order, s=following: self._move(o, s)).props(
                        "dense outline").mark(f"move-{following}")
                ui.button("History", icon="history",
                          on_click=lambda o=order: self._show_history(o)).props(
                    "dense flat").mark("order-history")

    async def _move(self, order: dict[str, Any], status: str) -> None:
        await call(self.console, lambda api: api.change_order(order["order_id"],
                                                              {"status": status}),
                   f"Order {order['order_id']} is {status} now.")
        await self.refresh()

    async def _show_history(self, order: dict[str, Any]) -> None:
        entries = await call(self.console, lambda api: api.order_history(order["order_id"]))
        if entries is not None:
            self.history.open(f"History of order {order['order_id']} ({order['device']})",
                              entries)
