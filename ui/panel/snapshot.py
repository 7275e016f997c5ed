"""What each panel page shows, read from the running gateway's own objects and its store.

Plain data, no NiceGUI: the pages render it, the tests check it. Nothing here writes.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.alert_decisions import KeptDecision
from edge.model_registry import BUNDLE_SUFFIX
from edge.retention import used_bytes
from edge.service import Gateway
from edge.store import ALERT_COLUMNS, alert_from_row, now_ms
from shared.schemas import Alert, RolloutReport
from shared.sensors import PROFILES
from ui.panel import series

SPARK_POINTS = 60


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One line of the Devices page."""

    device: str
    type: str | None
    state: str
    last_seen_ms: int | None
    rate_per_s: float
    seq_gaps: int
    last: series.Point | None
    spark_metric: str | None
    spark: list[series.Point]


def devices(gw: Gateway) -> list[DeviceRow]:
    """Every known device with its state, rate, gaps and latest readings."""
    out = []
    for d in gw.health.report(gw.store):
        points = series.latest(gw.store.conn, d["device"], d["boot"], SPARK_POINTS)
        prof = PROFILES.get(d["type"] or "")
        metric = prof.metric_names[0] if prof else (
            next(iter(points[-1].metrics)) if points else None)
        out.append(DeviceRow(d["device"], d["type"], d["state"] or "unknown", d["last_seen_ms"],
                             float(d["rate_per_s"]), int(d["seq_gaps"]),
                             points[-1] if points else None, metric, points))
    return out


def device(gw: Gateway, device_id: str) -> dict[str, Any] | None:
    """The store's row of one device (state, type, boot, firmware), or None if unknown."""
    for d in gw.store.devices():
        if d["device"] == device_id:
            return d
    return None


