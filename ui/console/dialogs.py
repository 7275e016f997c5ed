"""The console's dialogs: a comment, a resolution, a new order, an audit trail.

Each is built once per page and filled when opened; its confirm button runs an async callback
(one API call) and closes the dialog only if the call went through.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from nicegui import ui

from ui.console import timefmt
from ui.console.frame import expose_markers

Alert = dict[str, Any]


def _buttons(confirm: str, on_confirm: Callable[[], Awaitable[None]],
             dialog: ui.dialog) -> None:
    with ui.row().classes("w-full justify-end gap-2"):
        ui.button("Cancel", on_click=dialog.close).props("flat").mark("dialog-cancel")
        ui.button(confirm, on_click=on_confirm).mark("dialog-confirm")


class TextDialog:
    """Asks for one free-text comment (acknowledging an alert)."""

    def __init__(self, title: str, label: str, confirm: str,
                 done: Callable[[Alert, str], Awaitable[bool]]) -> None:
        self._done = done
        self._alert: Alert = {}
        with ui.dialog() as self.dialog, ui.card().classes("w-[32rem]"):
            self.title = ui.label(title).classes("text-h6")
            self.comment = ui.textarea(label).classes("w-full").props("maxlength=2000").mark(
                "dialog-comment")
            _buttons(confirm, self._confirm, self.dialog)

    def open(self, alert: Alert) -> None:
        """Show the dialog for ``alert``."""
        self._alert = alert
        self.comment.value = ""
        self.dialog.open()

    async def _confirm(self) -> None:
        if await self._done(self._alert, self.comment.value or ""):
            self.dialog.close()


class ResolveDialog:
    """Asks for a decision and a comment (resolving an alert)."""

    def __init__(self, decisions: dict[str, str],
                 done: Callable[[Alert, str, str], Awaitable[bool]]) -> None:
        self._done = done
        self._alert: Alert = {}
        with ui.dialog() as self.dialog, ui.card().classes("w-[32rem]"):
            self.title = ui.label().classes("text-h6")
            ui.label("Decision").classes("text-subtitle2")
            self.decision = ui.radio(decisions).mark("dialog-decision")
            self.comment = ui.textarea("Comment").classes("w-full").props(
                "maxlength=2000").mark("dialog-comment")
            _buttons("Resolve", self._confirm, self.dialog)

    def open(self, alert: Alert) -> None:
        """Show the dialog for ``alert``."""
        self._alert = alert
        self.title.set_text(f"Resolve alert on {alert['device']}")
        self.decision.value = None
        self.comment.value = ""
        self.dialog.open()

    async def _confirm(self) -> None:
        if not self.decision.value:
            ui.notify("Choose a decision first.", type="warning")
            return
        if await self._done(self._alert, str(self.decision.value), self.comment.value or ""):
            self.dialog.close()


class OrderDialog:
    """Asks for an order's title, priority, due date and assignee."""

    def __init__(self, done: Callable[[Alert, dict[str, Any]], Awaitable[bool]]) -> None:
        self._done = done
        self._alert: Alert = {}
        with ui.dialog() as self.dialog, ui.card().classes("w-[32rem]"):
            self.heading = ui.label().classes("text-h6")
            self.title = ui.input("Title").classes("w-full").props("maxlength=200").mark(
                "order-title")
            self.priority = ui.select(["low", "medium", "high", "urgent"], value="medium",
                                      label="Priority").classes("w-48").mark("order-priority")
            self.due = ui.input("Due date (YYYY-MM-DD, optional)").mark("order-due")
            self.assignee = ui.input("Assignee (optional)").props("maxlength=100").mark(
                "order-assignee")
            _buttons("Create order", self._confirm, self.dialog)

    def open(self, alert: Alert) -> None:
        """Show the dialog for ``alert``, titled after its device."""
        self._alert = alert
        self.heading.set_text(f"Maintenance order for {alert['device']}")
        self.title.value = f"Inspect {alert['device']} ({alert['severity']} alert)"
        self.priority.value = "high" if alert["severity"] == "high" else "medium"
        self.due.value = ""
        self.assignee.value = ""
        self.dialog.open()

    async def _confirm(self) -> None:
        title = (self.title.value or "").strip()
        if not title:
            ui.notify("Give the order a title.", type="warning")
            return
        spec: dict[str, Any] = {"title": title, "priority": self.priority.value}
        due = (self.due.value or "").strip()
        if due:
            try:
                spec["due_date"] = date.fromisoformat(due).isoformat()
            except ValueError:
                ui.notify(f"{due!r} is not a date like 2025-07-01.", type="warning")
                return
        if (self.assignee.value or "").strip():
            spec["assignee"] = self.assignee.value.strip()
        if await self._done(self._alert, spec):
            self.dialog.close()


