"""Desired gateway config end to end: an admin sets it in the real cloud (audited), the
gateway's sync carries it down, the gateway applies it at run time, persists it across a
restart and reports it back, where GET .../config shows it applied."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from devstack.mosquitto import PrivateMosquitto
from edge.alert_lifecycle import AlertTracker
from edge.pipeline import Pipeline
from edge.score import RuleScorer
from edge.service import Gateway
from edge.settings import GatewaySettings
from edge.sync import Uploader
from edge.validate import Incoming
from shared import topics
from shared.codec import decode_config, encode
from shared.schemas import DesiredState, DeviceConfig
from tests.fixtures.cloud import Biz
from tests.fixtures.gateway import ingest_through_pipeline

GW = "gw-1"
CONFIG = f"/api/v1/gateways/{GW}/config"
CONFIG_TOPICS = f"{topics.ROOT}/dev/+/config"


def fixture(broker: PrivateMosquitto) -> dict[str, Any]:
    """aiomqtt login of the devstack broker's fixture account."""
    username, password = broker.fixture_login()
    return {"username": username, "password": password}


def settings(biz: Biz, tmp: Path) -> GatewaySettings:
    """gw-1 with a database in ``tmp``, syncing to the biz cloud."""
    return GatewaySettings(
        gateway_id=GW, storage={"path": str(tmp / "gw.db")},
        scoring={"warmup": 4, "models_dir": str(tmp / "models")},
        sync={"cloud_url": "http://cloud", "token": biz.gateway_tokens[GW],
              "retry_attempts": 2, "retry_max_s": 0.01},
        alerts={"publish": False})


@pytest.fixture
def gateways(biz: Biz, tmp_path: Path) -> Iterator[list[Gateway]]:
    """Gateways built on tmp_path (not running: the test drives their sync); closed after."""
    (tmp_path / "models").mkdir()
    made: list[Gateway] = []
    yield made
    for gw in made:
        gw.store.close()


def start(biz: Biz, tmp: Path, made: list[Gateway]) -> Gateway:
    """A gateway (as at start-up) whose sync posts straight into the running cloud app."""
    gw = Gateway(settings(biz, tmp))
    made.append(gw)
    return gw


async def sync_round(biz: Biz, gw: Gateway, seqs: range) -> None:
    """Store a few readings and upload them with the gateway's own state and desired hooks."""
    ingest_through_pipeline(gw.store, gw.settings, seqs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=biz.client.app),
                                 base_url="http://cloud") as client:
        up = Uploader(gw.settings, gw.outbox, client, state=gw.actual_state,
                      on_desired=gw.on_desired)
        for _ in range(20):
            result = await up.sync_once()
            if result.outcome == "idle":
                return
            assert result.outcome == "acked", result
    raise AssertionError("outbox never idle")