def device_alerts(gw: Gateway, device_id: str, since_ms: int) -> list[Alert]:
    """The device's alerts open at any time since ``since_ms``."""
    rows = gw.store.conn.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE device = ? AND "
        "(resolved_ms IS NULL OR resolved_ms >= ?) ORDER BY opened_ms", (device_id, since_ms))
    return [alert_from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert with the comments operators left on it here and the cloud's decisions."""

    alert: Alert
    comments: list[tuple[int, str, str]]
    decisions: list[KeptDecision] = field(default_factory=list)


_ORDER = ("ORDER BY CASE state WHEN 'open' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END, "
          "CASE severity WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, opened_ms DESC")


def alerts(gw: Gateway, limit: int = 200) -> list[AlertRow]:
    """Open alerts first, then acknowledged, then resolved; by severity, newest first."""
    rows = gw.store.conn.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts {_ORDER} LIMIT ?", (limit,))
    found = [alert_from_row(r) for r in rows]
    ids = [a.alert_id for a in found]
    comments = gw.store.alert_comments(ids)
    decisions = gw.decisions.kept(ids)
    return [AlertRow(a, comments.get(a.alert_id, []), decisions.get(a.alert_id, []))
            for a in found]


def sync(gw: Gateway) -> dict[str, Any]:
    """Connection, backlog (size and age), last upload, bytes and errors of the cloud sync."""
    conn = gw.store.conn
    c = gw.store.counters
    up = gw.uploader
    row = conn.execute("SELECT received_ms FROM readings WHERE batch_seq IS NULL "
                       "ORDER BY batch_seq, rowid LIMIT 1").fetchone()
    (pending_oldest,) = conn.execute(
        "SELECT min(received_ms) FROM readings WHERE batch_seq IN "
        "(SELECT batch_seq FROM sync_batches WHERE state = 'pending')").fetchone()
    oldest = min([v for v in (row[0] if row else None, pending_oldest) if v is not None],
                 default=None)
    pending = conn.execute("SELECT batch_seq, kind, n_readings, attempts, last_error "
                           "FROM sync_batches WHERE state = 'pending' ORDER BY batch_seq "
                           "LIMIT 1").fetchone()
    errors = conn.execute("SELECT at_ms, status, reason FROM sync_dead_letters "
                          "ORDER BY id DESC LIMIT 5").fetchall()
    if not up.enabled:
        state = "disabled"
    elif up.last_error is not None:
        state = "failing"
    elif up.last_ack_ms is not None:
        state = "connected"
    else:
        state = "waiting"
    return {
        "state": state, "cloud_url": gw.settings.sync.cloud_url,
        "last_ack_ms": up.last_ack_ms, "last_error": up.last_error,
        "backlog": gw.outbox.backlog(), "oldest_unsent_ms": oldest,
        "synced": c["synced"], "batches": c["sync_batches"], "bytes": c["sync_bytes"],
        "failures": c["sync_failures"], "rejected_batches": c["sync_rejected_batches"],
        "rejected_readings": c["sync_rejected_readings"],
        "pending": None if pending is None else dict(zip(
            ("batch_seq", "kind", "n_readings", "attempts", "last_error"), pending,
            strict=True)),
        "errors": [{"at_ms": a, "status": s, "reason": r} for a, s, r in errors],
    }


@dataclass(frozen=True, slots=True)
class ShadowRun:
    """How a candidate in shadow judged the readings it scored, next to the running scorer
    (from the rollout's per-reading record, ``.ota/shadow/<profile>-<version>.csv``)."""

    readings: int
    candidate_flagged: int
    current_flagged: int
    agreed: int


def shadow_run(path: Path) -> ShadowRun | None:
    """Counts over the shadow record at ``path``; None if there is none (yet)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return None
    if not rows:
        return None
    cand = [r.get("shadow_anomalous") == "1" for r in rows]
    cur = [r.get("current_anomalous") == "1" for r in rows]
    return ShadowRun(len(rows), sum(cand), sum(cur),
                     sum(a == b for a, b in zip(cand, cur, strict=True)))


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One sensor profile's scoring on this gateway."""

    profile: str
    version: str | None
    since_ms: int | None
    source: str
    threshold: float | None
    warmup: int | None
    created_ms: int | None
    desired: str | None
    rollout: RolloutReport | None
    shadow: ShadowRun | None
    kept: list[str]
    refused: str | None


def models(gw: Gateway) -> list[ModelRow]:
    """Per profile: the model running, since when, from where, and its rollout."""
    reports = {r.profile: r for r in gw.rollout.reports()}
    desired_state = gw.outbox.desired()
    desired = desired_state.models if desired_state is not None else {}
    profiles = sorted(set(PROFILES) | set(gw.models.models) | set(reports) | set(desired))
    out = []
    for profile in profiles:
        model = gw.models.get(profile)
        rep = reports.get(profile)
        since_ms: int | None = None
        if model is None:
            source = "statistical detector (no model bundle)"
        elif rep is not None and rep.version == model.version and rep.step == "running":
            source = f"over the air: {rep.reason}" if rep.reason else "over the air"
            since_ms = rep.at_ms
        else:
            source = f"bundle file {gw.models.models_dir / (profile + BUNDLE_SUFFIX)}"
        if model is not None and since_ms is None:
            try:
                since_ms = int(os.stat(gw.models.models_dir / f"{profile}{BUNDLE_SUFFIX}"
                                       ).st_mtime * 1000)
            except OSError:
                since_ms = None
        out.append(ModelRow(
            profile, model.version if model else None, since_ms, source,
            model.threshold if model else None,
            model.manifest.spec.warmup if model else None,
            model.manifest.created_ms if model else None, desired.get(profile), rep,
            shadow_run(gw.rollout.dir / "shadow" / f"{profile}-{rep.version}.csv")
            if rep is not None and rep.step == "shadow" else None,
            rollback_versions(gw.rollout.kept_versions(profile),
                              model.version if model else None, rep),
            gw.models.refused.get(profile)))
    return out


def rollback_versions(kept: list[str], running: str | None,
                      rep: RolloutReport | None) -> list[str]:
    """The kept versions a rollback could go back to: not the one running, nor the one a
    rollout is trying or turned down (all are kept on disk too)."""
    not_back = rep.version if rep is not None and rep.step != "running" else None
    return [v for v in kept if v not in {running, not_back}]


def health(gw: Gateway) -> dict[str, Any]:
    """Ingest rate, dead letters and their latest reasons, disk budget, degraded mode."""
    conn = gw.store.conn
    c = gw.store.counters
    latest = conn.execute("SELECT received_ms, topic, reason, field FROM dead_letters "
                          "ORDER BY id DESC LIMIT 10").fetchall()
    budget = gw.retention.max_bytes
    used = used_bytes(gw.store)
    storage = gw.storage.as_dict()
    return {
        "mqtt_connected": gw.ingestor.connected,
        "ingest_rate": gw.health.ingest_rate(),
        "queue_depth": gw.ingestor.queue_depth(),
        "unacked": gw.ingestor.unacked,
        "received": c["received"], "stored": c["stored"], "duplicates": c["duplicates"],
        "dead_letters": c["dead_letters"], "seq_gaps": gw.health.seq_gaps(),
        "latest_dead_letters": [
            {"received_ms": at, "topic": topic, "reason": reason, "field": fld}
            for at, topic, reason, fld in latest],
        "db_used_bytes": used, "db_budget_bytes": budget,
        "budget_share": used / budget if budget else None,
        "retention": {k.removeprefix("retention_"): v for k, v in c.items()
                      if k.startswith("retention_")},
        "degraded": storage["status"] == "degraded", "degraded_reason": storage["reason"],
        "degraded_since_ms": storage["since_ms"], "degraded_episodes": storage["episodes"],
        "uptime_s": round(time.monotonic() - gw.started, 1), "now_ms": now_ms(),
    }
