"""Retrain from the cloud database: one tracked, registered and gated model per sensor profile.

For each profile: read the window's readings (cloud.training.dataset), cut it in time (the
last ``holdout_fraction`` is held out), fit on the earlier windows minus operator-confirmed
failures, measure the ONNX model on the held-out windows and the labelled events, register it
in MLflow, measure the current champion on the very same data, and let the gate
(cloud.training.champion) move the ``champion`` alias or not. The decision goes to MLflow and,
with the actor, to the audit log.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field

from cloud.artifacts import ArtifactStore
from cloud.db.pool import Conn
from cloud.drift.stats import device_references, drift_matrix
from cloud.exceptions import CloudError
from cloud.operations import audit
from cloud.training.champion import GateDecision, decide
from cloud.training.config import TrainingConfig
from cloud.training.dataset import (
    LabelledEvent,
    ProfileData,
    default_window,
    feature_windows,
    load_events,
    load_profile,
    profiles_in_window,
)
from cloud.training.evaluate import Evaluation, Scorer, evaluate
from cloud.training.tracking import BUNDLE_DIR, Tracker, TrackingError, mlflow_errors
from cloud.training.train import fit_model, make_manifest
from shared.bundle import BundleError, public_key_text, read_bundle, write_bundle
from shared.features import FeatureSpec
from shared.sensors import PROFILES
from shared.sensors import profile as get_profile

log = logging.getLogger(__name__)

PUBLIC_KEY_FILE = "trusted_keys.txt"  # the name cloud.training.initial writes too
Progress = Callable[[str], None]


class TrainingRequestError(CloudError):
    """A training request names an unknown profile or an empty window (HTTP 422)."""

    http_status = 422


class ProfileResult(BaseModel):
    """One profile's run: its data, the registered version and the gate's decision."""

    profile: str
    model_name: str
    run_id: str
    version: str = Field(description="registry version of the new model")
    bundle_version: str = Field(description="version in the signed bundle's manifest")
    bundle_sha256: str = Field(description="of the signed bundle file")
    bundle_path: str | None = Field(description="where the bundle was written, if anywhere")
    artifact_key: str | None = Field(description="the bundle's key in the artifact store")
    cutoff: datetime = Field(description="readings from here on were held out")
    devices: int
    rows_train: int
    rows_heldout: int
    windows_train: int = Field(description="feature windows the forest was fitted on")
    windows_failure_excluded: int = Field(description="kept out of training: confirmed failures")
    labels: dict[str, int] = Field(description="labelled events per decision used")
    seconds: float
    decision: GateDecision


class SkippedProfile(BaseModel):
    """A profile that was not trained, and why."""

    profile: str
    reason: str


class TrainingResult(BaseModel):
    """What one training request did, profile by profile."""

    since: datetime
    until: datetime
    tracking_uri: str
    experiment: str
    trained: list[ProfileResult]
    skipped: list[SkippedProfile]


def train_models(
    conn: Conn, config: TrainingConfig, key: Ed25519PrivateKey, *,
    since: datetime | None = None, until: datetime | None = None,
    profiles: list[str] | None = None, out_dir: Path | None = None,
    artifacts: ArtifactStore | None = None, actor: str = "system",
    progress: Progress | None = None,
) -> TrainingResult:
    """Train, track, register and gate one model per profile; audits every gate decision.

    ``conn`` must be outside a transaction; each step commits its own. ``out_dir`` receives
    every signed bundle as ``<bundle version>.smb`` and the champion as ``<profile>.smb``;
    ``artifacts`` every bundle under ``models/<profile>/<bundle version>/bundle.smb``.
    """
    try:
        start, end = default_window(until, since, config.window)
    except ValueError as exc:
        raise TrainingRequestError(str(exc)) from exc
    for name in profiles or []:
        if name not in PROFILES:
            raise TrainingRequestError(f"unknown sensor profile {name!r}; known: "
                                       f"{sorted(PROFILES)}")
    wanted = profiles or [p for p in profiles_in_window(conn, start, end) if p in PROFILES]
    events = load_events(conn, start, end, _margin(config))
    # MLflow costs seconds to import and open: only once a profile has data to train on.
    tracker = functools.cache(lambda: Tracker(config))
    trained: list[ProfileResult] = []
    skipped: list[SkippedProfile] = []
    for name in wanted:
        try:
            outcome = _train_profile(conn, tracker, config, key, name=name, since=start,
                                     until=end, all_events=events, out_dir=out_dir,
                                     artifacts=artifacts, actor=actor, progress=progress)
        except mlflow_errors() as exc:
            raise TrackingError(f"MLflow refused the {name} run at "
                                f"{config.resolved_tracking_uri()}: {exc}") from exc
        if isinstance(outcome, SkippedProfile):
            skipped.append(outcome)
            line = f"{name}: skipped, {outcome.reason}"
        else:
            trained.append(outcome)
            line = _summary(outcome)
        log.info("%s", line)
        if progress is not None:
            progress(line)
    if out_dir is not None and trained:
        _write_atomically(out_dir / PUBLIC_KEY_FILE,
                          (public_key_text(key.public_key()) + "\n").encode())
    return TrainingResult(since=start, until=end, tracking_uri=config.resolved_tracking_uri(),
                          experiment=config.experiment, trained=trained, skipped=skipped)


def _margin(config: TrainingConfig) -> timedelta:
    return timedelta(seconds=config.event_margin_s)


def _summary(r: ProfileResult) -> str:
    labels = (f"labels: {r.labels['confirmed_failure']} confirmed failures, "
              f"{r.labels['false_positive']} false positives")
    return (f"{r.profile}: {r.rows_train + r.rows_heldout:,} rows ({r.rows_train:,} train / "
            f"{r.rows_heldout:,} held-out) from {r.devices} device(s), {labels}; "
            f"{r.model_name} v{r.version} {r.decision.outcome} in {r.seconds:.1f} s "
            f"({r.decision.reason})")


def _train_profile(
    conn: Conn, lazy_tracker: Callable[[], Tracker], config: TrainingConfig,
    key: Ed25519PrivateKey, *, name: str,
    since: datetime, until: datetime, all_events: list[LabelledEvent], out_dir: Path | None,
    artifacts: ArtifactStore | None, actor: str, progress: Progress | None,
) -> ProfileResult | SkippedProfile:
    t0 = time.perf_counter()
    data = load_profile(conn, name, since, until)
    if not data.rows:
        return SkippedProfile(profile=name, reason="no readings in the window")
    devices = {s.device for s in data.series}
    if progress is not None:
        progress(f"{name}: {data.rows:,} readings of {len(devices)} device(s) loaded in "
                 f"{time.perf_counter() - t0:.1f} s; training")
    events = [e for e in all_events if e.device in devices]
    first, last = data.span_ms()
    cutoff_ms = first + int((1.0 - config.holdout_fraction) * (last - first)) + 1
    spec = FeatureSpec.for_profile(get_profile(name), warmup=config.feature_warmup)
    windows = feature_windows(data, spec)
    before = windows.ts_ms < cutoff_ms
    failure = windows.in_events(events, "confirmed_failure")
    # Confirmed failures are not normal operation: fitted or calibrated on, they would raise
    # the threshold over exactly what the model must flag. False positives stay in: the
    # operator said they are normal, so the calibration should learn them as such.
    train = windows.select(before & ~failure)
    n_heldout = int((~before).sum())
    if len(train) < config.min_train_windows or n_heldout < config.min_heldout_windows:
        return SkippedProfile(profile=name, reason=(
            f"{len(train)} training and {n_heldout} held-out feature windows from "
            f"{data.rows} readings; need {config.min_train_windows} and "
            f"{config.min_heldout_windows}: widen the window"))
    labels = {label: sum(1 for e in events if e.label == label)
              for label in ("confirmed_failure", "false_positive")}
    model_name = config.model_name(name)
    cutoff = datetime.fromtimestamp(cutoff_ms / 1000, tz=since.tzinfo)
    rows_train = data.rows_before(cutoff_ms)
    tracker = lazy_tracker()
    with _profile_lock(conn, model_name), tracker.run(
            f"{name}-{int(time.time())}", {"profile": name, "actor": actor}) as run_id:
        tracker.log_params({
            "profile": name, "algorithm": "IsolationForest", "n_estimators": config.n_estimators,
            "max_samples": config.max_samples, "quantile": config.quantile,
            "seed": config.seed, "feature_warmup": config.feature_warmup,
            "features": ",".join(spec.names), "holdout_fraction": config.holdout_fraction,
            "window_since": since.isoformat(), "window_until": until.isoformat(),
            "heldout_from": cutoff.isoformat(), "event_margin_s": config.event_margin_s,
        })
        tracker.log_metrics({
            "rows_train": rows_train, "rows_heldout": data.rows - rows_train,
            "devices": len(devices), "windows_train": len(train),
            "windows_failure_excluded": int((before & failure).sum()),
            "labels_confirmed_failure": labels["confirmed_failure"],
            "labels_false_positive": labels["false_positive"],
        })
        drift_x, drift_names = drift_matrix(train.raw, train.x, spec.metrics, spec.names)
        fitted = fit_model(spec, train.x, n_estimators=config.n_estimators,
                           max_samples=config.max_samples, quantile=config.quantile,
                           seed=config.seed, raw=train.raw)
        manifest = make_manifest(fitted, f"{name}-{int(time.time() * 1000)}", {
            "data": f"cloud readings {since.isoformat()} .. {cutoff.isoformat()}",
            "mlflow_run_id": run_id, "registered_model": model_name,
            "labels": labels,
            "drift_devices": device_references(drift_x, train.device, drift_names),
        })
        challenger = evaluate(Scorer(manifest, fitted.onnx_bytes), data, cutoff_ms, events)
        tracker.log_metrics(challenger.metrics())
        # The gateway's shadow check reads these bounds (edge.shadow.alert_rate_bounds): held
        # to the held-out behaviour, not to the gateway's one-size default.
        manifest.extra["alert_rate"] = manifest_alert_rate(challenger, config)
        bundle = write_bundle(manifest, fitted.onnx_bytes, key)
        bundle_sha256 = hashlib.sha256(bundle).hexdigest()
        version = tracker.register_onnx(fitted.onnx_bytes, model_name)
        artifact_key = None
        if artifacts is not None:
            artifact_key = f"models/{name}/{manifest.version}/bundle.smb"
            artifacts.put_bytes(artifact_key, bundle, sha256=bundle_sha256)
        tracker.log_files({f"{name}.smb": bundle, "manifest.json": manifest.to_json(),
                           "model.onnx": fitted.onnx_bytes})
        decision = _gate(tracker, config, key, model_name=model_name, version=version,
                         challenger=challenger, data=data, cutoff_ms=cutoff_ms, events=events)
        tracker.log_metrics(decision.champion.metrics("champion.") if decision.champion else {})
        tracker.set_tags({"gate.outcome": decision.outcome, "gate.reason": decision.reason,
                          "gate.champion_version": decision.champion_version or "",
                          "gate.challenger_version": version,
                          "gate.comparison": decision.model_dump_json(),
                          "bundle.artifact_key": artifact_key or "",
                          "bundle.version": manifest.version})
        tracker.tag_version(model_name, version, {
            "gate": decision.outcome, "gate_reason": decision.reason,
            "bundle_version": manifest.version, "bundle_sha256": bundle_sha256,
            "bundle_artifact_key": artifact_key or ""})
        if decision.promoted:
            tracker.promote(model_name, version)
        _audit(conn, actor, model_name, run_id=run_id, bundle_version=manifest.version,
               decision=decision)
    path = _write_bundles(out_dir, name, manifest.version, bundle, decision.promoted)
    return ProfileResult(
        profile=name, model_name=model_name, run_id=run_id, version=version,
        bundle_version=manifest.version, bundle_sha256=bundle_sha256,
        bundle_path=None if path is None else str(path), artifact_key=artifact_key,
        cutoff=cutoff, devices=len(devices),
        rows_train=rows_train, rows_heldout=data.rows - rows_train, windows_train=len(train),
        windows_failure_excluded=int((before & failure).sum()), labels=labels,
        seconds=round(time.perf_counter() - t0, 2), decision=decision)


def manifest_alert_rate(evaluation: Evaluation, config: TrainingConfig) -> dict[str, float]:
    """The manifest's ``alert_rate`` bounds from a held-out evaluation."""
    upper = max(config.alert_rate_factor * evaluation.heldout_anomaly_rate,
                config.alert_rate_floor)
    return {"min": 0.0, "max": round(min(upper, 1.0), 6),
            "heldout": round(evaluation.heldout_anomaly_rate, 6)}