async def test_admin_config_is_applied_by_the_gateway_reported_and_audited(
    biz: Biz, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(biz, tmp_path, gateways)
    assert (gw.fallback.threshold, gw.alerts.open_after) == (1.0, 1)
    put = biz.send("PUT", "admin", CONFIG, {"scoring.threshold": 9.0, "alerts.open_after": 5})
    assert put.status_code == 200, put.text
    version = put.json()["config_version"]
    assert version == 1
    assert put.json()["in_sync"] is False

    await sync_round(biz, gw, range(0, 10))  # the ack carries the desired config
    assert (gw.fallback.threshold, gw.alerts.threshold, gw.alerts.open_after) == (9.0, 9.0, 5)
    assert gw.actual_state().config_version == version
    await sync_round(biz, gw, range(10, 20))  # the next upload reports it applied

    shown = biz.get("viewer", CONFIG).json()
    assert shown["desired"] == {"scoring.threshold": 9.0, "alerts.open_after": 5}
    assert shown["reported_version"] == version
    assert shown["applied"] == {"scoring.threshold": 9.0, "alerts.open_after": 5}
    assert shown["refused"] == {}
    assert shown["in_sync"] is True

    trail = biz.get("admin", "/api/v1/audit", entity="gateway").json()
    change = [e for e in trail if e["action"] == "gateway.config"]
    assert len(change) == 1
    assert change[0]["actor"] == "admin"
    assert change[0]["entity_id"] == GW
    assert change[0]["before"] == {"config_version": 0, "config": {}}
    assert change[0]["after"] == {"config_version": 1, "config": shown["desired"]}


def test_unknown_setting_is_refused_by_name(biz: Biz) -> None:
    resp = biz.send("PUT", "admin", CONFIG, {"scoring.threshold": 7.0, "sampling.turbo": 1})
    assert resp.status_code == 422
    assert "sampling.turbo" in resp.json()["detail"]
    out_of_range = biz.send("PUT", "admin", CONFIG, {"alerts.open_after": 0})
    assert out_of_range.status_code == 422
    assert "alerts.open_after" in out_of_range.json()["detail"]
    # Nothing stored, no version bumped.
    assert biz.get("viewer", CONFIG).json()["config_version"] == 0


def test_a_viewer_cannot_change_the_config(biz: Biz) -> None:
    assert biz.send("PUT", "viewer", CONFIG, {"scoring.threshold": 7.0}).status_code == 403
    assert biz.send("PUT", "operator", CONFIG, {"scoring.threshold": 7.0}).status_code == 403
    assert biz.get("viewer", CONFIG).status_code == 200
    assert biz.get("viewer", "/api/v1/gateways/gw-none/config").status_code == 404


async def test_a_restarted_gateway_keeps_the_applied_config(
    biz: Biz, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(biz, tmp_path, gateways)
    biz.send("PUT", "admin", CONFIG, {"scoring.threshold": 9.0, "alerts.resolve_after": 7,
                                      "sync.interval_s": 0.5}).raise_for_status()
    await sync_round(biz, gw, range(0, 10))
    assert gw.uploader.interval_s == 0.5
    gw.store.close()
    gateways.remove(gw)

    again = start(biz, tmp_path, gateways)  # same database, no sync yet
    assert (again.fallback.threshold, again.alerts.threshold) == (9.0, 9.0)
    assert again.alerts.resolve_after == 7
    assert again.uploader.interval_s == 0.5
    state = again.actual_state()
    assert state.config_version == 1
    assert state.config == {"scoring.threshold": 9.0, "alerts.resolve_after": 7,
                            "sync.interval_s": 0.5}


def test_a_value_the_gateway_cannot_take_is_refused_and_the_rest_applied(
    biz: Biz, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(biz, tmp_path, gateways)
    # A cloud of another version may send what this gateway's list does not allow.
    gw.on_desired(DesiredState(config_version=4, config={
        "scoring.threshold": -1.0, "alerts.open_after": 4, "future.knob": True}))
    state = gw.actual_state()
    assert state.config_version == 4
    assert state.config == {"alerts.open_after": 4}
    assert set(state.config_refused) == {"scoring.threshold", "future.knob"}
    assert "greater than 0" in state.config_refused["scoring.threshold"]
    assert (gw.fallback.threshold, gw.alerts.open_after) == (1.0, 4)
    # An older version is not applied over a newer one.
    gw.on_desired(DesiredState(config_version=3, config={"alerts.open_after": 9}))
    assert gw.alerts.open_after == 4
    # A setting the cloud no longer names goes back to the local value.
    gw.on_desired(DesiredState(config_version=5, config={}))
    assert gw.alerts.open_after == 1


def ingest_device(gw: Gateway, device: str) -> None:
    """One reading of ``device`` through the real pipeline: the gateway knows it from then on."""
    scorer = RuleScorer(4, 1.0)
    pipe = Pipeline(gw.store, scorer, AlertTracker(1, 5, 1.0), gw.settings.gateway_id)
    payload = {"v": 1, "device": device, "boot": "0123abcd", "seq": 0,
               "ts_ms": 1_700_000_000_000, "uptime_ms": 0, "synced": True, "type": "motor",
               "metrics": {"temperature_c": 50.0, "vibration_rms_g": 1.0, "current_a": 5.0}}
    pipe.handle([Incoming(topics.telemetry(device), json.dumps(payload).encode(), 1)])


async def configs_until(messages: aiomqtt.Client, seen: dict[str, aiomqtt.Message],
                        done: set[str] | None = None, *, payload: bytes) -> None:
    """Collect config messages into ``seen`` until every device of ``done`` has ``payload``."""
    async with asyncio.timeout(60):  # a hang guard only: the condition is what is awaited
        async for msg in messages.messages:
            device = str(msg.topic).split("/")[3]
            seen[device] = msg
            if done is not None and all(
                    d in seen and seen[d].payload == payload for d in done):
                return


async def test_sample_interval_is_published_as_each_devices_retained_config(
    biz: Biz, tmp_path: Path, gateways: list[Gateway], broker: PrivateMosquitto
) -> None:
    s = settings(biz, tmp_path).model_copy(update={"mqtt": settings(biz, tmp_path).mqtt
                                                   .model_copy(update=broker.gateway_mqtt())})
    gw = Gateway(s)
    gateways.append(gw)
    gw.device_config.refresh_s = 0.05  # devices that appear later are looked up this often
    ingest_device(gw, "cfg-dev-a")
    stop = asyncio.Event()
    publisher = asyncio.create_task(gw.device_config.run(stop))
    want = encode(DeviceConfig(v=1, interval_ms=5000))  # as the firmware's parser reads it
    async with aiomqtt.Client(broker.host, broker.port, identifier="cfg-watch",
                              **fixture(broker)) as watch:
        await watch.subscribe(CONFIG_TOPICS, qos=1)
        put = biz.send("PUT", "admin", CONFIG, {"devices.interval_ms": 5000})
        assert put.status_code == 200, put.text
        await sync_round(biz, gw, range(0, 10))  # the ack carries it; sync-dev is known too
        seen: dict[str, aiomqtt.Message] = {}
        await configs_until(watch, seen, {"cfg-dev-a", "sync-dev"}, payload=want)
        payload = seen["cfg-dev-a"].payload
        assert isinstance(payload, bytes)
        assert decode_config(payload, "motor").interval_ms == 5000

        # A device that appears later gets it as well.
        ingest_device(gw, "cfg-dev-b")
        await configs_until(watch, seen, {"cfg-dev-b"}, payload=want)

        # Retained: a subscriber that comes later gets every device's config from the broker.
        async with aiomqtt.Client(broker.host, broker.port, identifier="cfg-late",
                                  **fixture(broker)) as late:
            await late.subscribe(CONFIG_TOPICS, qos=1)
            retained: dict[str, aiomqtt.Message] = {}
            await configs_until(late, retained, {"cfg-dev-a", "cfg-dev-b", "sync-dev"},
                                payload=want)
            assert all(m.retain for m in retained.values())

        await sync_round(biz, gw, range(10, 20))  # reports it applied
        shown = biz.get("viewer", CONFIG).json()
        assert shown["applied"] == {"devices.interval_ms": 5000}
        assert shown["in_sync"] is True

        # Removed: an empty retained message on each, the firmware's "profile defaults".
        biz.send("PUT", "admin", CONFIG, {"devices.interval_ms": None}).raise_for_status()
        await sync_round(biz, gw, range(20, 30))
        await configs_until(watch, seen, {"cfg-dev-a", "cfg-dev-b", "sync-dev"}, payload=b"")
        assert decode_config(b"", "motor").interval_ms is None

    # Nothing retained any more: a new subscriber's first message is a marker sent after its
    # subscription, not a stored config (the broker sends retained ones right on subscribing).
    async with aiomqtt.Client(broker.host, broker.port, identifier="cfg-after",
                              **fixture(broker)) as after:
        await after.subscribe(CONFIG_TOPICS, qos=1)
        await after.publish(topics.config("cfg-marker"), b"marker", qos=1)
        first = await anext(after.messages)
        assert (str(first.topic), first.payload) == (topics.config("cfg-marker"), b"marker")
    stop.set()
    await publisher
    assert gw.device_config.published == 6


async def test_an_idle_gateway_reports_in_with_a_heartbeat_and_gets_the_cloud_decisions(
    biz: Biz, tmp_path: Path, gateways: list[Gateway]
) -> None:
    # No device publishes: without a heartbeat the gateway would never reach the cloud, which
    # would show it offline and never hand it the config below.
    gw = start(biz, tmp_path, gateways)
    put = biz.send("PUT", "admin", CONFIG, {"alerts.open_after": 5})
    assert put.status_code == 200, put.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=biz.client.app),
                                 base_url="http://cloud") as client:
        quiet = Uploader(gw.settings, gw.outbox, client, state=gw.actual_state,
                         on_desired=gw.on_desired)
        assert (await quiet.sync_once()).outcome == "idle"  # started now: no heartbeat due
        assert gw.outbox.backlog() == 0

        due = gw.settings.model_copy(update={"sync": gw.settings.sync.model_copy(
            update={"heartbeat_s": 0.001})})
        up = Uploader(due, gw.outbox, client, state=gw.actual_state, on_desired=gw.on_desired)
        result = await up.sync_once()
        for _ in range(100):  # due a millisecond after the start
            if result.outcome != "idle":
                break
            await asyncio.sleep(0.005)
            result = await up.sync_once()
    assert result.outcome == "acked", result
    assert gw.alerts.open_after == 5  # the cloud's decision came down with the answer
    assert gw.store.conn.execute(
        "SELECT count(*) FROM sync_batches WHERE n_readings = 0").fetchone() == (1,)
    fleet = {g["gateway"]: g for g in biz.get("viewer", "/api/v1/gateways").json()}
    assert fleet[GW]["online"] is True
