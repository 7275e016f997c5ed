"""Acceptance 3: schemathesis against the served OpenAPI schema finds no 5xx (bounded run).

The cloud runs as a real process (``python -m cloud serve``) on a database holding alerts,
an order and users; every operation is called with an admin key, so the checks reach past
authentication into the handlers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from cloud.access.users import create_user
from devstack.ports import free_port, wait_for_port
from tests.fixtures.cloud import prepare_db
from tests.fixtures.factories import make_alert, make_reading, upload

MAX_EXAMPLES = 15


@pytest.fixture
def credentials(pg_dsn: str) -> dict[str, str]:
    """A database with data to find; an admin key (named unlike anything generated) and gw-1's
    token, which the sync upload is called with so that its body gets fuzzed too."""
    _, tokens = prepare_db(pg_dsn)
    upload(pg_dsn, [make_alert("aaaa0001"), make_alert("aaaa0002", severity="low")],
           [make_reading(i) for i in range(20)])
    with psycopg.connect(pg_dsn) as conn:
        admin = create_user(conn, "schemathesis-0b7f-admin", "admin").key
    return {"admin": admin, "gateway": tokens["gw-1"]}


@pytest.fixture
def cloud_url(pg_dsn: str, credentials: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The cloud served by a real process; rate limits off so the run is not throttled."""
    port = free_port()
    log_path = tmp_path / "cloud.log"
    env = {**os.environ, "SMAINT_CLOUD_DB__DSN": pg_dsn,
           "SMAINT_CLOUD_API__RATE_LIMIT_PER_MINUTE": "0", "SMAINT_CLOUD_LOGGING__LEVEL": "WARNING"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cloud", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, timeout_s=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # A 5xx would be caught by the checks; tracebacks in the log point at where it came from.
    assert "Traceback" not in log_path.read_text()


@pytest.mark.slow
def test_no_server_errors(cloud_url: str, credentials: dict[str, str]) -> None:
    # schemathesis' pytest plugin (lazy schemas) trips on pytest 9, so each operation gets its
    # own bounded hypothesis run here, and every failure is collected before asserting.
    schema = schemathesis.openapi.from_url(f"{cloud_url}/openapi.json")
    failures: list[str] = []
    calls: list[tuple[str, int]] = []
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        who = "gateway" if operation.path.startswith("/api/v1/sync") else "admin"
        headers = {"Authorization": f"Bearer {credentials[who]}"}
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call_and_validate(
                headers=headers, checks=[not_a_server_error], timeout=30)  # noqa: B023
            calls.append((case.operation.label, response.status_code))

        try:
            run()
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{operation.label}: {exc!r}")
    assert operations >= 25
    assert len(calls) >= 4 * operations  # each operation really got several generated cases
    assert failures == []
    statuses = Counter(status for _, status in calls)
    assert statuses[200] + statuses[201] > len(calls) // 4  # most calls got past auth
    print(f"schemathesis: {operations} operations, {len(calls)} cases, statuses {statuses}")
