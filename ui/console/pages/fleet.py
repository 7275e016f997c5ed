"""Fleet: sites and their gateways (online, last sync, backlog, model versions, open alerts)
and every device, refreshed on a timer from the API's registry, alert and model routes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console import timefmt
from ui.console.api import UserApi
from ui.console.context import Console
from ui.console.frame import call, expose_markers, fingerprint, frame, guard, session_of

NO_SITE = "Gateways without a site"
# Unresolved alerts counted per gateway and device (the API pages through them).
MAX_COUNTED_ALERTS = 5000

_GATEWAY_COLUMNS: list[dict[str, Any]] = [
    {"name": "gateway", "label": "Gateway", "field": "gateway", "align": "left"},
    {"name": "online", "label": "Online", "field": "online", "align": "left"},
    {"name": "last_sync", "label": "Last sync", "field": "last_sync", "align": "left"},
    {"name": "backlog", "label": "Backlog (readings)", "field": "backlog", "align": "right"},
    {"name": "software", "label": "Software", "field": "software", "align": "left"},
    {"name": "models", "label": "Models running", "field": "models", "align": "left"},
    {"name": "devices", "label": "Devices", "field": "devices", "align": "right"},
    {"name": "alerts", "label": "Open alerts", "field": "alerts", "align": "right"},
]
_DEVICE_COLUMNS: list[dict[str, Any]] = [
    {"name": "device", "label": "Device", "field": "device", "align": "left", "sortable": True},
    {"name": "type", "label": "Type", "field": "type", "align": "left", "sortable": True},
    {"name": "gateway", "label": "Gateway", "field": "gateway", "align": "left",
     "sortable": True},
    {"name": "state", "label": "State", "field": "state", "align": "left"},
    {"name": "last_seen", "label": "Last reading", "field": "last_seen", "align": "left"},
    {"name": "readings", "label": "Readings stored", "field": "readings", "align": "right"},
    {"name": "alerts", "label": "Open alerts", "field": "alerts", "align": "right",
     "sortable": True},
]


@dataclass
class FleetData:
    """One fetch of everything the page shows."""

    gateways: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    running: list[dict[str, Any]]
    unresolved: list[dict[str, Any]]
    more_alerts: bool


async def fetch(api: UserApi) -> FleetData:
    """The registry, the models each gateway runs and the unresolved alerts."""
    open_, more_open = await api.alerts(state="open", limit=MAX_COUNTED_ALERTS)
    acked, more_acked = await api.alerts(state="acknowledged", limit=MAX_COUNTED_ALERTS)
    return FleetData(await api.gateways(), await api.devices(), await api.running_models(),
                     open_ + acked, more_open or more_acked)


def gateway_rows(data: FleetData, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Table rows of the gateways, by site (``NO_SITE`` for those without)."""
    alerts = Counter(a["gateway"] for a in data.unresolved)
    devices = Counter(d["gateway"] for d in data.devices)
    models: dict[str, list[str]] = {}
    for m in data.running:
        models.setdefault(m["gateway"], []).append(f"{m['profile']} {m['version']}")
    sites: dict[str, list[dict[str, Any]]] = {}
    for gw in data.gateways:
        reported = gw["reported_state"] or {}
        name = gw["gateway"]
        online = "revoked" if gw["revoked"] else ("online" if gw["online"] else "offline")
        sites.setdefault(gw["site"] or NO_SITE, []).append({
            "gateway": name, "online": online,
            "last_sync": timefmt.when(gw["last_seen_at"], now),
            "backlog": f"{reported['backlog']:,}" if "backlog" in reported else "not reported",
            "software": reported.get("software") or "not reported",
            "models": ", ".join(models.get(name, [])) or "none reported",
            "devices": devices[name], "alerts": alerts[name],
        })
    return dict(sorted(sites.items(), key=lambda kv: (kv[0] == NO_SITE, kv[0])))


def device_rows(data: FleetData, now: datetime) -> list[dict[str, Any]]:
    """Table rows of the devices."""
    alerts = Counter(a["device"] for a in data.unresolved)
    return [{"device": d["device"], "type": d["type"], "gateway": d["gateway"],
             "state": d["state"], "last_seen": timefmt.when(d["last_seen_at"], now),
             "readings": f"{d['readings']:,}", "alerts": alerts[d["device"]]}
            for d in data.devices]


def summary(data: FleetData) -> str:
    """One line of totals."""
    sites = {g["site"] for g in data.gateways if g["site"]}
    online = sum(1 for g in data.gateways if g["online"] and not g["revoked"])
    acked = sum(1 for a in data.unresolved if a["state"] == "acknowledged")
    more = "+" if data.more_alerts else ""
    return (f"{len(sites)} sites · {len(data.gateways)} gateways ({online} online) · "
            f"{len(data.devices)} devices · {len(data.unresolved)}{more} unresolved alerts "
            f"({acked} acknowledged)")


def register(console: Console) -> None:
    """Add the fleet page at /."""

    @ui.page("/", title="Fleet · Smart Maintenance console")
    async def fleet_page() -> RedirectResponse | None:
        if (redirect := guard(console, "/")) is not None:
            return redirect
        session = session_of(console)
        with frame(console, session, "Fleet"):
            totals = ui.label().classes("text-subtitle1").mark("fleet-summary")
            gateways = ui.column().classes("w-full gap-2").mark("fleet-gateways")
            ui.label("Devices").classes("text-h6")
            devices = ui.table(columns=_DEVICE_COLUMNS, rows=[], row_key="device",
                               pagination={"rowsPerPage": 25, "sortBy": "device"}).classes(
                "w-full").props("dense flat bordered").mark("fleet-devices")
            devices.add_slot("body-cell-device", """
                <q-td :props="props">
                  <a :href="'/explorer?device=' + encodeURIComponent(props.value)"
                     class="text-primary">{{ props.value }}</a>
                </q-td>""")
            ui.label("A device's name opens it in the device explorer. Gateways are online "
                     "when they synced within the last 5 minutes.").classes(
                "text-caption text-grey-7")
        shown: list[str] = []
        client = ui.context.client

        async def refresh() -> None:
            data = await call(console, fetch)
            if data is None:
                return
            now = datetime.now(UTC)
            key = fingerprint(data.gateways, data.devices, data.running, data.unresolved)
            totals.set_text(summary(data))
            if shown and shown[0] == key:
                return
            shown[:] = [key]
            gateways.clear()
            with gateways:
                if not data.gateways:
                    ui.label("No gateway is registered yet: `smaint cloud gateway add ID` "
                             "registers one.").mark("no-gateways")
                for site, rows in gateway_rows(data, now).items():
                    ui.label(site if site == NO_SITE else f"Site {site}").classes("text-h6")
                    ui.table(columns=_GATEWAY_COLUMNS, rows=rows, row_key="gateway").classes(
                        "w-full").props("dense flat bordered hide-pagination").mark(
                        "site-none" if site == NO_SITE else f"site-{site}")
            devices.rows = device_rows(data, now)
            devices.update()
            expose_markers(client)

        await refresh()
        ui.timer(console.config.refresh_s, refresh)
        return None
