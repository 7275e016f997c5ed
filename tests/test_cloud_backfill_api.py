"""An admin asks a gateway, over the API, to upload a range again; the request is audited."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from cloud.ingest.batch import desired_state
from tests.fixtures.cloud import running_biz

PATH = "/api/v1/gateways/gw-1/backfill"
RANGE = {"since": "2026-11-20T00:00:00", "until": "2026-11-21T00:00:00Z"}


def test_admin_queues_a_backfill_that_reaches_the_gateway_and_is_audited(pg_dsn: str) -> None:
    with running_biz(pg_dsn) as biz:
        assert biz.send("POST", "operator", PATH, RANGE).status_code == 403
        r = biz.send("POST", "admin", PATH, RANGE)
        assert r.status_code == 202, r.text
        req = r.json()["id"]
        assert biz.send("POST", "admin", "/api/v1/gateways/nobody/backfill",
                        RANGE).status_code == 404
        backwards = {"since": RANGE["until"], "until": RANGE["since"]}
        assert biz.send("POST", "admin", PATH, backwards).status_code == 422
    with psycopg.connect(pg_dsn) as conn:
        wanted = desired_state(conn, "gw-1").backfill
        audited = conn.execute(
            "SELECT actor, after FROM audit_log WHERE action = 'backfill.request'").fetchall()
    since = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    # The naive 'since' was taken as UTC: exactly one day before 'until'.
    assert [(b.id, b.since_ms, b.until_ms) for b in wanted] == [
        (req, since, since + 86_400_000)]
    assert audited == [("admin", {"id": req, "since": "2026-11-20T00:00:00+00:00",
                                  "until": "2026-11-21T00:00:00+00:00"})]
