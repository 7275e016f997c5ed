"""Issue 13, console passwords: argon2id hashes, sign-in issuing expiring session keys,
throttling per user and per client address, the CLI. Real PostgreSQL, the real app."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.cli import main
from cloud.settings import CloudSettings
from tests.fixtures.cloud import Biz, prepare_db

PASSWORD = "correct horse battery"


@contextmanager
def _behind_proxy(dsn: str, failures: int) -> Iterator[TestClient]:
    """The app behind a trusted proxy at 127.0.0.1: X-Forwarded-For names each client."""
    prepare_db(dsn)
    cfg = CloudSettings(db={"dsn": dsn}, jobs={"worker_enabled": False},
                        api={"auth_failures_per_minute": failures,
                             "trusted_proxies": ["127.0.0.1"]})
    with TestClient(create_app(cfg), client=("127.0.0.1", 40000)) as client:
        yield client


def _sign_in(client: TestClient, name: str, password: str, address: str = "192.0.2.1"
             ) -> httpx.Response:
    return cast(httpx.Response, client.post(
        "/api/v1/sessions", json={"name": name, "password": password},
        headers={"X-Forwarded-For": address}))


def test_security_password_sign_in_issues_an_expiring_session_key(biz: Biz) -> None:
    put = biz.send("PUT", "admin", "/api/v1/users/operator/password", {"password": PASSWORD})
    assert put.status_code == 204, put.text
    with psycopg.connect(biz.dsn) as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE name = 'operator'").fetchone()
    assert row is not None
    assert row[0].startswith("$argon2id$")
    assert PASSWORD not in row[0]

    wrong = biz.client.post("/api/v1/sessions", json={"name": "operator", "password": "nope"})
    assert wrong.status_code == 401
    unknown = biz.client.post("/api/v1/sessions", json={"name": "ghost", "password": PASSWORD})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == wrong.json()["detail"]  # names are not revealed
    no_password = biz.client.post("/api/v1/sessions",
                                  json={"name": "viewer", "password": PASSWORD})
    assert no_password.status_code == 401  # a user without a password signs in by key only

    ok = biz.client.post("/api/v1/sessions", json={"name": "operator", "password": PASSWORD})
    assert ok.status_code == 201, ok.text
    session = {"Authorization": f"Bearer {ok.json()['key']}"}
    assert biz.client.get("/api/v1/me", headers=session).json()["name"] == "operator"
    # Signing out revokes it; a permanent key cannot be "signed out".
    assert biz.client.delete("/api/v1/sessions/current", headers=session).status_code == 204
    assert biz.client.get("/api/v1/me", headers=session).status_code == 401
    assert biz.client.delete("/api/v1/sessions/current",
                             headers=biz.auth("operator")).status_code == 409

    # A session ends by itself: move its end into the past as the clock would.
    again = biz.client.post("/api/v1/sessions", json={"name": "operator", "password": PASSWORD})
    key_id = again.json()["key_id"]
    with psycopg.connect(biz.dsn) as conn:
        conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second'"
                     " WHERE key_id = %s", (key_id,))
    expired = biz.client.get("/api/v1/me", headers={
        "Authorization": f"Bearer {again.json()['key']}"})
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]


def test_security_failed_sign_ins_are_throttled_per_user(pg_dsn: str) -> None:
    with _behind_proxy(pg_dsn, failures=3) as client:
        with psycopg.connect(pg_dsn) as conn:
            from cloud.access.passwords import set_password  # noqa: PLC0415

            set_password(conn, "operator", PASSWORD)
        # Each guess from another address: the per-address limit never trips, the user's does.
        codes = [_sign_in(client, "operator", f"guess {i}", f"198.51.100.{i}").status_code
                 for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # While throttled the right password is not even checked.
        assert _sign_in(client, "operator", PASSWORD, "198.51.100.99").status_code == 429


def test_security_failed_sign_ins_are_throttled_per_address(pg_dsn: str) -> None:
    with _behind_proxy(pg_dsn, failures=3) as client:
        # One address trying a different name each time: the address's limit trips.
        codes = [_sign_in(client, f"user-{i}", "guess", "203.0.113.5").status_code
                 for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        assert _sign_in(client, "user-9", "guess", "203.0.113.6").status_code == 401


def test_security_cli_sets_console_passwords(pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    prepare_db(pg_dsn)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["user", "add", "carol", "--role", "viewer", "--password", "--stdin",
                 "--dsn", pg_dsn]) == 0
    assert capsys.readouterr().out.strip().startswith("smk_")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "passwd", "carol", "--stdin", "--dsn", pg_dsn]) == 1
    assert "10 to 256 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert main(["user", "passwd", "carol", "--stdin", "--dsn", pg_dsn]) == 0
    with psycopg.connect(pg_dsn) as conn:
        from cloud.access.passwords import check_password  # noqa: PLC0415

        assert check_password(conn, "carol", "another long password")
        assert not check_password(conn, "carol", PASSWORD)
        actions = [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE entity_id = 'carol' ORDER BY audit_id")]
    assert actions == ["user.create", "user.password_set", "user.password_set"]


async def test_security_console_sign_ins_count_per_browser_behind_a_proxy(pg_dsn: str) -> None:
    """The console calls the API in process with the page request's X-Forwarded-For: behind
    a trusted proxy each browser has its own budget of failed sign-ins."""
    from ui.console.api import ApiError, CloudApi  # noqa: PLC0415

    with _behind_proxy(pg_dsn, failures=2) as client:
        api = CloudApi(client.app)

        async def attempt(browser: str, name: str = "ghost") -> int:
            try:
                await api.as_user("", "127.0.0.1", browser).sign_in(name, "guess")
            except ApiError as exc:
                return exc.status
            return 201

        tries = [await attempt("203.0.113.20", f"ghost-{i}") for i in range(4)]
        assert tries == [401, 401, 429, 429]
        assert await attempt("203.0.113.21") == 401  # another browser: its own budget
