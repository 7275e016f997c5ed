"""The drift check: each device's recent features against its model's training reference.

For every sensor profile with a champion in the MLflow registry, each device is compared with
the model its gateway runs for the profile (cloud.rollout's ``gateway_models``, found in MLflow
by the run's ``bundle.version`` tag), or with the champion when that is unknown. The model's
manifest gives the feature spec and the reference statistics written at training time. Each
device's feature windows in the recent window are binned on the reference edges; a device whose
PSI exceeds the threshold on any feature, over at least ``min_windows`` windows, is a drift
event. One episode fires once: a device, profile and model version drift again only after the
cooldown. Each event queues one retraining per profile and day through the job table.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from cloud.background import jobs
from cloud.db.pool import Conn
from cloud.drift.config import DriftConfig
from cloud.drift.stats import BadReferenceError, drift_matrix, psi_scores
from cloud.rollout.rollouts import VERSION_PATTERN
from cloud.training.config import TrainingConfig
from cloud.training.dataset import FeatureWindows, feature_windows, load_profile, profiles_in_window
from shared.bundle import Manifest
from shared.sensors import PROFILES

if TYPE_CHECKING:
    from cloud.training.tracking import Tracker

log = logging.getLogger(__name__)

RETRAIN_KIND = "drift_retrain"
DeviceStatus = Literal["drift", "stable", "too_few_windows", "same_episode"]


class DriftEvent(BaseModel):
    """A recorded drift event and what the retraining it started decided."""

    event_id: int
    device: str
    profile: str
    model_name: str
    model_version: str = Field(description="registry version of the model compared against")
    bundle_version: str
    window_since: datetime
    window_until: datetime
    windows: int = Field(description="recent feature windows of the device compared")
    method: str
    threshold: float
    scores: dict[str, float] = Field(description="drift score (PSI) per feature")
    moved: list[str] = Field(description="features whose score exceeds the threshold")
    retrain_job_id: int | None
    retrain_run_id: str | None = Field(description="MLflow run of the retraining")
    retrain_version: str | None = Field(description="registry version the retraining made")
    gate_outcome: str | None = Field(description="promoted, rejected, or skipped")
    gate_reason: str | None
    retrained_at: datetime | None
    created_at: datetime


class DeviceCheck(BaseModel):
    """One device's comparison in one check."""

    device: str
    model_version: str | None = Field(
        default=None, description="registry version compared with: the one its gateway runs, "
                                  "else the champion")
    windows: int
    max_score: float | None
    moved: list[str]
    status: DeviceStatus


class ProfileCheck(BaseModel):
    """One profile's comparison: which model, and each device's result (or why none)."""

    profile: str
    model_name: str
    model_version: str | None = Field(description="the champion's registry version")
    status: Literal["checked", "no model", "no reference"]
    devices: list[DeviceCheck]


class DriftReport(BaseModel):
    """What one drift check compared and which events it recorded."""

    since: datetime
    until: datetime
    profiles: list[ProfileCheck]
    events: list[DriftEvent]


def champion_manifest(tracker: Tracker, model_name: str) -> tuple[str, Manifest] | None:
    """The champion's registry version and bundle manifest; None if there is no champion."""
    current = tracker.champion(model_name)
    if current is None or current.run_id is None:
        return None
    raw = tracker.download(str(current.run_id), "bundle/manifest.json")
    return str(current.version), Manifest.from_json(raw)


def bundle_manifest(tracker: Tracker, model_name: str,
                    bundle_version: str) -> tuple[str, Manifest] | None:
    """The registry version and manifest of the run that made ``bundle_version``; or None."""
    if not re.fullmatch(VERSION_PATTERN, bundle_version):
        return None  # a gateway's report; never interpolated into a filter unless plain
    runs = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`bundle.version` = '{bundle_version}'",
        max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    versions = [v for v in tracker.client.search_model_versions(f"run_id = '{run_id}'")
                if v.name == model_name]
    if not versions:
        return None
    raw = tracker.download(run_id, "bundle/manifest.json")
    return str(versions[0].version), Manifest.from_json(raw)


