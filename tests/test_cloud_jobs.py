"""The PostgreSQL job table: claims, leases, retries, and two cloud processes sharing it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from cloud.background.jobs import Job, backoff_s, claim, complete, enqueue, fail
from cloud.db.migrate import migrate
from cloud.db.pool import Conn
from cloud.settings import CloudSettings
from devstack.ports import free_port, wait_for_port
from tests.fixtures.cloud import prepare_db
from tests.fixtures.factories import T0, make_alert, upload
from tests.fixtures.receivers import SECRET, receiver, signature_ok
from tests.fixtures.waiting import wait_until

N_ALERTS = 120


def test_claims_are_exclusive_and_leases_expire(conn: Conn, pg_dsn: str) -> None:
    with conn.transaction():
        first = enqueue(conn, "test", {"n": 1}, dedupe_key="test:1")
        assert enqueue(conn, "test", {"n": 1}, dedupe_key="test:1") is None  # deduped
        enqueue(conn, "test", {"n": 2})
    with psycopg.connect(pg_dsn) as other:
        a = claim(conn, "worker-a", lease_s=60)
        b = claim(other, "worker-b", lease_s=60)
        assert a is not None
        assert b is not None
        assert (a.job_id, a.payload, a.attempt) == (first, {"n": 1}, 1)
        assert b.job_id != a.job_id
        assert claim(other, "worker-b", lease_s=60) is None  # both leased: nothing due
        # A lease that ran out (its worker died) lets another worker take the job over...
        conn.execute("UPDATE jobs SET locked_until = now() - interval '1 s' WHERE job_id = %s",
                     (a.job_id,))
        conn.commit()
        taken = claim(other, "worker-b", lease_s=60)
        assert taken is not None
        assert (taken.job_id, taken.attempt) == (a.job_id, 2)
        # ...and the first worker then cannot mark it done.
        assert not complete(conn, a)
        assert complete(other, taken)
    status = conn.execute("SELECT status, locked_by FROM jobs WHERE job_id = %s",
                          (a.job_id,)).fetchone()
    assert status == ("done", "worker-b")


def test_failures_back_off_then_fail(conn: Conn) -> None:
    settings = CloudSettings(jobs={"max_attempts": 2, "backoff_s": 30, "backoff_cap_s": 60})
    with conn.transaction():
        enqueue(conn, "test", {})
    job = claim(conn, "w", lease_s=60)
    assert job is not None
    assert fail(conn, job, "receiver down", settings) == "queued"
    row = conn.execute("SELECT status, last_error, run_at - now() > interval '14 s'"
                       " FROM jobs").fetchone()
    assert row == ("queued", "receiver down", True)
    assert claim(conn, "w", lease_s=60) is None  # not due before its backoff ends
    conn.execute("UPDATE jobs SET run_at = now()")
    conn.commit()
    again = claim(conn, "w", lease_s=60)
    assert again is not None
    assert fail(conn, again, "still down", settings) == "failed"
    assert conn.execute("SELECT status, attempts FROM jobs").fetchone() == ("failed", 2)
    delays = [backoff_s(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5, 50)]
    assert [0.5 <= d <= 1 for d in delays[:1]] == [True]
    assert 4 <= delays[3] <= 8  # 8 s, half of it jitter
    assert 5 <= delays[5] <= 10  # capped


@pytest.mark.expected_errors("cloud.background.jobs", r"crashed, now failed")
def test_a_handler_error_is_recorded_not_raised(pg_dsn: str) -> None:
    from cloud.background.jobs import Worker  # noqa: PLC0415
    from cloud.db.pool import open_pool  # noqa: PLC0415

    migrate(pg_dsn)
    settings = CloudSettings(db={"dsn": pg_dsn}, jobs={"max_attempts": 1})

    def broken(job: Job, conn: Conn) -> None:
        raise ValueError(f"cannot handle {job.payload}")

    pool = open_pool(settings)
    try:
        with pool.connection() as c, c.transaction():
            enqueue(c, "broken", {"x": 1})
            enqueue(c, "unknown", {})
        worker = Worker(pool, settings, {"broken": broken})
        assert worker.run_once()
        assert worker.run_once()
        assert not worker.run_once()
        with pool.connection() as c:
            rows = c.execute("SELECT kind, status, last_error FROM jobs ORDER BY job_id").fetchall()
    finally:
        pool.close()
    assert rows == [
        ("broken", "failed", "ValueError: cannot handle {'x': 1}"),
        ("unknown", "failed", "CloudError: no handler for job kind 'unknown'"),
    ]


@pytest.mark.slow
def test_two_cloud_processes_do_no_job_twice(pg_dsn: str, tmp_path: Path) -> None:
    prepare_db(pg_dsn)
    with receiver(delay_s=0.01) as hook:
        env = {
            **os.environ, "SMAINT_CLOUD_DB__DSN": pg_dsn,
            "SMAINT_CLOUD_JOBS__WORKER_POLL_S": "0.05",
            "SMAINT_CLOUD_NOTIFY__WEBHOOK_URLS": f'["{hook.url}"]',
            "SMAINT_CLOUD_NOTIFY__WEBHOOK_SECRET": SECRET,
        }
        ports = [free_port(), free_port()]
        procs = []
        for i, port in enumerate(ports):
            with (tmp_path / f"cloud-{i}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "cloud", "serve", "--port", str(port)],
                    stdout=log, stderr=subprocess.STDOUT, env=env,
                ))
        try:
            for port in ports:
                wait_for_port(port, timeout_s=30)
                assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            # Alerts arrive in several batches while both workers are polling.
            for start in range(0, N_ALERTS, 20):
                upload(pg_dsn, [make_alert(f"{i:08x}", opened_ms=T0 + i)
                                for i in range(start, start + 20)])
            wait_until(lambda: len(hook.requests) >= N_ALERTS, 120, "a webhook per alert")
            with psycopg.connect(pg_dsn) as conn:
                wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM jobs WHERE status <> 'done'").fetchone() == (0,),
                    30, "every job done")
                workers: dict[str, int] = dict(conn.execute(
                    "SELECT worker, count(*) FROM notification_deliveries GROUP BY 1").fetchall())
                attempts = conn.execute("SELECT max(attempts) FROM jobs").fetchone()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                assert proc.wait(timeout=30) in {0, -15}
    delivered = Counter(h["X-Smaint-Delivery"] for h, _ in hook.requests)
    alerts = Counter(httpx.Response(200, content=b).json()["alert"]["alert_id"]
                     for _, b in hook.requests)
    assert len(hook.requests) == N_ALERTS
    assert set(delivered.values()) == {1}, "a delivery job ran twice"
    assert set(alerts.values()) == {1}
    assert len(alerts) == N_ALERTS
    assert all(signature_ok(h, b) for h, b in hook.requests)
    assert attempts == (1,)
    assert len(workers) == 2, f"both processes should have worked: {workers}"
    assert sum(workers.values()) == N_ALERTS
    print(f"two processes delivered {N_ALERTS} webhooks once each: {sorted(workers.values())}")
