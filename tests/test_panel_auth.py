"""The panel's password (hashing, provisioning, `smaint panel`) and its cross-site check."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from shared.origin import SameOriginOnly, same_origin
from ui.panel import cli
from ui.panel.auth import PanelAuth, PanelAuthError, check_hash, hash_password, verify_password


def test_a_hash_checks_its_password_only_and_differs_each_time() -> None:
    a, b = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert a != b  # a fresh salt each time
    assert verify_password("s3cret-pass", a)
    assert verify_password("s3cret-pass", b)
    assert not verify_password("s3cret-pasS", a)


@pytest.mark.parametrize("text", ["plain", "scrypt$16384$8$1$!!$!!", "bcrypt$x$y$z$a$b",
                                  "scrypt$3$8$1$c2FsdA==$ZGlnZXN0ZGlnZXN0ZGlnZXN0"])
def test_a_malformed_provisioned_hash_stops_the_start_with_how_to_make_one(
        text: str, tmp_path: Path) -> None:
    with pytest.raises(PanelAuthError, match="hash"):
        PanelAuth(tmp_path / "pw", provisioned_hash=text)


def test_a_provisioned_hash_needs_no_setup_code(tmp_path: Path) -> None:
    auth = PanelAuth(tmp_path / "pw", provisioned_hash=hash_password("provisioned!"))
    auth.prepare()
    assert auth.configured
    assert not auth.setup_code_file.exists()
    assert auth.check("provisioned!")
    with pytest.raises(PanelAuthError, match="set already"):
        auth.set_first_password("whatever", "another password")


def test_first_start_refuses_a_short_password_and_keeps_the_code(tmp_path: Path) -> None:
    auth = PanelAuth(tmp_path / "pw")
    auth.prepare()
    code = auth.setup_code_file.read_text().strip()
    assert oct(auth.setup_code_file.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(PanelAuthError, match="at least 8"):
        auth.set_first_password(code, "short")
    assert auth.setup_code_file.exists()
    auth.set_first_password(code, "long enough")
    assert auth.check("long enough")


def test_sessions_end_when_they_expire_or_on_sign_out(tmp_path: Path) -> None:
    auth = PanelAuth(tmp_path / "pw", session_s=-1)  # expired as soon as made
    auth.sign_in("b1")
    assert not auth.signed_in("b1")
    auth.session_s = 3600
    auth.sign_in("b2")
    assert auth.signed_in("b2")
    assert not auth.signed_in(None)
    auth.sign_out("b2")
    assert not auth.signed_in("b2")


def test_smaint_panel_hash_and_set_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin 123\n"))
    assert cli.main(["hash-password", "--stdin"]) == 0
    printed = capsys.readouterr().out.strip()
    check_hash(printed)
    assert verify_password("from stdin 123", printed)

    monkeypatch.setenv("SMAINT_GATEWAY_STORAGE__PATH", str(tmp_path / "gw.db"))
    (tmp_path / "panel-password.setup-code").write_text("abcd1234\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("a forgotten one\n"))
    assert cli.main(["set-password", "--stdin"]) == 0
    stored = (tmp_path / "panel-password").read_text().strip()
    assert verify_password("a forgotten one", stored)
    assert not (tmp_path / "panel-password.setup-code").exists()

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["set-password", "--stdin"]) == 2


def _app() -> TestClient:
    async def ok(_: Request) -> PlainTextResponse:
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/act", ok, methods=["GET", "POST"])])
    return TestClient(SameOriginOnly(app), base_url="http://gw.local:8080")


def test_state_changing_requests_from_another_origin_are_refused() -> None:
    client = _app()
    assert client.post("/act", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/act", headers={"Origin": "http://gw.local:8081"}).status_code == 403
    assert client.post("/act", headers={"Origin": "null"}).status_code == 403
    assert client.post("/act", headers={"Origin": "http://gw.local:8080"}).text == "done"
    assert client.post("/act").text == "done"  # no Origin: not a browser's cross-site request
    assert client.get("/act", headers={"Origin": "http://evil.example"}).text == "done"


_HOST = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}(:[0-9]{1,5})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(_HOST, _HOST, st.sampled_from(["http", "https"]))
def test_an_origin_is_the_same_only_for_the_host_the_request_went_to(
        host: str, other: str, scheme: str) -> None:
    assert same_origin(f"{scheme}://{host}", host)
    assert same_origin(f"{scheme}://{host.upper()}", host)
    if other != host:
        assert not same_origin(f"{scheme}://{other}", host)
    assert not same_origin(f"ftp://{host}", host)
