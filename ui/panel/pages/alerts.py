"""Alerts: open first, severity, what drove each (the explanation's weights), acknowledge.

An acknowledgement goes through the gateway's own path (edge.alert_lifecycle's
acknowledge_alert via Gateway.ack_alert): stored, queued for sync and published exactly like
``POST /api/alerts/<id>/ack``; who and the comment go up with it to the cloud's review and
audit trail. Decisions taken in the cloud console come back down (edge.alert_decisions) and
are shown on the alert, marked "from cloud".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nicegui import ui
from starlette.responses import RedirectResponse

from edge.alert_decisions import KeptDecision
from edge.alert_lifecycle import AlertNotFoundError, AlertResolvedError
from edge.store import now_ms
from shared.schemas import MAX_ACTOR, MAX_ALERT_COMMENT
from ui.panel import snapshot, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard, still_signed_in

log = logging.getLogger(__name__)
MAX_COMMENT = MAX_ALERT_COMMENT
_SEVERITY_COLOR = {"high": "negative", "medium": "orange-8", "low": "amber-8"}
_STATE_COLOR = {"open": "negative", "acknowledged": "primary", "resolved": "positive"}


def acknowledge(panel: Panel, alert_id: str, comment: str, author: str) -> str:
    """Acknowledge through the gateway and keep the comment; what happened, in words.

    Raises AlertNotFoundError or AlertResolvedError as the HTTP ack would answer 404 or 409.
    """
    gw = panel.gateway
    before = gw.store.alert(alert_id)
    who = author.strip()[:MAX_ACTOR] or "panel"
    text = comment.strip()[:MAX_COMMENT]
    alert = gw.ack_alert(alert_id, by=who, comment=text)
    if text:
        # Every comment written here is kept here; the acknowledging one also went up with
        # the alert (Alert.ack), a later one stays on this gateway.
        gw.store.add_alert_comment(alert_id, now_ms(), who, text)
    already = before is not None and before.state == "acknowledged"
    log.info("panel: alert=%s acknowledged%s", alert.alert_id,
             " (again, comment added)" if already else "", extra={"device": alert.device})
    return (f"Alert on {alert.device} was acknowledged already; comment added." if already
            else f"Alert on {alert.device} acknowledged.")


def explanation_rows(weights: dict[str, float]) -> list[tuple[str, float, bool]]:
    """(name, weight, is a feature) in the order shown: metrics by weight, each followed by
    its features (``<metric>.<feature>`` keys) by weight."""
    def by_weight(kv: tuple[str, float]) -> tuple[float, str]:
        return (-abs(kv[1]), kv[0])

    features: dict[str, list[tuple[str, float]]] = {}
    metrics: dict[str, float] = {}
    for key, w in weights.items():
        metric, _, feature = key.partition(".")
        if feature:
            features.setdefault(metric, []).append((key, w))
        else:
            metrics[key] = w
    out: list[tuple[str, float, bool]] = []
    for metric, w in sorted(metrics.items(), key=by_weight):
        out.append((metric, w, False))
        out.extend((k, fw, True) for k, fw in sorted(features.pop(metric, []), key=by_weight))
    for rest in features.values():  # features of a metric the explanation does not weigh
        out.extend((k, fw, True) for k, fw in sorted(rest, key=by_weight))
    return out


def _explanation(weights: dict[str, float]) -> None:
    if not weights:
        ui.label("The detector stored no explanation for this alert.").classes(
            "text-caption text-grey-7")
        return
    top = max(abs(w) for w in weights.values()) or 1.0
    with ui.grid(columns="14rem 12rem 5rem").classes("items-center gap-x-3 gap-y-1"):
        for name, w, feature in explanation_rows(weights):
            ui.label(f"  {name}" if feature else name).classes(
                "text-body2 q-pl-md text-grey-8" if feature else "text-body2 text-weight-medium")
            ui.linear_progress(value=abs(w) / top, show_value=False,
                               size="6px" if feature else "10px").props(
                f"color={'negative' if w > 0 else 'primary'}")
            ui.label(f"{w:.0%}").classes("text-body2 text-right")  # shares of the score


def _card(row: snapshot.AlertRow, ask: Callable[[str, str], None]) -> None:
    a = row.alert
    with ui.card().classes("w-full").mark(f"alert-{a.alert_id}"):
        with ui.row().classes("items-center w-full"):
            ui.badge(a.severity, color=_SEVERITY_COLOR[a.severity])
            ui.badge(a.state, color=_STATE_COLOR[a.state]).mark("alert-state")
            if a.simulated:
                # Opened on an injected fault (a drill or a demo), not on the machine.
                ui.badge("SIMULATED", color="purple-7").mark("alert-simulated")
            ui.link(a.device, f"/devices/{a.device}").classes("text-subtitle1")
            ui.label(f"opened {units.clock(a.opened_ms)}").classes("text-body2")
            if a.resolved_ms is not None:
                ui.label(f"resolved {units.clock(a.resolved_ms)}").classes("text-body2")
            ui.space()
            if a.state == "open":
                ui.button("Acknowledge", icon="done",
                          on_click=lambda: ask(a.alert_id, a.device)).mark("ack-button")
        ui.label(f"peak score {a.score:.3g} · scored by {a.model_version or a.scorer} · "
                 f"id {a.alert_id}").classes("text-caption text-grey-8")
        ui.label("What drove it (the weight the detector gave each metric and feature):"
                 ).classes("text-body2")
        _explanation(a.explanation)
        if a.ack is not None:  # its comment is among the comments below
            ui.label(f"{units.clock(a.ack.at_ms)} acknowledged on this gateway by {a.ack.by}"
                     ).classes("text-body2").mark("alert-ack")
        for at, who, text in row.comments:
            ui.label(f"{units.clock(at)} {who}: {text}").classes(
                "text-body2 text-italic").mark("alert-comment")
        for d in row.decisions:
            ui.label(decision_text(d)).classes("text-body2 text-weight-medium").mark(
                "alert-decision")


def decision_text(d: KeptDecision) -> str:
    """A cloud decision in one line, e.g. "from cloud: resolved by alice as false positive"."""
    what = "acknowledged" if d.action == "acknowledge" else "resolved"
    line = f"{units.clock(d.at_ms)} from cloud: {what} by {d.by}"
    if d.decision:
        line += f" as {d.decision.replace('_', ' ')}"
    if d.comment:
        line += f": {d.comment}"
    if d.outcome == "unchanged":
        line += f" (the alert was {what} here already)"
    elif d.outcome == "unknown_alert":
        line += " (this gateway no longer holds the alert)"
    return line


class _AckDialog:
    """The acknowledge dialog: a comment, an optional name, confirm or cancel."""

    def __init__(self, panel: Panel, done: Callable[[], object]) -> None:
        self.panel = panel
        self.done = done
        self.alert_id = ""
        with ui.dialog() as self.dialog, ui.card().classes("w-[32rem]"):
            self.heading = ui.label().classes("text-h6")
            self.comment = ui.textarea("Comment (kept here, and sent to the cloud with the "
                                       "acknowledgement)").props(
                f"maxlength={MAX_COMMENT} autogrow").classes("w-full").mark("ack-comment")
            self.author = ui.input("Your name (optional)").classes("w-full").mark("ack-author")
            with ui.row():
                ui.button("Acknowledge", on_click=self.confirm).mark("ack-confirm")
                ui.button("Cancel", on_click=self.dialog.close).props("flat").mark(
                    "ack-cancel")

    def ask(self, alert_id: str, device: str) -> None:
        """Open the dialog for one alert."""
        self.alert_id = alert_id
        self.heading.set_text(f"Acknowledge the alert on {device}")
        self.comment.value = ""
        self.dialog.open()

    def confirm(self) -> None:
        """Acknowledge (if still signed in) and say what happened."""
        if not still_signed_in(self.panel):
            return
        try:
            said = acknowledge(self.panel, self.alert_id, self.comment.value or "",
                               self.author.value or "")
        except (AlertNotFoundError, AlertResolvedError) as exc:
            ui.notify(f"Not acknowledged: {exc}", type="warning")
        else:
            ui.notify(said, type="positive")
        self.dialog.close()
        self.done()


def _key(rows: list[snapshot.AlertRow]) -> list[tuple[str, int, int, int]]:
    return [(r.alert.alert_id, r.alert.updated_ms, len(r.comments), len(r.decisions))
            for r in rows]


def register(panel: Panel) -> None:
    """Add the Alerts page at /alerts."""

    @ui.page("/alerts", title=f"Alerts · {panel.gateway.settings.gateway_id}")
    def alerts_page() -> RedirectResponse | None:
        if (redirect := guard(panel, "/alerts")) is not None:
            return redirect
        with frame(panel, "Alerts"):
            summary = ui.label().mark("alerts-summary")
            shown: dict[str, list[tuple[str, int, int, int]]] = {}

            @ui.refreshable
            def listing() -> None:
                found = snapshot.alerts(panel.gateway)
                shown["key"] = _key(found)
                open_n = sum(r.alert.state == "open" for r in found)
                summary.set_text(f"{open_n} open, {len(found)} shown (open first)"
                                 if found else "No alert has been raised on this gateway.")
                for row in found:
                    _card(row, dialog.ask)

            dialog = _AckDialog(panel, listing.refresh)
            listing()

            def tick() -> None:
                # Redrawn only when an alert changed: a redraw under the cursor loses clicks.
                if _key(snapshot.alerts(panel.gateway)) != shown.get("key"):
                    listing.refresh()

            ui.timer(panel.refresh_s, tick)
        return None
