"""Training through the job table: the ``train`` job, its request, and the runs MLflow holds.

The API enqueues a ``train`` job; whichever cloud process's worker claims it runs
:func:`~cloud.training.pipeline.train_models` with the settings' training section, signing key
and artifact store. Runs are listed from the MLflow tracking store, with the gate's decision.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator

from cloud.artifacts import open_artifact_store
from cloud.background import jobs
from cloud.db.pool import Conn
from cloud.exceptions import CloudError, NotFoundError
from cloud.settings import CloudSettings
from cloud.training.config import TrainingConfig
from shared.sensors import PROFILES
from shared.times import as_utc

log = logging.getLogger(__name__)

TRAIN_JOB = "train"


class SigningKeyError(CloudError):
    """The cloud has no usable signing key for training (HTTP 503: an operator must fix it)."""

    http_status = 503


class TrainingRunCreate(BaseModel):
    """Which profiles to retrain on which window (defaults: every profile, the last week)."""

    profiles: list[str] | None = Field(
        default=None, max_length=len(PROFILES) or 1, examples=[["motor"]],
        description="sensor profiles; default every profile with readings in the window")
    since: datetime | None = Field(default=None, description="inclusive start of the data")
    until: datetime | None = Field(default=None, description="exclusive end; default now")
    days: float | None = Field(
        default=None, gt=0, le=366, description="window length when since is not given")

    @model_validator(mode="after")
    def _check(self) -> TrainingRunCreate:
        unknown = [p for p in self.profiles or [] if p not in PROFILES]
        if unknown:
            raise ValueError(f"unknown sensor profiles {unknown}; known: {sorted(PROFILES)}")
        if self.since is not None and self.days is not None:
            raise ValueError("give since or days, not both")
        self.since = None if self.since is None else as_utc(self.since)
        self.until = None if self.until is None else as_utc(self.until)
        if self.since and self.until and self.until <= self.since:
            raise ValueError("until must be after since")
        return self

    def window(self) -> tuple[datetime | None, datetime | None]:
        """(since, until) to train on; None means the training config's default."""
        if self.days is None:
            return self.since, self.until
        until = self.until or datetime.now(UTC)
        return until - timedelta(days=self.days), until


class TrainingRun(BaseModel):
    """One MLflow run of the training experiment, as the API lists it."""

    run_id: str
    name: str | None
    profile: str | None
    status: str
    started: datetime | None
    ended: datetime | None
    actor: str | None
    metrics: dict[str, float]
    gate_outcome: str | None = Field(description="promoted or rejected (None while running)")
    gate_reason: str | None
    registered_version: str | None = Field(description="the registry version it created")
    bundle_version: str | None = Field(
        description="its signed bundle's version: what a rollout deploys")


def enqueue_training(conn: Conn, request: TrainingRunCreate, actor: str) -> int:
    """Queue a ``train`` job in the caller's transaction; its id."""
    since, until = request.window()
    payload: dict[str, Any] = {
        "profiles": request.profiles, "actor": actor,
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat()}
    job_id = jobs.enqueue(conn, TRAIN_JOB, payload)
    if job_id is None:  # no dedupe key: a conflict cannot happen
        raise CloudError("the training job was not queued")
    return job_id


def get_job(conn: Conn, job_id: int) -> jobs.JobInfo:
    """One job; NotFoundError if there is none with that id."""
    row = conn.execute(
        "SELECT job_id, kind, status, attempts, run_at, locked_by, last_error, created_at,"
        " finished_at FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id}")
    return jobs.JobInfo(job_id=row[0], kind=row[1], status=row[2], attempts=row[3],
                        run_at=row[4], locked_by=row[5], last_error=row[6],
                        created_at=row[7], finished_at=row[8])


def _load_key(config: TrainingConfig) -> Any:
    from shared.bundle import load_private_key  # noqa: PLC0415 (cryptography on demand)

    path = config.signing_key_file
    if path is None:
        raise SigningKeyError("training.signing_key_file is not set: set "
                              "SMAINT_TRAINING__SIGNING_KEY_FILE to the bundle signing key")
    try:
        return load_private_key(path)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path} is unusable: {exc}") from exc


def run_training_job(job: jobs.Job, conn: Conn, settings: CloudSettings) -> None:
    """The ``train`` job: train, track, register and gate the requested profiles."""
    from cloud.training.pipeline import train_models  # noqa: PLC0415 (sklearn, mlflow)

    p = job.payload
    key = _load_key(settings.training)
    result = train_models(
        conn, settings.training, key,
        since=None if p.get("since") is None else datetime.fromisoformat(p["since"]),
        until=None if p.get("until") is None else datetime.fromisoformat(p["until"]),
        profiles=p.get("profiles"), artifacts=open_artifact_store(settings.artifacts),
        actor=str(p.get("actor") or "system"))
    log.info("train job %d: %d trained (%s), %d skipped", job.job_id, len(result.trained),
             ", ".join(f"{r.model_name} v{r.version} {r.decision.outcome}"
                       for r in result.trained), len(result.skipped))


def handlers(settings: CloudSettings) -> dict[str, jobs.Handler]:
    """The training job handlers, bound to ``settings``."""
    return {TRAIN_JOB: lambda job, conn: run_training_job(job, conn, settings)}


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def list_runs(config: TrainingConfig, *, profile: str | None = None,
              limit: int = 50) -> list[TrainingRun]:
    """The experiment's runs, newest first, with their metrics and gate decision."""
    from cloud.training.tracking import (  # noqa: PLC0415 (mlflow is slow to import)
        Tracker,
        TrackingError,
        mlflow_errors,
    )

    if config.tracking_uri is None and not (config.data_dir / "mlflow.db").exists():
        return []  # nothing trained yet: listing must not create a store
    tracker = Tracker(config)
    query = "" if profile is None else f"tags.profile = '{profile}'"
    try:
        runs = tracker.client.search_runs(
            [tracker.experiment_id], filter_string=query, max_results=limit,
            order_by=["attributes.start_time DESC"])
    except mlflow_errors() as exc:
        raise TrackingError(f"MLflow at {tracker.tracking_uri} refused to list runs: "
                            f"{exc}") from exc
    out = []
    for r in runs:
        tags = r.data.tags
        out.append(TrainingRun(
            run_id=r.info.run_id, name=r.info.run_name, profile=tags.get("profile"),
            status=r.info.status, started=_time(r.info.start_time), ended=_time(r.info.end_time),
            actor=tags.get("actor"), metrics=dict(r.data.metrics),
            gate_outcome=tags.get("gate.outcome"), gate_reason=tags.get("gate.reason"),
            registered_version=tags.get("gate.challenger_version"),
            bundle_version=tags.get("bundle.version")))
    return out