def running_versions(conn: Conn, profile: str) -> dict[str, str]:
    """Device -> bundle version its gateway reports running for ``profile``."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT d.device_id, m.version FROM devices d JOIN gateway_models m"
            " ON m.gateway_id = d.gateway_id WHERE m.profile = %s", (profile,)).fetchall()
    return {str(d): str(v) for d, v in rows}


def check_drift(conn: Conn, training: TrainingConfig, config: DriftConfig, *,
                until: datetime | None = None, profiles: list[str] | None = None,
                retrain: bool | None = None, tracker: Tracker | None = None) -> DriftReport:
    """Compare recent features with every champion's reference; record and act on drift.

    ``conn`` must be outside a transaction. ``retrain`` (default: the config's) queues a
    ``drift_retrain`` job per drifting profile.
    """
    end = until if until is not None else datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    start = end - config.window
    wanted = profiles or [p for p in profiles_in_window(conn, start, end) if p in PROFILES]
    if tracker is None and wanted:
        from cloud.training.tracking import Tracker  # noqa: PLC0415 - mlflow loads slowly

        tracker = Tracker(training)
    checks: list[ProfileCheck] = []
    events: list[DriftEvent] = []
    for name in wanted:
        assert tracker is not None  # noqa: S101 - made above whenever a profile is wanted
        check, new = _check_profile(conn, tracker, training, config, name=name, start=start,
                                    end=end,
                                    retrain=config.retrain if retrain is None else retrain)
        checks.append(check)
        events.extend(new)
    return DriftReport(since=start, until=end, profiles=checks, events=events)


def _check_profile(conn: Conn, tracker: Tracker, training: TrainingConfig, config: DriftConfig,
                   *, name: str, start: datetime, end: datetime,
                   retrain: bool) -> tuple[ProfileCheck, list[DriftEvent]]:
    model_name = training.model_name(name)
    champion = champion_manifest(tracker, model_name)
    if champion is None:
        return ProfileCheck(profile=name, model_name=model_name, model_version=None,
                            status="no model", devices=[]), []
    if not isinstance(champion[1].extra.get("reference", {}).get("drift"), dict):
        log.info("%s v%s has no drift reference (trained before drift checks): skipped",
                 model_name, champion[0])
        return ProfileCheck(profile=name, model_name=model_name, model_version=champion[0],
                            status="no reference", devices=[]), []
    running = running_versions(conn, name)
    models: dict[str, tuple[str, Manifest] | None] = {}
    for bundle_version in set(running.values()):
        models[bundle_version] = bundle_manifest(tracker, model_name, bundle_version)
        if models[bundle_version] is None:
            log.info("%s: running bundle %s not in MLflow; its devices use the champion",
                     model_name, bundle_version)
    data = load_profile(conn, name, start, end)
    # Per registry version: versions may differ in their feature spec.
    windows: dict[str, FeatureWindows] = {}
    devices: list[DeviceCheck] = []
    events: list[DriftEvent] = []
    for device in sorted({s.device for s in data.series}):
        version, manifest = models.get(running.get(device, "")) or champion
        pooled = manifest.extra.get("reference", {}).get("drift")
        per_device = manifest.extra.get("training", {}).get("drift_devices", {})
        if not isinstance(pooled, dict):
            version, manifest = champion  # the running model predates drift references
            pooled = manifest.extra["reference"]["drift"]
            per_device = manifest.extra.get("training", {}).get("drift_devices", {})
        if version not in windows:
            windows[version] = feature_windows(data, manifest.spec)
        w = windows[version]
        x, names = _drift_columns(w, device, manifest, pooled)
        if len(x) < config.min_windows:
            devices.append(DeviceCheck(device=device, model_version=version, windows=len(x),
                                       max_score=None, moved=[], status="too_few_windows"))
            continue
        try:
            scores = psi_scores(per_device.get(device, pooled), names, x)
        except BadReferenceError as exc:
            log.warning("%s v%s: unusable drift reference, %s skipped: %s", model_name, version,
                        device, exc)
            continue
        moved = [f for f, s in scores.items() if s > config.psi_threshold]
        status: DeviceStatus = "drift" if moved else "stable"
        if moved:
            event = _record(conn, config, device=device, profile=name, model_name=model_name,
                            version=version, manifest=manifest, start=start, end=end,
                            windows=len(x), scores=scores, moved=moved, retrain=retrain)
            if event is None:
                status = "same_episode"
            else:
                events.append(event)
                log.warning("drift: %s (%s) moved on %s against %s v%s", device, name,
                            ", ".join(moved), model_name, version)
        devices.append(DeviceCheck(device=device, model_version=version, windows=len(x),
                                   max_score=max(scores.values()), moved=moved, status=status))
    return ProfileCheck(profile=name, model_name=model_name, model_version=champion[0],
                        status="checked", devices=devices), events


def _drift_columns(w: FeatureWindows, device: str, manifest: Manifest, pooled: dict[str, Any],
                   ) -> tuple[npt.NDArray[np.float64], list[str]]:
    """A device's rows as the reference has them: raw values and features, or features alone."""
    mine = w.device == device
    if not set(manifest.spec.metrics) <= set(pooled.get("features", {})):
        # A reference from before raw values were kept: compare the features alone.
        return w.x[mine].astype(np.float64), manifest.spec.names
    return drift_matrix(w.raw[mine], w.x[mine], manifest.spec.metrics, manifest.spec.names)


def _record(conn: Conn, config: DriftConfig, *, device: str, profile: str, model_name: str,
            version: str, manifest: Manifest, start: datetime, end: datetime, windows: int,
            scores: dict[str, float], moved: list[str], retrain: bool) -> DriftEvent | None:
    """Insert the event (None when it continues a recorded episode) and queue a retraining."""
    with conn.transaction():
        # One episode per device, profile and model: serialise concurrent checks on it.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (f"smaint-drift:{device}:{profile}:{version}",))
        seen = conn.execute(
            "SELECT 1 FROM drift_events WHERE device_id = %s AND profile = %s"
            " AND model_version = %s AND created_at > now() - %s",
            (device, profile, version, config.cooldown)).fetchone()
        if seen is not None:
            return None
        job_id = _queue_retrain(conn, config, profile, end) if retrain else None
        row = conn.execute(
            "INSERT INTO drift_events (device_id, profile, model_name, model_version,"
            " bundle_version, window_since, window_until, windows, threshold, scores, moved,"
            " retrain_job_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING event_id",
            (device, profile, model_name, version, manifest.version, start, end, windows,
             config.psi_threshold, Jsonb(scores), moved, job_id)).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
        if job_id is not None:
            # The day's retraining may be done already: the event shares its outcome.
            conn.execute(
                "UPDATE drift_events e SET retrain_run_id = d.retrain_run_id,"
                " retrain_version = d.retrain_version, gate_outcome = d.gate_outcome,"
                " gate_reason = d.gate_reason, retrained_at = d.retrained_at"
                " FROM (SELECT * FROM drift_events WHERE retrain_job_id = %s"
                "       AND retrained_at IS NOT NULL LIMIT 1) d WHERE e.event_id = %s",
                (job_id, row[0]))
        return get_event(conn, int(row[0]))


def _queue_retrain(conn: Conn, config: DriftConfig, profile: str, end: datetime) -> int:
    """The retraining job of ``profile`` for the check's day, queued now or before."""
    dedupe = f"{RETRAIN_KIND}:{profile}:{end.date().isoformat()}"
    payload: dict[str, Any] = {"profile": profile,
                               "since": (end - config.retrain_window).isoformat(),
                               "until": end.isoformat()}
    job_id = jobs.enqueue(conn, RETRAIN_KIND, payload, dedupe_key=dedupe)
    if job_id is None:
        row = conn.execute("SELECT job_id FROM jobs WHERE dedupe_key = %s", (dedupe,)).fetchone()
        assert row is not None  # noqa: S101 - the conflict means the row exists
        job_id = int(row[0])
    return job_id


_COLUMNS = ("event_id, device_id, profile, model_name, model_version, bundle_version,"
            " window_since, window_until, windows, method, threshold, scores, moved,"
            " retrain_job_id, retrain_run_id, retrain_version, gate_outcome, gate_reason,"
            " retrained_at, created_at")


def _event(r: tuple[Any, ...]) -> DriftEvent:
    return DriftEvent(
        event_id=r[0], device=r[1], profile=r[2], model_name=r[3], model_version=r[4],
        bundle_version=r[5], window_since=r[6], window_until=r[7], windows=r[8], method=r[9],
        threshold=r[10], scores=r[11], moved=list(r[12]), retrain_job_id=r[13],
        retrain_run_id=r[14], retrain_version=r[15], gate_outcome=r[16], gate_reason=r[17],
        retrained_at=r[18], created_at=r[19])


def get_event(conn: Conn, event_id: int) -> DriftEvent:
    """One drift event; LookupError if there is none with that id."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM drift_events WHERE event_id = %s",
                       (event_id,)).fetchone()
    if row is None:
        raise LookupError(f"no drift event {event_id}")
    return _event(row)


def list_events(conn: Conn, *, device: str | None = None, profile: str | None = None,
                since: datetime | None = None, limit: int = 100) -> list[DriftEvent]:
    """Drift events newest first, optionally of one device, profile, or from a time on."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM drift_events"
        " WHERE (%(d)s::text IS NULL OR device_id = %(d)s)"
        " AND (%(p)s::text IS NULL OR profile = %(p)s)"
        " AND (%(s)s::timestamptz IS NULL OR created_at >= %(s)s)"
        " ORDER BY event_id DESC LIMIT %(n)s",
        {"d": device, "p": profile, "s": since, "n": min(limit, 1000)}).fetchall()
    return [_event(r) for r in rows]


def record_retraining(conn: Conn, job_id: int, *, run_id: str | None, version: str | None,
                      outcome: str, reason: str) -> int:
    """Write a retraining's outcome on every event that queued it; the events updated."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE drift_events SET retrain_run_id = %s, retrain_version = %s,"
            " gate_outcome = %s, gate_reason = %s, retrained_at = now()"
            " WHERE retrain_job_id = %s", (run_id, version, outcome, reason, job_id))
    return cur.rowcount


