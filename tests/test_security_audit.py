"""Issue 13, audit: every admin action through the API and the CLI leaves an audit entry
naming who did it (rollouts, alerts and orders have their own audited tests)."""

from __future__ import annotations

import psycopg
import pytest

from cloud.cli import main
from tests.fixtures.cloud import Biz


def _log(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT actor, action, entity_id FROM audit_log ORDER BY audit_id")]


def test_security_every_admin_action_is_in_the_audit_log(biz: Biz) -> None:
    before = len(_log(biz.dsn))
    done = [
        biz.send("POST", "admin", "/api/v1/users", {"name": "dora", "role": "viewer"}),
        biz.send("PATCH", "admin", "/api/v1/users/dora", {"role": "operator"}),
        biz.send("POST", "admin", "/api/v1/users/dora/keys"),
        biz.send("PUT", "admin", "/api/v1/users/dora/password", {"password": "dora's password"}),
        biz.send("PUT", "admin", "/api/v1/gateways/gw-1/config",
                 {"scoring.threshold": 5.0}),
        biz.send("POST", "admin", "/api/v1/gateways/gw-9/enrolment"),
        biz.send("POST", "admin", "/api/v1/gateways/gw-1/rotation"),
    ]
    assert [r.status_code for r in done] == [201, 200, 201, 204, 200, 201, 202], [
        r.text for r in done]
    key_id = done[2].json()["key_id"]
    assert biz.send("DELETE", "admin", f"/api/v1/users/dora/keys/{key_id}").status_code == 204
    assert _log(biz.dsn)[before:] == [
        ("admin", "user.create", "dora"), ("admin", "user.role", "dora"),
        ("admin", "user.key_issue", "dora"), ("admin", "user.password_set", "dora"),
        ("admin", "gateway.config", "gw-1"), ("admin", "gateway.enrolment_issue", "gw-9"),
        ("admin", "gateway.rotate_request", "gw-1"), ("admin", "user.key_revoke", "dora"),
    ]


def test_security_cli_admin_actions_are_in_the_audit_log(
        biz: Biz, capsys: pytest.CaptureFixture[str]) -> None:
    before = len(_log(biz.dsn))
    for argv in (["gateway", "add", "gw-7"], ["gateway", "enrol", "gw-8"],
                 ["gateway", "rotate", "gw-7"], ["gateway", "revoke", "gw-7"],
                 ["user", "add", "erin", "--role", "viewer"], ["user", "key", "erin"]):
        assert main([*argv, "--dsn", biz.dsn]) == 0
    capsys.readouterr()
    actions = [(actor, action) for actor, action, _ in _log(biz.dsn)[before:]]
    assert actions == [
        ("cli", "gateway.token_issue"), ("cli", "gateway.enrolment_issue"),
        ("cli", "gateway.rotate_request"), ("cli", "gateway.revoke"),
        ("cli", "user.create"), ("cli", "user.key_issue"),
    ]