def _value(value: object) -> str:
    if value is None or value == "":
        return "not set"
    return value if isinstance(value, str) else json.dumps(value)


def _change(entry: dict[str, Any]) -> str:
    """What an audit entry changed: every field it set, or each field's before → after."""
    before, after = entry.get("before"), dict(entry.get("after") or {})
    summary = after.pop("summary", None)  # a sentence the change brought (gateway acks)
    if summary is not None:
        return f"{summary} · {_change({**entry, 'after': after})}"
    if before is None:
        return ", ".join(f"{k} {_value(v)}" for k, v in after.items() if v not in (None, ""))
    changed = [f"{k}: {_value(before.get(k))} → {_value(v)}"
               for k, v in after.items() if before.get(k) != v]
    return "; ".join(changed) or "no field changed"


class AuditDialog:
    """Shows an audit trail, oldest first."""

    def __init__(self) -> None:
        self.client = ui.context.client
        with ui.dialog() as self.dialog, ui.card().classes("w-[46rem] max-w-full"):
            self.title = ui.label().classes("text-h6")
            self.entries = ui.column().classes("w-full gap-1").mark("audit-entries")
            with ui.row().classes("w-full justify-end"):
                ui.button("Close", on_click=self.dialog.close).props("flat").mark(
                    "dialog-cancel")

    def open(self, title: str, entries: list[dict[str, Any]]) -> None:
        """Show ``entries`` under ``title``."""
        self.title.set_text(title)
        self.entries.clear()
        with self.entries:
            if not entries:
                ui.label("Nothing recorded yet: no one has acted on it.").mark("audit-empty")
            for e in entries:
                with ui.row().classes("w-full gap-3 no-wrap").mark("audit-entry"):
                    ui.label(f"{timefmt.stamp(e['at'])} UTC").classes(
                        "text-grey-8 text-no-wrap w-44 shrink-0")
                    ui.label(f"{e['actor']}").classes("text-weight-medium w-20 shrink-0")
                    ui.label(e["action"]).classes("w-32 shrink-0")
                    ui.label(_change(e)).classes("text-body2")
        expose_markers(self.client)
        self.dialog.open()


class DeployDialog:
    """Asks where a trained version goes: canary gateways first, then the fleet, and when a
    canary counts as healthy (the API's rollout request)."""

    def __init__(self, done: Callable[[dict[str, Any]], Awaitable[bool]]) -> None:
        self._done = done
        self._run: dict[str, Any] = {}
        with ui.dialog() as self.dialog, ui.card().classes("w-[36rem]"):
            self.heading = ui.label().classes("text-h6")
            ui.label("The canaries get the version first; the fleet gets it once every "
                     "canary scored enough readings with it, healthily.").classes(
                "text-body2 text-grey-8")
            self.canaries = ui.select([], multiple=True, label="Canary gateways").classes(
                "w-full").props("use-chips").mark("deploy-canaries")
            self.fleet = ui.select([], multiple=True, label="Then the fleet").classes(
                "w-full").props("use-chips").mark("deploy-fleet")
            with ui.row().classes("w-full gap-4"):
                self.min_scored = ui.number("Readings each canary scores", value=100, min=1,
                                            precision=0).classes("w-56").mark(
                    "deploy-min-scored")
                self.timeout_min = ui.number("Canary time limit (minutes)", value=60, min=1,
                                             precision=0).classes("w-56").mark(
                    "deploy-timeout")
            _buttons("Deploy", self._confirm, self.dialog)

    def open(self, run: dict[str, Any], gateways: list[str]) -> None:
        """Show the dialog for the bundle of ``run``: the first gateway as the canary."""
        self._run = run
        self.heading.set_text(f"Deploy {run['profile']} {run['bundle_version']}")
        self.canaries.set_options(gateways, value=gateways[:1])
        self.fleet.set_options(gateways, value=gateways[1:])
        self.min_scored.value = 100
        self.timeout_min.value = 60
        self.dialog.open()

    async def _confirm(self) -> None:
        canaries = list(self.canaries.value or [])
        fleet = [g for g in self.fleet.value or [] if g not in canaries]
        if not canaries:
            ui.notify("Choose at least one canary gateway.", type="warning")
            return
        spec = {"profile": self._run["profile"], "version": self._run["bundle_version"],
                "canaries": canaries, "fleet": fleet,
                "min_scored": int(self.min_scored.value or 100),
                "canary_timeout_s": int(self.timeout_min.value or 60) * 60}
        if await self._done(spec):
            self.dialog.close()
