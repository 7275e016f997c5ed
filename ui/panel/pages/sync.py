"""Sync: connected or not, backlog size and age, last successful upload, bytes sent, errors."""

from __future__ import annotations

from nicegui import ui
from starlette.responses import RedirectResponse

from edge.store import now_ms
from ui.panel import snapshot, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard

_STATE = {
    "connected": ("positive", "connected: the last upload was acknowledged"),
    "failing": ("negative", "not connected: the last upload failed"),
    "waiting": ("grey-7", "no upload acknowledged since the gateway started"),
    "disabled": ("grey-7", "sync off: no cloud token (SMAINT_GATEWAY_SYNC__TOKEN)"),
}


def fact(name: str, value: str, mark: str) -> None:
    """One labelled value of a facts grid."""
    ui.label(name).classes("text-grey-8")
    ui.label(value).classes("text-body1").mark(mark)


def register(panel: Panel) -> None:
    """Add the Sync page at /sync."""

    @ui.page("/sync", title=f"Sync · {panel.gateway.settings.gateway_id}")
    def sync_page() -> RedirectResponse | None:
        if (redirect := guard(panel, "/sync")) is not None:
            return redirect
        with frame(panel, "Sync"):

            @ui.refreshable
            def body() -> None:
                s = snapshot.sync(panel.gateway)
                now = now_ms()
                color, words = _STATE[s["state"]]
                with ui.row().classes("items-center"):
                    ui.badge(s["state"], color=color).mark("sync-state")
                    ui.label(words)
                with ui.grid(columns="14rem auto").classes("gap-y-1"):
                    fact("Cloud", s["cloud_url"], "sync-cloud")
                    fact("Backlog", f"{s['backlog']} rows not yet synced", "sync-backlog")
                    age = ("none waiting" if s["oldest_unsent_ms"] is None else
                           f"oldest waiting since {units.clock(s['oldest_unsent_ms'])} "
                           f"({units.ago(s['oldest_unsent_ms'], now)})")
                    fact("Backlog age", age, "sync-backlog-age")
                    fact("Last successful upload",
                         "none since the gateway started" if s["last_ack_ms"] is None else
                         f"{units.clock(s['last_ack_ms'])} ({units.ago(s['last_ack_ms'], now)})",
                         "sync-last-ack")
                    fact("Sent and acknowledged",
                         f"{units.size(s['bytes'])} in {s['batches']} "
                         f"batch{'' if s['batches'] == 1 else 'es'}, {s['synced']} readings",
                         "sync-bytes")
                    fact("Failed attempts", str(s["failures"]), "sync-failures")
                    fact("Batches refused by the cloud",
                         f"{s['rejected_batches']} ({s['rejected_readings']} readings)",
                         "sync-rejected")
                    if s["last_error"]:
                        fact("Last error", s["last_error"], "sync-last-error")
                    p = s["pending"]
                    if p is not None:
                        fact("Batch in flight",
                             f"#{p['batch_seq']} ({p['kind']}, {p['n_readings']} readings, "
                             f"{p['attempts']} attempts)", "sync-pending")
                ui.label("Latest refused uploads").classes("text-h6 q-mt-md")
                if not s["errors"]:
                    ui.label("The cloud has refused no upload of this gateway.").mark(
                        "sync-errors-none")
                for e in s["errors"]:
                    ui.label(f"{units.clock(e['at_ms'])} HTTP {e['status'] or '-'}: "
                             f"{e['reason']}").classes("text-body2").mark("sync-error")

            body()
            ui.timer(panel.refresh_s, body.refresh)
        return None
