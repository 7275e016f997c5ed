"""The cloud HTTP API against a real PostgreSQL: auth, sync, reads, probes, hostile input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient  # its httpx warning is filtered in pyproject
from pydantic import ValidationError

from cloud.access.gateway_tokens import create_gateway, revoke_gateway
from cloud.access.users import create_user
from cloud.api.app import create_app
from cloud.cli import main
from cloud.db.migrate import migrate
from cloud.settings import CloudSettings, load_settings
from devstack.ports import free_port, wait_for_port
from shared.schemas import SyncAck
from tests.fixtures.factories import T0, alert, batch, reading

SYNC = "/api/v1/sync/batches"
LIMIT = 256 * 1024  # a small body cap so the oversize cases stay cheap


@dataclass
class Cloud:
    """A running app and the tokens of its two gateways."""

    client: TestClient
    token: str
    other_token: str
    dsn: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        """Headers authenticating as gw-1 (or with ``token``)."""
        return {"Authorization": f"Bearer {token or self.token}"}

    def post(self, body: bytes, **headers: str) -> httpx.Response:
        """POST raw bytes to the sync endpoint as gw-1 unless headers say otherwise."""
        h = {"Content-Type": "application/json", **self.auth(), **headers}
        return cast(httpx.Response, self.client.post(SYNC, content=body, headers=h))


@pytest.fixture
def cloud(pg_dsn: str) -> Iterator[Cloud]:
    """The app on a fresh database, with gateways gw-1 and gw-2 registered."""
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        tokens = create_gateway(conn, "gw-1"), create_gateway(conn, "gw-2")
        viewer = create_user(conn, "viewer", "viewer").key
    settings = CloudSettings(
        db={"dsn": pg_dsn, "pool_timeout_s": 0.5}, api={"max_body_bytes": LIMIT})
    with TestClient(create_app(settings)) as client:
        # Reads go as a viewer; the sync posts below send their gateway token instead.
        client.headers["Authorization"] = f"Bearer {viewer}"
        yield Cloud(client, tokens[0], tokens[1], pg_dsn)


def body(seq: int, n: int = 10, first: int = 0, gateway: str = "gw-1") -> bytes:
    """A SyncBatch of readings first..first+n as JSON bytes."""
    b = batch(seq, [reading(i) for i in range(first, first + n)], gateway=gateway)
    return b.model_dump_json().encode()


def test_sync_then_retry_then_overlap(cloud: Cloud) -> None:
    r = cloud.post(body(1, 10))
    assert r.status_code == 200, r.text
    assert SyncAck.model_validate(r.json()).readings_inserted == 10
    again = SyncAck.model_validate(cloud.post(body(1, 10)).json())
    assert (again.first_time, again.readings_inserted) == (False, 10)
    overlap = SyncAck.model_validate(cloud.post(body(2, 10, first=5)).json())
    assert (overlap.readings_inserted, overlap.readings_duplicate) == (5, 5)
    stats = cloud.client.get("/api/v1/stats").json()
    assert stats == {
        "readings": 15, "distinct_readings": 15, "devices": 1, "per_device": {"dev-1": 15},
    }
    devices = cloud.client.get("/api/v1/devices").json()["devices"]
    assert [(d["device"], d["gateway"], d["readings"]) for d in devices] == [("dev-1", "gw-1", 15)]
    metrics = cloud.client.get("/metrics").text
    assert "smaint_cloud_readings_inserted_total 15.0" in metrics
    assert "smaint_cloud_readings_duplicate_total 5.0" in metrics
    assert 'smaint_cloud_sync_batches_total{first_time="false"} 1.0' in metrics
    assert 'route="/api/v1/sync/batches",status="200"' in metrics


def test_running_app_folds_rollup_deltas(cloud: Cloud) -> None:
    assert cloud.post(body(1, 120)).status_code == 200
    deadline = time.monotonic() + 15
    while "smaint_cloud_rollup_pending_deltas 0.0" not in cloud.client.get("/metrics").text:
        assert time.monotonic() < deadline, "the app never folded its rollup deltas"
        time.sleep(0.1)
    with psycopg.connect(cloud.dsn) as conn:
        row = conn.execute("SELECT sum(count) FROM readings_1m WHERE device_id = 'dev-1'"
                           " AND metric = 'temperature_c'").fetchone()
    assert row is not None
    assert row[0] == 120


def test_gzip_body(cloud: Cloud) -> None:
    raw = batch(1, [reading(i) for i in range(100)], [alert("a1b2c3d4", T0)])
    r = cloud.post(gzip.compress(raw.model_dump_json().encode()), **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["readings_inserted"] == 100
    assert r.json()["alerts_upserted"] == 1


def test_auth_failures(cloud: Cloud) -> None:
    no_auth = cloud.client.post(SYNC, content=body(1))
    assert no_auth.status_code == 401
    assert no_auth.headers["WWW-Authenticate"] == "Bearer"
    assert cloud.post(body(1), Authorization="Bearer nope").status_code == 401
    assert cloud.post(body(1), Authorization=f"Basic {cloud.token}").status_code == 401
    forbidden = cloud.post(body(1, gateway="gw-2"))
    assert forbidden.status_code == 403
    assert "gw-2" in forbidden.json()["detail"]
    assert cloud.post(body(1, gateway="gw-2"), **cloud.auth(cloud.other_token)).status_code == 200
    with psycopg.connect(cloud.dsn) as conn:
        revoke_gateway(conn, "gw-1")
    revoked = cloud.post(body(1))
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]


HOSTILE_BODIES: list[tuple[str, bytes, dict[str, str], int]] = [
    ("bad json", b"{not json", {}, 422),
    ("empty", b"", {}, 422),
    ("array", b"[]", {}, 422),
    ("missing fields", b'{"gateway": "gw-1"}', {}, 422),
    ("binary", b"\xff\xfe\x00garbage", {}, 422),
    ("corrupt gzip", b"not gzip at all", {"Content-Encoding": "gzip"}, 400),
    ("truncated gzip", gzip.compress(b"{}" * 100)[:-12], {"Content-Encoding": "gzip"}, 400),
    ("brotli", b"{}", {"Content-Encoding": "br"}, 415),
    ("too large", b"x" * (LIMIT + 1), {}, 413),
    ("gzip bomb", gzip.compress(b" " * (LIMIT * 4)), {"Content-Encoding": "gzip"}, 413),
]


def test_hostile_sync_bodies_get_4xx(cloud: Cloud) -> None:
    # One app for all cases: a fresh database per case would cost more than the cases.
    for name, payload, headers, status in HOSTILE_BODIES:
        r = cloud.post(payload, **headers)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert "detail" in r.json(), name
    assert cloud.client.get("/api/v1/stats").json()["readings"] == 0
    assert cloud.client.get("/readyz").status_code == 200  # nothing leaked or broke


def test_nonfinite_and_out_of_range_values_get_422(cloud: Cloud) -> None:
    doc = json.loads(body(1, 1))
    doc["readings"][0]["score"] = float("nan")
    assert cloud.post(json.dumps(doc).encode()).status_code == 422  # json.dumps writes NaN
    doc = json.loads(body(1, 1))
    doc["batch_seq"] = 2**70
    assert cloud.post(json.dumps(doc).encode()).status_code == 422
    doc = json.loads(body(1, 1))
    doc["readings"][0]["metrics"] = {"temperature_c": 1e999}
    assert cloud.post(json.dumps(doc).encode()).status_code == 422


def test_readings_pages_cover_every_row_once(cloud: Cloud) -> None:
    # Two boots with colliding timestamps, plus another device that must not leak in.
    rows = [reading(i, ts_ms=T0 + i // 4) for i in range(300)]
    rows += [reading(i, boot="0badb007", ts_ms=T0 + i // 4) for i in range(300)]
    rows += [reading(i, device="dev-2") for i in range(30)]
    payload = batch(1, rows).model_dump_json().encode()
    assert cloud.post(payload).status_code == 200
    seen: list[tuple[int, str, int]] = []
    params: dict[str, str | int] = {"device": "dev-1", "limit": 97}
    pages = 0
    while True:
        page = cloud.client.get("/api/v1/readings", params=params).json()
        pages += 1
        seen += [(r["ts_ms"], r["boot"], r["seq"]) for r in page["readings"]]
        assert all(r["device"] == "dev-1" and r["gateway"] == "gw-1" for r in page["readings"])
        if page["next"] is None:
            break
        params["after"] = page["next"]
    assert pages == 7
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 600


def test_readings_time_window(cloud: Cloud) -> None:
    assert cloud.post(body(1, 20)).status_code == 200  # ts = T0 + 100 ms * seq
    since = "2023-11-14T22:13:20.500Z"  # T0 + 500 ms
    until = "2023-11-14T22:13:21.000"  # T0 + 1000 ms, no zone: read as UTC
    page = cloud.client.get(
        "/api/v1/readings", params={"device": "dev-1", "since": since, "until": until}
    ).json()
    assert [r["seq"] for r in page["readings"]] == [5, 6, 7, 8, 9]
    first = page["readings"][0]
    assert first["ts_ms"] == T0 + 500
    assert first["metrics"] == reading(5).metrics
    empty = cloud.client.get("/api/v1/readings", params={"device": "nobody"}).json()
    assert empty == {"device": "nobody", "readings": [], "next": None}


BAD_READ_PARAMS: list[tuple[dict[str, str | int], int]] = [
    ({}, 422),
    ({"device": "DROP TABLE"}, 422),
    ({"device": "dev-1", "limit": 0}, 422),
    ({"device": "dev-1", "limit": 5001}, 422),
    ({"device": "dev-1", "limit": "many"}, 422),
    ({"device": "dev-1", "since": "yesterday"}, 422),
    ({"device": "dev-1", "after": "garbage"}, 400),
    ({"device": "dev-1", "after": "x" * 101}, 422),
]


def test_bad_read_params_get_4xx(cloud: Cloud) -> None:
    for params, status in BAD_READ_PARAMS:
        r = cloud.client.get("/api/v1/readings", params=params)
        assert r.status_code == status, f"{params}: {r.status_code} {r.text}"


def test_probes_and_correlation_id(cloud: Cloud) -> None:
    assert cloud.client.get("/healthz").json() == {"status": "ok"}
    assert cloud.client.get("/readyz").status_code == 200
    echoed = cloud.client.get("/healthz", headers={"X-Correlation-ID": "req-42"})
    assert echoed.headers["X-Correlation-ID"] == "req-42"
    made = cloud.client.get("/healthz", headers={"X-Correlation-ID": "bad id\twith\ttabs"})
    assert len(made.headers["X-Correlation-ID"]) == 32  # replaced by a fresh uuid4 hex
    assert cloud.client.get("/nowhere").status_code == 404
    assert 'route="unmatched",status="404"' in cloud.client.get("/metrics").text


def test_database_loss_is_503_retryable(cloud: Cloud, pg_cluster_dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(cloud.dsn)["dbname"]
    with psycopg.connect(pg_cluster_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    assert cloud.client.get("/readyz").status_code == 503
    r = cloud.post(body(1))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "5"


@pytest.fixture
def pg_cluster_dsn(pg_dsn: str) -> str:
    """The superuser DSN of the cluster holding ``pg_dsn`` (to drop the database under test)."""
    return pg_dsn.rsplit("dbname=", 1)[0] + "dbname=postgres"


@pytest.mark.slow
def test_served_over_real_http(pg_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_dsn) as conn:
        migrate(pg_dsn)
        token = create_gateway(conn, "gw-1")
        viewer = create_user(conn, "viewer", "viewer").key
    port = free_port()
    log_path = tmp_path / "cloud.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud", "serve", "--port", str(port), "--dsn", pg_dsn],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "SMAINT_CLOUD_API__HOST": "127.0.0.1"},
        )
    try:
        wait_for_port(port, timeout_s=30)
        cid = uuid.uuid4().hex
        r = httpx.post(
            f"http://127.0.0.1:{port}{SYNC}",
            content=gzip.compress(body(1, 500)),
            headers={
                "Authorization": f"Bearer {token}", "Content-Encoding": "gzip",
                "Content-Type": "application/json", "X-Correlation-ID": cid,
            },
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["readings_inserted"] == 500
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/stats").status_code == 401
        stats = httpx.get(f"http://127.0.0.1:{port}/api/v1/stats",
                          headers={"Authorization": f"Bearer {viewer}"})
        assert stats.json()["readings"] == 500
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
        assert proc.wait(timeout=10) in {0, -15}
    logged = log_path.read_text()
    assert "Application shutdown complete" in logged
    assert f"[{cid}] POST {SYNC} -> 200" in logged
    assert f"[{cid}] applied batch gw-1/1" in logged


def test_cli_gateway_and_migrate(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--dsn", pg_dsn]) == 0
    assert "0001_init.sql" in capsys.readouterr().out
    assert main(["gateway", "add", "gw-9", "--dsn", pg_dsn]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(token) >= 40
    assert main(["gateway", "revoke", "gw-9", "--dsn", pg_dsn]) == 0
    assert main(["gateway", "revoke", "nobody", "--dsn", pg_dsn]) == 1
    assert main(["gateway", "add", "Bad Id", "--dsn", pg_dsn]) == 1
    assert "must match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMAINT_CLOUD_API__PORT", "9001")
    assert load_settings().api.port == 9001
    assert load_settings(api={"port": 9002}).api.port == 9002  # CLI flags win
    monkeypatch.setenv("SMAINT_CLOUD_ENV", "production")
    with pytest.raises(ValidationError, match="SMAINT_CLOUD_DB__DSN"):
        load_settings()  # the demo's passwordless DSN is refused in production
    prod = load_settings(db={"dsn": "host=db user=smaint password=s3cret dbname=smaint"},
                         public_url="https://cloud.example")
    assert create_app(prod).docs_url is None
    with pytest.raises(ValidationError, match="pool_max"):
        load_settings(db={"dsn": "host=db", "pool_min": 5, "pool_max": 2})


def test_openapi_documents_the_api(cloud: Cloud) -> None:
    paths = cloud.client.get("/openapi.json").json()["paths"]
    assert {SYNC, "/api/v1/readings", "/api/v1/devices", "/api/v1/stats"} <= set(paths)
