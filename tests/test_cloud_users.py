"""Users, roles, API keys and database-backed rate limits (acceptance 2), on a real PostgreSQL.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.access.gateway_tokens import revoke_gateway
from cloud.api.app import create_app
from cloud.cli import main
from cloud.db.migrate import migrate
from cloud.settings import CloudSettings
from shared.schemas import SyncBatch
from tests.fixtures.cloud import Biz, running_biz
from tests.fixtures.factories import SYNC, T0, make_alert, make_reading, upload


def sync_body(gateway: str, seq: int) -> bytes:
    """A small valid SyncBatch from ``gateway`` as JSON."""
    batch = SyncBatch(gateway=gateway, batch_seq=seq, created_ms=T0,
                      readings=[make_reading(seq)])
    return batch.model_dump_json().encode()


def test_acceptance_2_gateway_tokens_and_roles(biz: Biz) -> None:
    gw1, gw2 = biz.gateway_tokens["gw-1"], biz.gateway_tokens["gw-2"]
    headers = {"Content-Type": "application/json"}
    # A gateway's token cannot write as another gateway.
    as_other = biz.client.post(SYNC, content=sync_body("gw-2", 1),
                               headers={**headers, "Authorization": f"Bearer {gw1}"})
    assert as_other.status_code == 403, as_other.text
    own = biz.client.post(SYNC, content=sync_body("gw-2", 1),
                          headers={**headers, "Authorization": f"Bearer {gw2}"})
    assert own.status_code == 200, own.text
    # A revoked token is refused.
    with psycopg.connect(biz.dsn) as conn:
        revoke_gateway(conn, "gw-2")
    revoked = biz.client.post(SYNC, content=sync_body("gw-2", 2),
                              headers={**headers, "Authorization": f"Bearer {gw2}"})
    assert revoked.status_code == 401
    # A viewer cannot resolve an alert; an operator can.
    upload(biz.dsn, [make_alert("a1b2c3d4")])
    path = "/api/v1/alerts/gw-1/a1b2c3d4/resolve"
    body = {"decision": "false_positive", "comment": "sensor cable loose"}
    denied = biz.send("POST", "viewer", path, body)
    assert denied.status_code == 403
    assert "operator" in denied.json()["detail"]
    assert biz.get("viewer", "/api/v1/alerts/gw-1/a1b2c3d4").json()["state"] == "open"
    assert biz.send("POST", "operator", path, body).json()["decision"] == "false_positive"
    # Keys and gateway tokens are separate: neither opens the other's endpoints.
    as_gateway = biz.client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {gw1}"})
    assert as_gateway.status_code == 401
    as_user = biz.client.post(SYNC, content=sync_body("gw-1", 3),
                              headers={**headers, **biz.auth("admin")})
    assert as_user.status_code == 401


def test_roles_keys_and_user_admin(biz: Biz) -> None:
    assert biz.client.get("/api/v1/alerts").status_code == 401
    assert biz.client.get("/api/v1/alerts").headers["WWW-Authenticate"] == "Bearer"
    assert biz.get("viewer", "/api/v1/me").json()["role"] == "viewer"
    assert biz.get("viewer", "/api/v1/users").status_code == 403
    assert biz.get("operator", "/api/v1/users").status_code == 403
    created = biz.send("POST", "admin", "/api/v1/users", {"name": "alice", "role": "viewer"})
    assert created.status_code == 201, created.text
    alice = created.json()
    assert alice["key"].startswith("smk_")
    alice_auth = {"Authorization": f"Bearer {alice['key']}"}
    assert biz.client.get("/api/v1/me", headers=alice_auth).json()["name"] == "alice"
    again = biz.send("POST", "admin", "/api/v1/users", {"name": "alice", "role": "admin"})
    assert again.status_code == 409
    # Promotion takes effect on the next request.
    assert biz.client.get("/api/v1/users", headers=alice_auth).status_code == 403
    patched = biz.send("PATCH", "admin", "/api/v1/users/alice", {"role": "admin"})
    assert patched.json()["role"] == "admin"
    assert biz.client.get("/api/v1/users", headers=alice_auth).status_code == 200
    # A second key, then the first revoked: only the second still works.
    second = biz.send("POST", "admin", "/api/v1/users/alice/keys").json()
    gone = biz.send("DELETE", "admin", f"/api/v1/users/alice/keys/{alice['key_id']}")
    assert gone.status_code == 204
    refused = biz.client.get("/api/v1/me", headers=alice_auth)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    me = biz.client.get("/api/v1/me", headers={"Authorization": f"Bearer {second['key']}"})
    assert me.json()["key_id"] == second["key_id"]
    users = {u["name"]: u for u in biz.get("admin", "/api/v1/users").json()}
    assert [k["revoked_at"] is not None for k in users["alice"]["keys"]] == [True, False]
    assert all("key" not in k for k in users["alice"]["keys"])  # never shown again
    actions = [e["action"] for e in biz.get("admin", "/api/v1/audit", entity="user",
                                            entity_id="alice").json()]
    assert actions == ["user.create", "user.role", "user.key_issue", "user.key_revoke"]
    with psycopg.connect(biz.dsn) as conn:
        stored = conn.execute("SELECT key_sha256 FROM api_keys").fetchall()
    assert all(len(bytes(row[0])) == 32 for row in stored)  # digests only, no keys


def _away_from_window_edge() -> None:
    # The counters are per wall-clock minute: start well inside one so the test's few
    # requests cannot straddle two windows.
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)


def test_rate_limit_is_shared_by_two_apps(pg_dsn: str) -> None:
    limits = {"rate_limit_per_minute": 3, "auth_failures_per_minute": 3}
    with running_biz(pg_dsn, api=limits) as a:
        cfg = CloudSettings(db={"dsn": pg_dsn}, jobs={"worker_enabled": False}, api=limits)
        with TestClient(create_app(cfg)) as b_client:
            _away_from_window_edge()
            key = a.auth("viewer")
            assert a.client.get("/api/v1/me", headers=key).status_code == 200
            assert a.client.get("/api/v1/me", headers=key).status_code == 200
            assert b_client.get("/api/v1/me", headers=key).status_code == 200
            refused = b_client.get("/api/v1/me", headers=key)
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert a.client.get("/api/v1/me", headers=key).status_code == 429
            # Another user has a budget of its own.
            assert a.client.get("/api/v1/me", headers=a.auth("admin")).status_code == 200
            # Failed authentication counts per client address: guessing keys is bounded.
            bad = {"Authorization": "Bearer smk_guess"}
            codes = [b_client.get("/api/v1/me", headers=bad).status_code for _ in range(5)]
            assert codes == [401, 401, 401, 429, 429]
        with psycopg.connect(pg_dsn) as conn:
            hits: dict[str, int] = dict(conn.execute(
                "SELECT principal, sum(hits) FROM rate_limit_windows GROUP BY 1").fetchall())
        # Once over the limit an address is refused before its key is checked, uncounted.
        assert hits["authfail:testclient"] == 4


def test_cli_user_commands(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    migrate(pg_dsn)
    assert main(["user", "add", "ops-admin", "--role", "admin", "--dsn", pg_dsn]) == 0
    out = capsys.readouterr()
    key = out.out.strip().splitlines()[-1]
    assert key.startswith("smk_")
    assert "ops-admin (admin)" in out.err
    assert main(["user", "add", "ops-admin", "--dsn", pg_dsn]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "add", "Bad Name", "--dsn", pg_dsn]) == 1
    assert main(["user", "key", "ops-admin", "--dsn", pg_dsn]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second.startswith("smk_")
    assert second != key
    assert main(["user", "revoke-key", "ops-admin", "1", "--dsn", pg_dsn]) == 0
    assert main(["user", "revoke-key", "ops-admin", "99", "--dsn", pg_dsn]) == 1
    capsys.readouterr()
    assert main(["user", "list", "--dsn", pg_dsn]) == 0
    listing = capsys.readouterr().out
    assert "ops-admin\tadmin\t1:smk_" in listing
    assert "(revoked)" in listing
