"""Issue 13, cloud access: bad gateway tokens throttled, X-Forwarded-For believed only from
named proxies, security headers, CORS closed by default, production mode refusing demo
secrets and plain HTTP. Real PostgreSQL; the forwarded-for case against a real
``python -m cloud serve`` process (uvicorn's own proxy-header handling is what it checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cloud.api.app import create_app
from cloud.api.security_headers import CSP
from cloud.settings import CloudSettings, load_settings
from devstack.ports import free_port, wait_for_port
from tests.fixtures.cloud import prepare_db, running_biz

SYNC = "/api/v1/sync/batches"
GOOD_DSN = "host=db user=smaint password=a-long-chosen-one dbname=smaint"


def _bad_token_codes(post: Callable[[dict[str, str]], httpx.Response], n: int) -> list[int]:
    return [post({"Authorization": f"Bearer guess-{i}"}).status_code for i in range(n)]


def test_security_bad_gateway_tokens_are_throttled(pg_dsn: str) -> None:
    with running_biz(pg_dsn, api={"auth_failures_per_minute": 5}) as biz:
        def post(h: dict[str, str]) -> httpx.Response:
            return cast(httpx.Response, biz.client.post(SYNC, content=b"{}", headers={
                "Content-Type": "application/json", **h}))

        codes = _bad_token_codes(post, 8)
        assert codes[:5] == [401] * 5
        assert codes[5:] == [429] * 3
        refused = post({"Authorization": "Bearer guess-x"})
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # While throttled, even a right token from that address is not checked: a guesser
        # learns nothing more this minute.
        right = post({"Authorization": f"Bearer {biz.gateway_tokens['gw-1']}"})
        assert right.status_code == 429


@contextmanager
def _cloud_process(pg_dsn: str, tmp_path: Path, **env: str) -> Iterator[str]:
    port = free_port()
    with (tmp_path / f"cloud-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud", "serve", "--port", str(port), "--dsn", pg_dsn],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "SMAINT_CLOUD_API__HOST": "127.0.0.1",
                 "SMAINT_CLOUD_JOBS__WORKER_ENABLED": "false", **env})
    try:
        wait_for_port(port, timeout_s=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_security_rotating_forwarded_for_does_not_escape_the_throttle(
        pg_dsn: str, tmp_path: Path) -> None:
    prepare_db(pg_dsn)
    limit = {"SMAINT_CLOUD_API__AUTH_FAILURES_PER_MINUTE": "4"}
    with _cloud_process(pg_dsn, tmp_path, **limit) as base:
        def key_guess(h: dict[str, str]) -> httpx.Response:
            return httpx.get(f"{base}/api/v1/me", headers=h, timeout=10)

        # No proxy named: every request counts for the peer, whatever it claims to forward.
        codes = [key_guess({"Authorization": f"Bearer smk_{i}",
                            "X-Forwarded-For": f"198.51.100.{i}"}).status_code
                 for i in range(7)]
        assert codes == [401] * 4 + [429] * 3
    with _cloud_process(pg_dsn, tmp_path, **limit,
                        SMAINT_CLOUD_API__TRUSTED_PROXIES='["127.0.0.1"]') as base:
        def via_proxy(client: str, n: int) -> list[int]:
            return [httpx.get(f"{base}/api/v1/me", timeout=10, headers={
                "Authorization": "Bearer smk_guess",
                "X-Forwarded-For": f"{client}, 127.0.0.1"}).status_code for _ in range(n)]

        # Behind the named proxy the client it forwards is counted, one budget per client.
        assert via_proxy("203.0.113.7", 6) == [401] * 4 + [429] * 2
        assert via_proxy("203.0.113.8", 1) == [401]


def test_security_headers_on_every_response_and_hsts_only_behind_https(pg_dsn: str) -> None:
    with running_biz(pg_dsn) as biz:
        for resp in (biz.client.get("/healthz"), biz.get("viewer", "/api/v1/stats"),
                     biz.client.get("/api/v1/stats"), biz.client.get("/nowhere")):
            assert resp.headers["content-security-policy"] == CSP
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["x-frame-options"] == "DENY"
            assert resp.headers["referrer-policy"] == "no-referrer"
            assert "strict-transport-security" not in resp.headers
    with _app(pg_dsn, public_url="https://cloud.example") as client:
        assert client.get("/healthz").headers["strict-transport-security"].startswith(
            "max-age=")


@contextmanager
def _app(pg_dsn: str, **settings: Any) -> Iterator[TestClient]:
    """Another app on the same database (its users and gateways exist already)."""
    cfg = CloudSettings(db={"dsn": pg_dsn}, jobs={"worker_enabled": False}, **settings)
    with TestClient(create_app(cfg)) as client:
        yield client


def _preflight(client: object, origin: str) -> httpx.Response:
    return client.options("/api/v1/stats", headers={  # type: ignore[attr-defined, no-any-return]
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})


def test_security_cors_is_closed_by_default_and_opens_to_named_origins(pg_dsn: str) -> None:
    with running_biz(pg_dsn) as biz:
        pre = _preflight(biz.client, "https://evil.example")
        assert "access-control-allow-origin" not in pre.headers
        got = biz.client.get("/api/v1/stats", headers={**biz.auth("viewer"),
                                                       "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in got.headers
    with _app(pg_dsn, api={"cors_origins": ["https://ops.example"]}) as client:
        ok = _preflight(client, "https://ops.example")
        assert ok.headers["access-control-allow-origin"] == "https://ops.example"
        assert "access-control-allow-origin" not in _preflight(
            client, "https://evil.example").headers


def test_security_production_refuses_placeholders_and_plain_http(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMAINT_CLOUD_ENV", "production")
    with pytest.raises(ValidationError, match="SMAINT_CLOUD_PUBLIC_URL"):
        load_settings(db={"dsn": GOOD_DSN})
    with pytest.raises(ValidationError, match="SMAINT_CLOUD_PUBLIC_URL"):
        load_settings(db={"dsn": GOOD_DSN}, public_url="http://cloud.example")
    https = {"public_url": "https://cloud.example"}
    with pytest.raises(ValidationError, match="database password"):
        load_settings(db={"dsn": "host=db user=smaint password=changeme dbname=x"}, **https)
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET is a placeholder"):
        load_settings(db={"dsn": GOOD_DSN}, notify={
            "webhook_urls": ["https://hooks.example/x"], "webhook_secret": "changeme"}, **https)
    with pytest.raises(ValidationError, match="not '\\*'"):
        load_settings(db={"dsn": GOOD_DSN}, api={"cors_origins": ["*"]}, **https)
    assert load_settings(db={"dsn": GOOD_DSN}, **https).served_over_https


def test_security_production_serve_exits_with_the_reason(
        pg_dsn: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cloud", "serve", "--port", str(free_port()), "--dsn", GOOD_DSN],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SMAINT_CLOUD_ENV": "production"})
    assert proc.returncode == 2
    assert "production mode refuses to start" in proc.stderr
    assert "SMAINT_CLOUD_PUBLIC_URL" in proc.stderr
