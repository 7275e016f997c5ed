"""Drift work in the job table: the periodic check and the retraining a drift event queues.

The periodic check is a chain of ``drift_check`` jobs, one per time slot of
``check_every_s`` (the slot in its dedupe key): each run queues the next slot's job, so any
number of cloud processes share one schedule and a restart neither skips nor doubles it.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from cloud.background.jobs import Handler, Job
from cloud.db.pool import Conn
from cloud.drift.check import RETRAIN_KIND, check_drift, record_retraining
from cloud.exceptions import CloudError
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

CHECK_KIND = "drift_check"


class RetrainingConfigError(CloudError):
    """A drift retraining cannot run as configured (no signing key)."""


def schedule_check(conn: Conn, every_s: float, *, next_slot: bool = False) -> int | None:
    """Queue the drift check of the current (or next) slot; None if it is queued already."""
    slot = math.floor(time.time() / every_s) + (1 if next_slot else 0)
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO jobs (kind, payload, dedupe_key, run_at)"
            " VALUES (%s, %s, %s, CASE WHEN %s THEN to_timestamp(%s) ELSE now() END)"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (CHECK_KIND, Jsonb({"slot": slot}), f"{CHECK_KIND}:{every_s:g}:{slot}", next_slot,
             slot * every_s)).fetchone()
    return None if row is None else int(row[0])


def start_checks(pool: ConnectionPool, every_s: float) -> None:
    """Queue the current slot's drift check (at start-up; a no-op if another process did)."""
    with pool.connection() as conn:
        schedule_check(conn, every_s)


def run_check(job: Job, conn: Conn, settings: CloudSettings) -> None:
    """Handler of ``drift_check``: queue the next slot's check, then check every profile now."""
    # Queued first: a check that keeps failing (MLflow away) must not end the schedule.
    schedule_check(conn, settings.drift.check_every_s, next_slot=True)
    report = check_drift(conn, settings.training, settings.drift)
    log.info("drift check: %d profile(s), %d new event(s)", len(report.profiles),
             len(report.events))


def run_retrain(job: Job, conn: Conn, settings: CloudSettings) -> None:
    """Handler of ``drift_retrain``: retrain the profile; the gate's decision goes on the events."""
    # The training stack (scikit-learn, mlflow) loads only when a retraining runs.
    from cloud.training.pipeline import train_models  # noqa: PLC0415
    from shared.bundle import load_private_key  # noqa: PLC0415

    path = settings.drift.signing_key
    if path is None or not path.is_file():
        raise RetrainingConfigError(
            f"drift retraining needs the bundle signing key: set SMAINT_CLOUD_DRIFT__SIGNING_KEY "
            f"to an existing key file (now {path})")
    profile = str(job.payload["profile"])
    result = train_models(conn, settings.training, load_private_key(path),
                          since=datetime.fromisoformat(job.payload["since"]),
                          until=datetime.fromisoformat(job.payload["until"]),
                          profiles=[profile], actor="drift")
    if result.trained:
        (trained,) = result.trained
        n = record_retraining(conn, job.job_id, run_id=trained.run_id, version=trained.version,
                              outcome=trained.decision.outcome, reason=trained.decision.reason)
    else:
        reason = result.skipped[0].reason if result.skipped else "nothing to train"
        n = record_retraining(conn, job.job_id, run_id=None, version=None, outcome="skipped",
                              reason=reason)
    log.info("drift retraining of %s (job %d) recorded on %d event(s)", profile, job.job_id, n)


def handlers(settings: CloudSettings) -> dict[str, Handler]:
    """The drift job handlers, bound to ``settings``."""
    return {CHECK_KIND: lambda job, conn: run_check(job, conn, settings),
            RETRAIN_KIND: lambda job, conn: run_retrain(job, conn, settings)}
