"""Background jobs in PostgreSQL, claimed with ``FOR UPDATE SKIP LOCKED`` by every cloud process.

A claim is a lease (``locked_until``): the worker runs the job outside any transaction, then
marks it done only if it still holds the lease. A worker that dies mid-job leaves it to be
claimed again when the lease ends, so delivery is at-least-once across crashes and exactly
once while workers live. Failures are retried with exponential backoff and jitter, then the
job is marked failed. Any number of processes may run a ``Worker`` on one database.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from tenacity import RetryCallState, Retrying, wait_exponential, wait_random_exponential

from cloud.access import ratelimit
from cloud.background.loop import BackgroundLoop
from cloud.db.pool import Conn
from cloud.exceptions import CloudError
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

# Old windows are pruned this often by whichever worker gets there first.
_PRUNE_EVERY_S = 300.0


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job, as its handler sees it."""

    job_id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    worker: str


# A handler gets the claimed job and a connection (no transaction open); raising means retry.
Handler = Callable[[Job, Conn], None]


class JobInfo(BaseModel):
    """A job as the API shows it."""

    job_id: int
    kind: str
    status: str
    attempts: int
    run_at: datetime
    locked_by: str | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


def enqueue(
    conn: Conn, kind: str, payload: dict[str, Any], dedupe_key: str | None = None
) -> int | None:
    """Queue a job in the caller's transaction; None if ``dedupe_key`` was queued before."""
    row = conn.execute(
        "INSERT INTO jobs (kind, payload, dedupe_key) VALUES (%s, %s, %s)"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
        (kind, Jsonb(payload), dedupe_key),
    ).fetchone()
    return None if row is None else int(row[0])


def claim(conn: Conn, worker: str, lease_s: float) -> Job | None:
    """Lease the oldest due job (or one whose lease ran out) to ``worker``; None if idle."""
    with conn.transaction():
        row = conn.execute(
            "WITH due AS (SELECT job_id FROM jobs"
            "  WHERE (status = 'queued' AND run_at <= now())"
            "     OR (status = 'running' AND locked_until < now())"
            "  ORDER BY run_at, job_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, locked_by = %s,"
            "  locked_until = now() + make_interval(secs => %s)"
            " FROM due WHERE j.job_id = due.job_id"
            " RETURNING j.job_id, j.kind, j.payload, j.attempts",
            (worker, lease_s),
        ).fetchone()
    if row is None:
        return None
    return Job(job_id=int(row[0]), kind=row[1], payload=row[2], attempt=int(row[3]),
               worker=worker)


def complete(conn: Conn, job: Job) -> bool:
    """Mark ``job`` done; False if its lease had run out and another worker took it."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE jobs SET status = 'done', finished_at = now(), locked_until = NULL,"
            " last_error = NULL WHERE job_id = %s AND locked_by = %s AND status = 'running'",
            (job.job_id, job.worker),
        )
    return cur.rowcount == 1


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Delay before retry number ``attempt``: doubling from ``base_s``, capped, half jitter."""
    # Half the doubling delay fixed, half random: the jitter spreads the retries of many jobs
    # that failed together (one receiver down). The retry itself is a later claim of the row,
    # so only tenacity's wait strategies are used here, not its loop.
    half = wait_exponential(multiplier=base_s / 2, max=cap_s / 2) + wait_random_exponential(
        multiplier=base_s / 2, max=cap_s / 2)
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return float(half(state))


def fail(conn: Conn, job: Job, error: str, settings: CloudSettings) -> str:
    """Reschedule ``job`` with backoff, or mark it failed after the last attempt; new status."""
    final = job.attempt >= settings.jobs.max_attempts
    delay = backoff_s(job.attempt, settings.jobs.backoff_s, settings.jobs.backoff_cap_s)
    with conn.transaction():
        conn.execute(
            "UPDATE jobs SET status = %s, last_error = %s, locked_until = NULL,"
            " run_at = now() + make_interval(secs => %s),"
            " finished_at = CASE WHEN %s THEN now() END"
            " WHERE job_id = %s AND locked_by = %s AND status = 'running'",
            ("failed" if final else "queued", error[:2000], delay, final, job.job_id, job.worker),
        )
    return "failed" if final else "queued"


def list_jobs(conn: Conn, *, status: str | None = None, limit: int = 100) -> list[JobInfo]:
    """Jobs newest first, optionally of one status."""
    rows = conn.execute(
        "SELECT job_id, kind, status, attempts, run_at, locked_by, last_error, created_at,"
        " finished_at FROM jobs WHERE (%(s)s::text IS NULL OR status = %(s)s)"
        " ORDER BY job_id DESC LIMIT %(n)s",
        {"s": status, "n": min(limit, 1000)},
    ).fetchall()
    return [
        JobInfo(job_id=r[0], kind=r[1], status=r[2], attempts=r[3], run_at=r[4], locked_by=r[5],
                last_error=r[6], created_at=r[7], finished_at=r[8])
        for r in rows
    ]


def worker_id() -> str:
    """A name unique to this process: host, pid and a random suffix (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Claims and runs jobs in a background thread until ``stop()``."""

    def __init__(
        self, pool: ConnectionPool, settings: CloudSettings, handlers: Mapping[str, Handler]
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.handlers = dict(handlers)
        self.name = worker_id()
        self._last_prune = 0.0
        self._loop = BackgroundLoop(f"job worker {self.name}", self._step,
                                    settings.jobs.worker_poll_s)

    def start(self) -> None:
        """Start claiming jobs in a daemon thread."""
        self._loop.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to end after the job in hand, and wait for it."""
        self._loop.stop(timeout_s)

    def run_once(self) -> bool:
        """Claim and run one job; False if none was due."""
        with self.pool.connection() as conn:
            job = claim(conn, self.name, self.settings.jobs.lease_s)
            if job is None:
                return False
            self._run(conn, job)
        return True

    def _run(self, conn: Conn, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise CloudError(f"no handler for job kind {job.kind!r}")
            handler(job, conn)
        except Exception as exc:  # any failure is recorded on the job and retried
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            status = fail(conn, job, f"{type(exc).__name__}: {exc}", self.settings)
            if isinstance(exc, CloudError | psycopg.Error | OSError):
                log.warning("job %d (%s) attempt %d failed, now %s: %s", job.job_id, job.kind,
                            job.attempt, status, exc)
            else:  # a bug in a handler: keep the traceback
                log.exception("job %d (%s) attempt %d crashed, now %s", job.job_id, job.kind,
                              job.attempt, status)
            return
        if not complete(conn, job):
            log.warning("job %d (%s) finished after its lease ran out", job.job_id, job.kind)

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = now
        with self.pool.connection() as conn, conn.transaction():
            pruned = ratelimit.prune(conn)
        log.debug("pruned %d rate-limit windows", pruned)

    def _step(self) -> bool:
        self._prune()
        return self.run_once()