def _gate(tracker: Tracker, config: TrainingConfig, key: Ed25519PrivateKey, *, model_name: str,
          version: str, challenger: Evaluation, data: ProfileData, cutoff_ms: int,
          events: list[LabelledEvent]) -> GateDecision:
    """Measure the current champion on the challenger's data and decide."""
    current = tracker.champion(model_name)
    champion: Evaluation | None = None
    error: str | None = None
    if current is not None:
        try:
            raw = tracker.download(str(current.run_id), f"{BUNDLE_DIR}/{data.profile}.smb")
            manifest, onnx_bytes = read_bundle(raw, [key.public_key()])
            champion = evaluate(Scorer(manifest, onnx_bytes), data, cutoff_ms, events)
        except (BundleError, TrackingError, ValueError) as exc:
            error = str(exc)
            log.warning("champion %s v%s cannot be evaluated: %s", model_name, current.version,
                        error)
    return decide(challenger, champion, challenger_version=version,
                  champion_version=None if current is None else str(current.version),
                  policy=config.gate, champion_error=error)


@contextmanager
def _profile_lock(conn: Conn, model_name: str) -> Iterator[None]:
    """A PostgreSQL session lock per model: concurrent trainings of one profile take turns,
    so two of them never both measure against, and replace, the same champion."""
    key = f"smaint-train:{model_name}"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
    try:
        yield
    finally:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def _audit(conn: Conn, actor: str, model_name: str, *, run_id: str, bundle_version: str,
           decision: GateDecision) -> None:
    """One audit row per gate decision: the champion before and after, and why."""
    champion_after = (decision.challenger_version if decision.promoted
                      else decision.champion_version)
    with conn.transaction():
        audit.record(
            conn, actor, f"model.{'promote' if decision.promoted else 'reject'}", "model",
            model_name,
            before={"champion_version": decision.champion_version,
                    "metrics": None if decision.champion is None
                    else decision.champion.metrics()},
            after={"champion_version": champion_after, "candidate_version":
                   decision.challenger_version, "bundle_version": bundle_version,
                   "run_id": run_id, "reason": decision.reason,
                   "metrics": decision.challenger.metrics()})


def _write_bundles(out_dir: Path | None, profile: str, bundle_version: str, bundle: bytes,
                   promoted: bool) -> Path | None:
    """Every bundle under its version; the champion also as ``<profile>.smb``."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{bundle_version}.smb"
    _write_atomically(path, bundle)
    if promoted:
        _write_atomically(out_dir / f"{profile}.smb", bundle)
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Write then rename, so a reader polling the directory never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def result_json(result: TrainingResult) -> str:
    """The result as indented JSON (for the CLI's ``--json``)."""
    return json.dumps(result.model_dump(mode="json"), indent=2)
