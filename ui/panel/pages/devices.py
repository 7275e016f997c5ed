"""Devices: online or not, last reading, message rate, sequence gaps and a sparkline each."""

from __future__ import annotations

from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from edge.store import now_ms
from ui.panel import snapshot, sparkline, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard

COLUMNS: list[dict[str, Any]] = [
    {"name": "device", "label": "Device", "field": "device", "align": "left", "sortable": True},
    {"name": "type", "label": "Type", "field": "type", "align": "left", "sortable": True},
    {"name": "state", "label": "State", "field": "state", "align": "left", "sortable": True},
    {"name": "rate", "label": "Readings/s (1 min)", "field": "rate", "sortable": True},
    {"name": "gaps", "label": "Seq gaps", "field": "gaps", "sortable": True},
    {"name": "spark", "label": "Last 60 readings", "field": "spark", "align": "left"},
    {"name": "last", "label": "Last reading", "field": "last", "align": "left"},
]


def rows(panel: Panel) -> list[dict[str, Any]]:
    """The table's rows from the gateway's current state."""
    now = now_ms()
    out = []
    for d in snapshot.devices(panel.gateway):
        last = d.last
        if last is None:
            values = "no reading stored yet"
        else:
            values = " · ".join(f"{k} {units.number(v)}" for k, v in last.metrics.items())
        spark = ""
        if d.spark_metric is not None:
            pts = [p for p in d.spark if d.spark_metric in p.metrics]
            spark = sparkline.svg([p.metrics[d.spark_metric] for p in pts],
                                  [p.anomalous for p in pts], d.spark_metric)
        out.append({
            "device": d.device, "type": d.type or "?", "state": d.state,
            "last": f"{units.ago(d.last_seen_ms, now)}: {values}" if last else values,
            "rate": round(d.rate_per_s, 2), "gaps": d.seq_gaps,
            "spark": spark, "spark_metric": d.spark_metric or "",
        })
    return out


def register(panel: Panel) -> None:
    """Add the Devices page at /."""

    @ui.page("/", title=f"Devices · {panel.gateway.settings.gateway_id}")
    def devices_page() -> RedirectResponse | None:
        if (redirect := guard(panel, "/")) is not None:
            return redirect
        with frame(panel, "Devices"):
            summary = ui.label().mark("devices-summary")
            table = ui.table(columns=COLUMNS, rows=[], row_key="device").classes(
                "w-full").mark("devices-table")
            table.add_slot("body-cell-device", r"""
                <q-td :props="props">
                  <a :href="'/devices/' + encodeURIComponent(props.value)"
                     class="text-primary">{{ props.value }}</a>
                </q-td>""")
            table.add_slot("body-cell-state", r"""
                <q-td :props="props">
                  <q-badge :color="props.value === 'online' ? 'positive' : 'grey-7'"
                           :label="props.value" />
                </q-td>""")
            table.add_slot("body-cell-last", r"""
                <q-td :props="props" style="white-space: normal; min-width: 16rem">
                  {{ props.value }}
                </q-td>""")
            table.add_slot("body-cell-spark", r"""
                <q-td :props="props">
                  <span v-html="props.value"></span>
                  <div class="text-caption text-grey-7">{{ props.row.spark_metric }}</div>
                </q-td>""")

            def refresh() -> None:
                current = rows(panel)
                online = sum(r["state"] == "online" for r in current)
                summary.set_text(f"{len(current)} devices known, {online} online"
                                 if current else "No device has reported to this gateway yet.")
                table.rows = current

            refresh()
            ui.timer(panel.refresh_s, refresh)
        return None
