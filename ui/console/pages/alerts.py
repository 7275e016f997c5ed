"""Alerts inbox: filter, acknowledge, resolve with a decision and a comment, each alert's audit
trail, the decisions as CSV, and a maintenance order raised from an alert.

Operators and admins see the actions; viewers do not, and the API refuses them anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console import timefmt
from ui.console.context import Console
from ui.console.dialogs import AuditDialog, OrderDialog, ResolveDialog, TextDialog
from ui.console.frame import call, expose_markers, fingerprint, frame, guard, session_of
from ui.console.sessions import Session

SHOWN = 200
STATES = {"": "Any review state", "open": "Open", "acknowledged": "Acknowledged",
          "resolved": "Resolved"}
SEVERITIES = {"": "Any severity", "high": "High", "medium": "Medium", "low": "Low"}
OPENED = {"": "Opened any time", "1d": "Opened in the last day",
          "7d": "Opened in the last 7 days", "30d": "Opened in the last 30 days"}
_OPENED_SPAN = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SEVERITY_COLORS = {"high": "red-8", "medium": "orange-8", "low": "amber-8"}
DECISIONS = {"confirmed_failure": "Confirmed failure", "false_positive": "False positive",
             "needs_inspection": "Needs inspection"}


def explanation(alert: dict[str, Any], most: int = 4) -> str:
    """The metrics and features that weighed most, strongest first."""
    weights = sorted(alert["explanation"].items(), key=lambda kv: -abs(kv[1]))
    if not weights:
        return "no explanation recorded"
    return ", ".join(f"{name} {w:.0%}" for name, w in weights[:most])  # shares of the score


def review(alert: dict[str, Any]) -> str:
    """Who did what to the alert, in one line."""
    parts = [f"review: {alert['state']}"]
    if alert["acknowledged_by"]:
        parts.append(f"acknowledged by {alert['acknowledged_by']} "
                     f"{timefmt.stamp(alert['acknowledged_at'])}")
    if alert["resolved_by"]:
        parts.append(f"resolved by {alert['resolved_by']} {timefmt.stamp(alert['resolved_at'])}"
                     f" as {DECISIONS.get(alert['decision'] or '', alert['decision'])}")
    if alert["comment"]:
        parts.append(f"“{alert['comment']}”")
    return " · ".join(parts)


def register(console: Console) -> None:
    """Add the inbox at /alerts (``?device=`` preselects a device)."""

    @ui.page("/alerts", title="Alerts · Smart Maintenance console")
    async def alerts_page(device: str = "") -> RedirectResponse | None:
        if (redirect := guard(console, "/alerts")) is not None:
            return redirect
        session = session_of(console)
        devices = await call(console, lambda api: api.devices()) or []
        with frame(console, session, "Alerts"):
            inbox = Inbox(console, session, [d["device"] for d in devices], device)
            inbox.build()
            await inbox.refresh()
        return None


class Inbox:
    """The filters, the alert list and the dialogs of one open inbox page."""

    def __init__(self, console: Console, session: Session, devices: list[str],
                 device: str) -> None:
        self.console, self.session = console, session
        self.client = ui.context.client
        self.devices = {"": "Any device", **{d: d for d in devices}}
        self.filters: dict[str, str] = {"state": "open", "severity": "", "opened": "",
                                        "device": device if device in self.devices else ""}
        self._shown = ""
        self.acknowledge = TextDialog("Acknowledge alert", "Comment (optional)", "Acknowledge",
                                      self._acknowledge)
        self.resolve = ResolveDialog(DECISIONS, self._resolve)
        self.order = OrderDialog(self._create_order)
        self.audit = AuditDialog()

    def build(self) -> None:
        """Filters, export, the list, and the refresh timer."""
        with ui.row().classes("items-end w-full gap-4"):
            for name, options, width in (("state", STATES, "w-48"),
                                         ("severity", SEVERITIES, "w-40"),
                                         ("device", self.devices, "w-56"),
                                         ("opened", OPENED, "w-56")):
                ui.select(options, value=self.filters[name], with_input=name == "device",
                          on_change=lambda e, n=name: self._filter(n, e.value)).classes(
                    width).mark(f"filter-{name}")
            ui.space()
            ui.button("Export decisions (CSV)", icon="download",
                      on_click=self._export).props("outline").mark("export-decisions")
        self.count = ui.label().classes("text-body2 text-grey-8").mark("alerts-count")
        self.list = ui.column().classes("w-full gap-2").mark("alert-list")
        ui.timer(self.console.config.refresh_s, self.refresh)

    async def _filter(self, name: str, value: object) -> None:
        self.filters[name] = str(value or "")
        await self.refresh()

    def _query(self) -> dict[str, Any]:
        f = self.filters
        since = None
        if f["opened"]:
            since = (datetime.now(UTC) - _OPENED_SPAN[f["opened"]]).isoformat()
        return {"state": f["state"] or None, "severity": f["severity"] or None,
                "device": f["device"] or None, "since": since}

    async def refresh(self) -> None:
        """Fetch with the filters; redraw the list if anything changed."""
        query = self._query()
        found = await call(self.console, lambda api: api.alerts(limit=SHOWN, **query))
        if found is None:
            return
        alerts, more = found
        key = fingerprint(alerts, self.filters)
        if key == self._shown:
            return
        self._shown = key
        newest = " (the newest; narrow the filters for more)" if more else ""
        self.count.set_text(f"{len(alerts)}{newest} alert{'s' if len(alerts) != 1 else ''} "
                            "match the filters.")
        self.list.clear()
        with self.list:
            for alert in alerts:
                self._card(alert)
        expose_markers(self.client)

    def _card(self, alert: dict[str, Any]) -> None:
        ref = f"{alert['gateway']}/{alert['alert_id']}"
        may_act = self.session.may("operator")
        with ui.card().classes("w-full q-pa-sm").mark(f"alert-{ref}"):
            with ui.row().classes("items-center w-full gap-3"):
                ui.badge(alert["severity"], color=SEVERITY_COLORS[alert["severity"]])
                if alert.get("simulated"):
                    # Opened on an injected fault (a drill or a demo), not on the machine.
                    ui.badge("SIMULATED", color="purple-7").mark("simulated")
                ui.label(f"{alert['device']}").classes("text-subtitle1 text-weight-medium")
                ui.label(f"gateway {alert['gateway']} · alert {alert['alert_id']} · opened "
                         f"{timefmt.stamp(alert['opened_at'])} UTC · condition "
                         f"{alert['gateway_state']}").classes("text-body2 text-grey-8")
                ui.space()
                ui.badge(alert["state"], color="blue-grey-6").mark("review-state")
            ui.label(f"score {alert['score']:.3f} by {alert['scorer']}"
                     f"{' model ' + alert['model_version'] if alert['model_version'] else ''}"
                     f" · drivers: {explanation(alert)}").classes("text-body2")
            ui.label(review(alert)).classes("text-body2 text-grey-8").mark("review")
            with ui.row().classes("gap-2"):
                if may_act and alert["state"] == "open":
                    ui.button("Acknowledge", icon="done",
                              on_click=lambda a=alert: self.acknowledge.open(a)).props(
                        "dense outline").mark("acknowledge")
                if may_act and alert["state"] != "resolved":
                    ui.button("Resolve", icon="task_alt",
                              on_click=lambda a=alert: self.resolve.open(a)).props(
                        "dense outline").mark("resolve")
                if may_act:
                    ui.button("Create order", icon="build",
                              on_click=lambda a=alert: self.order.open(a)).props(
                        "dense outline").mark("create-order")
                ui.button("Audit trail", icon="history",
                          on_click=lambda a=alert: self._show_audit(a)).props(
                    "dense flat").mark("audit-trail")

    # -- actions (each one API call as the signed-in user) -----------------------------------

    async def _acknowledge(self, alert: dict[str, Any], comment: str) -> bool:
        done = await call(self.console, lambda api: api.acknowledge(
            alert["gateway"], alert["alert_id"], comment), "Alert acknowledged.")
        await self.refresh()
        return done is not None

    async def _resolve(self, alert: dict[str, Any], decision: str, comment: str) -> bool:
        done = await call(self.console, lambda api: api.resolve(
            alert["gateway"], alert["alert_id"], decision, comment),
            f"Alert resolved as {DECISIONS[decision].lower()}.")
        await self.refresh()
        return done is not None

    async def _create_order(self, alert: dict[str, Any], spec: dict[str, Any]) -> bool:
        order = await call(self.console, lambda api: api.create_order(
            alert["gateway"], alert["alert_id"], spec))
        if order is not None:
            ui.notify(f"Order {order['order_id']} created for {order['device']}; see Orders.",
                      type="positive")
        return order is not None

    async def _show_audit(self, alert: dict[str, Any]) -> None:
        entries = await call(self.console, lambda api: api.alert_audit(
            alert["gateway"], alert["alert_id"]))
        if entries is not None:
            self.audit.open(f"Audit trail of alert {alert['gateway']}/{alert['alert_id']} "
                            f"({alert['device']})", entries)

    async def _export(self) -> None:
        data = await call(self.console, lambda api: api.decisions_csv())
        if data is not None:
            ui.download.content(data, "alert-decisions.csv", "text/csv")
