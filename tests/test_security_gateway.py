"""Issue 13, gateway: acknowledging an alert needs the local API token and a JSON body, and no
cross-site page can do it, on a bare gateway (``python -m edge run``, no panel) as with the panel
(tests/test_panel_browser.py checks the composed app)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.settings import GatewaySettings
from tests.fixtures.gateway import running_gateway

ACK = "/api/alerts/0000dead/ack"  # no such alert: an accepted request answers 404


def _settings(broker: PrivateMosquitto, tmp_path: Path, **http: str) -> GatewaySettings:
    return GatewaySettings(
        gateway_id="gw-sec", mqtt=broker.gateway_mqtt(), storage={"path": str(tmp_path / "gw.db")},
        http={"port": free_port(), **http}, panel={"enabled": False})


async def test_security_gateway_ack_without_token_is_refused(
        broker: PrivateMosquitto, tmp_path: Path) -> None:
    async with running_gateway(_settings(broker, tmp_path)) as gw:
        url = gw.base_url + ACK
        assert (await gw.http.post(url, json={})).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token", "Content-Type": "application/json"}
        assert (await gw.http.post(url, headers=wrong)).status_code == 401
        assert (await gw.http.post(url, headers=gw.api_headers)).status_code == 404
    # Made at first start, readable by the gateway's user only.
    token_file = tmp_path / "api-token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert len(token_file.read_text().strip()) >= 40


async def test_security_gateway_cross_site_text_plain_post_is_refused(
        broker: PrivateMosquitto, tmp_path: Path) -> None:
    """What a hostile page can send without a CORS preflight: a text/plain form POST."""
    async with running_gateway(_settings(broker, tmp_path, api_token="provisioned-token-1234"
                                         )) as gw:
        url = gw.base_url + ACK
        token = {"Authorization": "Bearer provisioned-token-1234"}
        simple = {"Content-Type": "text/plain"}
        evil = {"Origin": "http://evil.example"}
        # The browser form: no token, text/plain, another origin.
        assert (await gw.http.post(url, headers={**simple, **evil}, content=b"x")
                ).status_code == 403
        # Cross-site marked by Fetch metadata only (no Origin): refused as well.
        assert (await gw.http.post(url, headers={**simple, "Sec-Fetch-Site": "cross-site"},
                                   content=b"x")).status_code == 403
        # Even with the token, a text/plain body is refused: only JSON changes state.
        assert (await gw.http.post(url, headers={**token, **simple}, content=b"{}")
                ).status_code == 415
        # And even with token and JSON, another origin is refused.
        assert (await gw.http.post(url, headers={**token, **evil}, json={})).status_code == 403
        assert (await gw.http.post(url, headers=token, json={})).status_code == 404
        # Reading stays open: health and status from any page.
        assert (await gw.http.get(f"{gw.base_url}/healthz", headers=evil)).status_code == 200
        # The provisioned token wins: no token file is made.
        assert not (tmp_path / "api-token").exists()


async def test_security_gateway_token_file_survives_a_restart(
        broker: PrivateMosquitto, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)
    async with running_gateway(settings) as gw:
        first = gw.api_headers
    async with running_gateway(settings.model_copy(update={"http": settings.http.model_copy(
            update={"port": free_port()})})) as gw:
        assert gw.api_headers == first
        resp = await gw.http.post(gw.base_url + ACK, headers=first)
        assert resp.status_code == 404
