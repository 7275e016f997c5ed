"""Gateway outbox against the real cloud API and PostgreSQL: catch-up after an outage (live
first, backlog oldest first, marked replay), backfill on request, desired and actual state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.access.gateway_tokens import create_gateway
from cloud.api.app import create_app
from cloud.db.migrate import migrate
from cloud.ingest.batch import request_backfill
from cloud.settings import CloudSettings
from edge.outbox import Outbox
from edge.settings import GatewaySettings
from edge.store import Store
from edge.sync import Uploader
from tests.fixtures.gateway import GATEWAY, ingest_through_pipeline


@pytest.fixture
def cloud(pg_dsn: str) -> Iterator[tuple[TestClient, str]]:
    """The cloud app started on a fresh database; yields it and gw-sync-test's token."""
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        token = create_gateway(conn, GATEWAY)
    with TestClient(create_app(CloudSettings(db={"dsn": pg_dsn}))) as client:
        yield client, token


def uploader(client: TestClient, token: str, db: Path, sync: dict[str, object]) -> Uploader:
    """An Uploader whose HTTP goes straight into the running app (no sockets)."""
    settings = GatewaySettings(
        gateway_id=GATEWAY, storage={"path": str(db)}, scoring={"warmup": 4},
        sync={"cloud_url": "http://cloud", "token": token, "retry_attempts": 2,
              "retry_max_s": 0.01, **sync})
    transport = httpx.ASGITransport(app=client.app)
    return Uploader(settings, Outbox(Store.open(settings.storage.path)),
                    httpx.AsyncClient(transport=transport, base_url="http://cloud"))


def cloud_rows(dsn: str) -> list[tuple[int, bool, int]]:
    """(seq, replay, batch_seq) of every stored reading, by seq."""
    with psycopg.connect(dsn) as conn:
        return [(int(s), bool(r), int(b)) for s, r, b in conn.execute(
            "SELECT seq, replay, batch_seq FROM readings ORDER BY seq")]


async def drain(up: Uploader) -> list[tuple[str, int]]:
    """sync_once until idle; (kind, n_readings) of each acked batch."""
    sent: list[tuple[str, int]] = []
    for _ in range(100):
        result = await up.sync_once()
        if result.outcome == "idle":
            return sent
        assert result.outcome == "acked", result
        kind, n = up.outbox.store.conn.execute(
            "SELECT kind, n_readings FROM sync_batches WHERE batch_seq = ?",
            (result.batch_seq,)).fetchone()
        sent.append((kind, n))
    raise AssertionError("never idle")


async def test_after_an_outage_live_goes_first_and_the_backlog_drains_oldest_first(
    cloud: tuple[TestClient, str], tmp_path: Path, pg_dsn: str
) -> None:
    client, token = cloud
    up = uploader(
        client, token, tmp_path / "gw.db",
        sync={"batch_max": 10, "backlog_max": 15, "catchup_after": 20})
    # Piled up while the cloud was away.
    ingest_through_pipeline(up.outbox.store, up.settings, range(50))
    sent = await drain(up)
    # Cycle 1: the 10 newest live + the 15 oldest as backlog; then 25 left: 10 newest live +
    # 15 oldest; then nothing more is beyond the threshold.
    assert sent == [("live", 10), ("backlog", 15), ("live", 10), ("backlog", 15)]
    rows = cloud_rows(pg_dsn)
    assert [s for s, _, _ in rows] == list(range(50))  # every reading once
    replayed = sorted(s for s, r, _ in rows if r)
    assert replayed == list(range(30))  # the oldest, sent as backlog
    first_live = {s for s, _, b in rows if b == 1}
    assert first_live == set(range(40, 50))  # the present went first
    assert up.outbox.store.counters["synced"] == 50
    await up.aclose()
    up.outbox.store.close()


async def test_backfill_on_request_reuploads_the_range_harmlessly(
    cloud: tuple[TestClient, str], tmp_path: Path, pg_dsn: str
) -> None:
    client, token = cloud
    up = uploader(
        client, token, tmp_path / "gw.db",
        sync={"batch_max": 8, "backlog_max": 6, "catchup_after": 100})
    ingest_through_pipeline(up.outbox.store, up.settings, range(20))
    await drain(up)
    # The cloud lost readings 5..14 (a restore), and asks for their time range again.
    lo, hi = up.outbox.store.conn.execute(
        "SELECT min(ts_ms), max(ts_ms) FROM readings WHERE seq BETWEEN 5 AND 14").fetchone()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DELETE FROM readings WHERE seq BETWEEN 5 AND 14")
        conn.execute("UPDATE readings_hwm SET max_seq = 4")  # as a restore would leave it
        req = request_backfill(conn, GATEWAY, datetime.fromtimestamp(lo / 1000, tz=UTC),
                               datetime.fromtimestamp((hi + 1) / 1000, tz=UTC))
        conn.commit()
    # Live data keeps coming.
    ingest_through_pipeline(up.outbox.store, up.settings, range(20, 22))
    (in_range,) = up.outbox.store.conn.execute(
        "SELECT count(*) FROM readings WHERE ts_ms >= ? AND ts_ms <= ?", (lo, hi)).fetchone()
    sent = await drain(up)
    # The live batch brings the request back; the range goes up in replay slices of 6.
    assert sent[0] == ("live", 2)
    assert [n for kind, n in sent if kind == "backfill"] == [
        min(6, in_range - k) for k in range(0, in_range, 6)]
    rows = cloud_rows(pg_dsn)
    assert [s for s, _, _ in rows] == list(range(22))  # restored, nothing doubled
    assert {s for s, r, _ in rows if r} == set(range(5, 15))  # the restored ones are replays
    assert [(b.id, done is not None) for b, done in up.outbox.backfills()] == [(req, True)]
    with psycopg.connect(pg_dsn) as conn:
        completed = conn.execute("SELECT completed_at FROM backfill_requests").fetchone()
        reported = conn.execute("SELECT reported_state FROM gateways").fetchone()
    assert completed is not None
    assert completed[0] is not None
    assert reported is not None
    assert reported[0]["backlog"] == 0
    # A backfill does not count as newly synced readings.
    assert up.outbox.store.counters["synced"] == 22
    desired = up.outbox.desired()
    assert desired is not None
    assert desired.backfill == []
    await up.aclose()
    up.outbox.store.close()
