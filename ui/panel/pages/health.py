"""Health: ingest rate, dead letters with their latest reasons, disk budget, degraded mode."""

from __future__ import annotations

from nicegui import app, ui
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from edge.site_ca import CA_CERT
from ui.panel import snapshot, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard
from ui.panel.pages.sync import fact


def register(panel: Panel) -> None:
    """Add the Health page at /health, and the site CA certificate at /site-ca.crt."""

    @app.get("/site-ca.crt")
    def site_ca() -> Response:
        # Public, like any CA certificate: devices and browsers verify the broker with it.
        path = panel.gateway.settings.ca_dir / CA_CERT
        if not path.is_file():
            return PlainTextResponse("no site CA yet: it is made when the gateway starts "
                                     "(or by `smaint provision broker`)", status_code=404)
        return Response(path.read_bytes(), media_type="application/x-pem-file", headers={
            "Content-Disposition": f'attachment; filename="{CA_CERT}"'})

    @ui.page("/health", title=f"Health · {panel.gateway.settings.gateway_id}")
    def health_page() -> RedirectResponse | None:
        if (redirect := guard(panel, "/health")) is not None:
            return redirect
        with frame(panel, "Health"):

            @ui.refreshable
            def body() -> None:
                h = snapshot.health(panel.gateway)
                with ui.row().classes("items-center"):
                    if h["degraded"]:
                        ui.badge("degraded", color="negative").mark("health-mode")
                        ui.label(f"since {units.clock(h['degraded_since_ms'])}: "
                                 f"{h['degraded_reason']}; readings stay with the broker "
                                 "until the database takes writes again")
                    else:
                        ui.badge("normal", color="positive").mark("health-mode")
                        ui.label(f"the database takes writes ({h['degraded_episodes']} degraded "
                                 "episodes since start)")
                with ui.grid(columns="14rem auto").classes("gap-y-1"):
                    fact("Broker session", "connected" if h["mqtt_connected"] else
                         "disconnected", "health-mqtt")
                    fact("Ingest rate", f"{h['ingest_rate']:.1f} readings/s (last minute)",
                         "health-rate")
                    fact("Waiting in memory", f"{h['queue_depth']} messages, "
                         f"{h['unacked']} unacknowledged", "health-queue")
                    fact("Messages received / readings stored",
                         f"{h['received']} / {h['stored']} ({h['duplicates']} redeliveries "
                         "dropped; status messages count as received)", "health-counts")
                    fact("Sequence gaps", f"{h['seq_gaps']} readings never arrived",
                         "health-gaps")
                    budget = h["db_budget_bytes"]
                    fact("Disk budget",
                         f"{units.size(h['db_used_bytes'])} used of "
                         f"{units.size(budget)} ({h['budget_share']:.0%})" if budget else
                         f"{units.size(h['db_used_bytes'])} used; no budget set "
                         "(SMAINT_GATEWAY_STORAGE__MAX_MB)", "health-disk")
                    r = h["retention"]
                    fact("Retention", f"{r.get('synced_dropped', 0)} synced readings dropped, "
                         f"{r.get('aggregated', 0)} unsynced folded into per-minute rows",
                         "health-retention")
                    fact("Uptime", units.duration(h["uptime_s"]), "health-uptime")
                    ui.label("Site CA")
                    ui.link("site-ca.crt (devices verify the broker with it)",
                            "/site-ca.crt").mark("health-site-ca")
                ui.label(f"Dead letters: {h['dead_letters']}").classes("text-h6 q-mt-md").mark(
                    "health-dead-count")
                if not h["latest_dead_letters"]:
                    ui.label("No message has been refused.").mark("dead-none")
                for d in h["latest_dead_letters"]:
                    where = f" (field {d['field']})" if d["field"] else ""
                    ui.label(f"{units.clock(d['received_ms'])} {d['topic']}{where}: "
                             f"{d['reason']}").classes("text-body2").mark("dead-letter")

            body()
            ui.timer(panel.refresh_s, body.refresh)
        return None
