"""SIMULATED scenarios end to end: panel or console request -> gateway -> MQTT -> simulated device.

Real parts throughout: Mosquitto, the simulator's paho devices, a running gateway, the cloud
app on PostgreSQL, the panel's and console's page code under NiceGUI's simulated user.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nicegui import ui
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.outbox import Outbox
from edge.scenarios import SimulationOffError
from edge.service import Gateway, run_gateway
from edge.settings import GatewaySettings
from edge.store import now_ms
from edge.sync import Uploader
from shared import topics
from shared.codec import decode_scenario, decode_telemetry, encode
from shared.exceptions import DecodeError
from shared.schemas import MAX_SCENARIO_SECONDS, SCENARIO_KINDS, DesiredState, ScenarioRequest
from simulator.faults import OFFSET_SPAN
from simulator.fleet import Fleet
from tests.fixtures.cloud import Biz, running_biz
from tests.fixtures.panel import PATIENT, feed, panel, panel_user, sign_in
from tests.fixtures.waiting import wait_until, wait_until_async
from tests.test_console_pages import console_user
from tests.test_console_pages import sign_in as console_sign_in
from tests.test_simulator import Collector

Message = tuple[str, bytes, bool]


def faults_of(fleet: Fleet) -> list[dict[str, Any]]:
    """The fleet's ground-truth fault log."""
    return cast(list[dict[str, Any]], fleet.faults())


def sim_readings(messages: list[Message], device: str) -> list[dict[str, Any]]:
    """The telemetry of ``device`` that carries ``"sim": true``."""
    docs = [json.loads(p) for d, p, _ in messages if d == device]
    return [doc for doc in docs if doc.get("sim") is True]


@pytest.fixture
def telemetry(broker: PrivateMosquitto) -> Iterator[Collector]:
    """A raw MQTT subscriber to every device's telemetry."""
    sub = Collector(broker, "", "telemetry")
    try:
        yield sub
    finally:
        sub.close()


def request_for(device: str, kind: str = "spike", seconds: float = 1.0) -> ScenarioRequest:
    """A ScenarioRequest as the gateway publishes it."""
    return ScenarioRequest(v=1, id=uuid.uuid4().hex, device=device, kind=kind,  # type: ignore[arg-type]
                           seconds=seconds, requested_by="test")


scenario_requests = st.builds(
    lambda i, d, k, sec, by: ScenarioRequest(v=1, id=i, device=d, kind=k, seconds=sec,
                                             requested_by=by),
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True), st.sampled_from(SCENARIO_KINDS),
    st.floats(0.001, MAX_SCENARIO_SECONDS), st.text(min_size=1, max_size=64).filter(
        lambda t: "\x00" not in t))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(scenario_requests)
def test_a_valid_scenario_request_round_trips(req: ScenarioRequest) -> None:
    assert decode_scenario(encode(req), topic_device=req.device) == req


@given(st.one_of(st.binary(max_size=256), json_values.map(lambda v: json.dumps(v).encode())),
       st.sampled_from(["id", "device", "kind", "seconds", "requested_by", "v", "extra"]),
       json_values)
def test_anything_else_on_the_simulate_topic_raises_only_decode_error(
        payload: bytes, key: str, value: object) -> None:
    valid = json.loads(encode(request_for("dev-1")))
    for candidate in (payload, json.dumps({**valid, key: value}).encode()):
        reason = "accepted"
        try:
            decode_scenario(candidate, topic_device="dev-1")
        except DecodeError as exc:  # any other exception fails the test
            reason = exc.reason
        assert reason  # a refusal always says why
    with pytest.raises(DecodeError, match="published on the topic of device"):
        decode_scenario(encode(request_for("dev-2")), topic_device="dev-1")


def publish_raw(broker: PrivateMosquitto, topic: str, payloads: list[bytes]) -> None:
    """Publish ``payloads`` on ``topic`` at QoS 1 (waits for each PUBACK), as a gateway would."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv311)
    client.username_pw_set(*broker.fixture_login())
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_simulated_device_plays_a_request_once_and_marks_its_readings_only_when_told(
        broker: PrivateMosquitto, telemetry: Collector) -> None:
    fleet = Fleet(broker.host, broker.port, 2, 20.0, "motor", seed=3, id_prefix="scn-sim-",
                  source="synthetic", login=broker.fixture_device_login)
    marked, plain = sorted(fleet.devices)
    fleet.devices[plain].mark_simulated = False  # a device told not to mark (the default marks)
    with fleet:
        wait_until(lambda: all(d.subscribed for d in fleet.devices.values()), 10,
                   "the devices subscribed to their simulate topics")
        wait_until(lambda: fleet.published > 20, 10, "readings before the scenario")
        req = request_for(marked)
        # A malformed request and one for another device are ignored; a redelivery plays once.
        publish_raw(broker, topics.simulate(marked), [
            b"{not json", encode(request_for(plain)), encode(req), encode(req)])
        publish_raw(broker, topics.simulate(plain), [encode(request_for(plain))])
        def played(device: str) -> dict[str, Any] | None:
            done = [f for f in faults_of(fleet) if f["device"] == device
                    and f["last_seq"] is not None
                    and f["last_seq"] - f["first_seq"] + 1 == f["samples"]]
            return done[0] if done else None

        wait_until(lambda: played(marked) is not None and played(plain) is not None, 10,
                   "both devices playing their scenario to its end")
        last = {d: played(d)["last_seq"] for d in (marked, plain)}  # type: ignore[index]
        assert telemetry.wait_for(lambda m: all(
            any(dev == d and json.loads(p)["seq"] >= last[d] for dev, p, _ in m)
            for d in last), 10)
    faults = faults_of(fleet)
    assert [f["request"] for f in faults if f["device"] == marked] == [req.id]
    assert len([f for f in faults if f["device"] == plain]) == 1
    mine = next(f for f in faults if f["request"] == req.id)
    assert mine["kind"] == "spike"
    assert mine["simulated"] is True
    assert mine["samples"] == 20  # 1 s at 20 readings/s
    # Exactly the readings the spike altered carry sim: true, raised by the spike's offset.
    msgs = [json.loads(p) for d, p, _ in telemetry.messages if d == marked]
    flagged = sorted(doc["seq"] for doc in msgs if doc.get("sim") is True)
    assert flagged == list(range(mine["first_seq"], mine["last_seq"] + 1))
    m = fleet.devices[marked].profile.metric("temperature_c")
    before = [doc["metrics"]["temperature_c"] for doc in msgs if doc["seq"] < flagged[0]]
    during = [doc["metrics"]["temperature_c"] for doc in msgs if doc.get("sim")]
    raised = sum(during) / len(during) - sum(before) / len(before)
    assert raised > OFFSET_SPAN * (m.high - m.low)  # a spike of magnitude 1.5
    # Unmarked: no reading carries the flag, the altered ones neither; marked ones decode too.
    plain_msgs = [p for d, p, _ in telemetry.messages if d == plain]
    assert all("sim" not in json.loads(p) for p in plain_msgs)
    for payload in plain_msgs:
        decode_telemetry(payload, topic_device=plain)
    marked_msgs = [p for d, p, _ in telemetry.messages if d == marked]
    assert [decode_telemetry(p, topic_device=marked).sim for p in marked_msgs].count(True) == \
        len(flagged)


def gateway_settings(broker: PrivateMosquitto, tmp_path: Path, gateway_id: str, *,
                     simulation: bool, token: str = "") -> GatewaySettings:
    """A gateway on the test broker (its own HTTP port); no cloud unless ``token``."""
    return GatewaySettings(
        gateway_id=gateway_id, mqtt=broker.gateway_mqtt(),
        storage={"path": str(tmp_path / "gw.db")}, http={"port": free_port()},
        alerts={"publish": False}, simulation={"enabled": simulation},
        sync={"cloud_url": "http://cloud", "token": token, "retry_attempts": 3,
              "retry_max_s": 0.01})


@asynccontextmanager
async def running(gw: Gateway, settings: GatewaySettings) -> AsyncIterator[None]:
    """Run ``gw`` in this event loop until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings, stop, gw))
    try:
        await wait_until_async(lambda: gw.ingestor.connected or task.done(), 15,
                               "the gateway's MQTT session")
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def test_a_spike_requested_on_the_panel_reaches_the_simulated_device(
        broker: PrivateMosquitto, telemetry: Collector, tmp_path: Path) -> None:
    settings = gateway_settings(broker, tmp_path, "gw-scn-panel", simulation=True)
    gw = Gateway(settings)
    fleet = Fleet(broker.host, broker.port, 1, 20.0, "motor", seed=5, id_prefix="scn-panel-",
                  source="synthetic", mark_simulated=True,
                  login=broker.fixture_device_login)
    (device,) = fleet.devices
    try:
        async with running(gw, settings):
            fleet.start()
            await wait_until_async(
                lambda: fleet.devices[device].subscribed and gw.store.counters["stored"] > 5,
                15, "the device subscribed and its readings stored")
            async with panel_user(panel(gw)) as user:
                await sign_in(user)
                await user.open(f"/devices/{device}")
                await user.should_see(marker="scenario-card")
                user.find(marker="scenario-inject").click()
                await user.should_see(f"SIMULATED spike queued for {device}", retries=PATIENT)
                await wait_until_async(lambda: len(sim_readings(telemetry.messages, device)) > 0,
                                       15, "the device's telemetry marked sim: true")
                table = user.find(kind=ui.table, marker="scenario-history").elements.pop()
                await wait_until_async(lambda: [r["state"] for r in table.rows] == ["published"],
                                       10, "the panel listing the request as published")
                assert [(r["scenario"], r["by"]) for r in table.rows] == [
                    ("SIMULATED spike", "panel (panel)")]
            (stored,) = gw.scenarios.recent(device)
            assert stored.outcome == "published"
            assert gw.store.counters["scenarios_published"] == 1
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(
                    f"http://127.0.0.1:{settings.http.port}/metrics")).text
            assert "smaint_gateway_scenarios_published_total 1.0" in metrics
    finally:
        fleet.stop()
        gw.store.close()
    (fault,) = fleet.faults()
    assert fault["request"] == stored.request.id
    assert fault["kind"] == "spike"
    assert fault["samples"] == 200


async def test_a_real_plant_offers_no_scenario_and_refuses_the_clouds(tmp_path: Path) -> None:
    settings = GatewaySettings(gateway_id="gw-scn-off", storage={"path": str(tmp_path / "g.db")},
                               scoring={"warmup": 8}, alerts={"publish": False})
    assert settings.simulation.enabled is False  # the default
    gw = Gateway(settings)
    try:
        feed(gw, "motor-1", 10)
        async with panel_user(panel(gw)) as user:
            await sign_in(user)
            await user.open("/devices/motor-1")
            await user.should_see(marker="device-chart")
            await user.should_not_see(marker="scenario-card")
            await user.should_not_see(marker="scenario-inject")
        with pytest.raises(SimulationOffError, match="does not run simulated devices"):
            gw.scenarios.request("motor-1", "spike", 5)
        # A cloud request is never published here: refused once, reported up once.
        req = request_for("motor-1")
        gw.on_desired(DesiredState(scenarios=[req]))
        gw.on_desired(DesiredState(scenarios=[req]))  # the same answer again
        assert gw.scenarios.waiting() == []
        assert gw.store.counters["scenarios_refused"] == 1
        outbox = Outbox(gw.store)
        info = outbox.record(100, now_ms())
        assert info is not None
        (done,) = outbox.load(info, "gw-scn-off").scenarios_done
        assert (done.id, done.outcome) == (req.id, "refused")
        assert "simulation is off" in done.reason
        outbox.mark_acked(info, now_ms())
        assert outbox.record(100, now_ms()) is None  # reported: nothing left to send
    finally:
        gw.store.close()


class LosesAnswers(httpx.AsyncBaseTransport):
    """The real cloud app behind a link that drops the next ``lose`` answers after the
    cloud has committed (the gateway must retry the same batch)."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.lose = 0
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward to the app; raise ReadError instead of answering while ``lose`` > 0."""
        response = await self.inner.handle_async_request(request)
        self.posts += 1
        if self.lose > 0:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadError("connection lost before the answer", request=request)
        return response


async def test_a_console_request_travels_cloud_sync_gateway_mqtt_device_once(
        broker: PrivateMosquitto, telemetry: Collector, tmp_path: Path, pg_dsn: str) -> None:
    with running_biz(pg_dsn, simulation={"enabled": True}) as biz:
        # The gateway's own uploader stays idle (no token): the test drives sync itself.
        settings = gateway_settings(broker, tmp_path, "gw-1", simulation=True)
        gw = Gateway(settings)
        link = LosesAnswers(biz.client.app)
        up = Uploader(settings.model_copy(update={"sync": settings.sync.model_copy(
            update={"token": biz.gateway_tokens["gw-1"]})}), gw.outbox,
            httpx.AsyncClient(transport=link, base_url="http://cloud"),
            state=gw.actual_state, on_desired=gw.on_desired)
        fleet = Fleet(broker.host, broker.port, 1, 20.0, "motor", seed=9, id_prefix="scn-cloud-",
                      source="synthetic", mark_simulated=True,
                      login=broker.fixture_device_login)
        (device,) = fleet.devices
        path = f"/api/v1/devices/{device}/scenarios"
        try:
            async with running(gw, settings):
                fleet.start()
                def stored_of_device() -> int:
                    (n,) = gw.store.conn.execute(
                        "SELECT count(*) FROM readings WHERE device = ?", (device,)).fetchone()
                    return int(n)

                # Its own readings: the session's broker also carries other tests' devices.
                await wait_until_async(lambda: stored_of_device() > 5, 15, "readings stored")
                assert (await up.sync_once()).outcome == "acked"  # the cloud knows the device
                assert biz.send("POST", "viewer", path, {"kind": "drift"}).status_code == 403
                made = biz.send("POST", "operator", path, {"kind": "drift", "seconds": 2})
                assert made.status_code == 202, made.text
                scenario = made.json()
                assert (scenario["gateway"], scenario["state"]) == ("gw-1", "queued")
                # The answer to the next batch is lost after the cloud committed it: the
                # gateway retries the same batch and gets the request in the stored answer.
                await wait_until_async(lambda: gw.outbox.backlog() > 0, 15,
                                       "new readings to upload")
                link.lose, posts = 1, link.posts
                assert (await up.sync_once()).outcome == "acked"
                assert link.posts == posts + 2
                desired = gw.outbox.desired()
                assert desired is not None
                assert [s.id for s in desired.scenarios] == [scenario["id"]]
                await wait_until_async(
                    lambda: len(sim_readings(telemetry.messages, device)) >= 40, 15,
                    "the device playing the drift, its readings marked sim: true")
                # That answer seen again (a restart replays it) queues nothing new.
                gw.on_desired(desired)
                assert gw.scenarios.waiting() == []
                # The next batch reports it; the cloud stops sending it.
                assert (await up.sync_once()).outcome == "acked"
                after = gw.outbox.desired()
                assert after is not None
                assert after.scenarios == []
        finally:
            fleet.stop()
            await up.aclose()
            gw.store.close()
        assert [f["request"] for f in fleet.faults()] == [scenario["id"]]
        assert gw.store.counters["scenarios_published"] == 1
        listed = biz.get("viewer", path).json()
        assert listed["simulation"] is True
        (row,) = listed["scenarios"]
        assert (row["state"], row["kind"], row["requested_by"], row["simulated"]) == (
            "published", "drift", "operator", True)
        audit = biz.get("admin", "/api/v1/audit", entity="scenario").json()
        assert [(a["action"], a["actor"], a["device"]) for a in audit] == [
            ("scenario.request", "operator", device)]


def test_scenarios_are_refused_with_409_where_the_fleet_is_real(biz: Biz) -> None:
    with psycopg.connect(biz.dsn) as conn:
        conn.execute("INSERT INTO devices (device_id, type, gateway_id, first_seen_at, "
                     "last_seen_at) VALUES ('motor-001', 'motor', 'gw-1', now(), now())")
    path = "/api/v1/devices/motor-001/scenarios"
    refused = biz.send("POST", "admin", path, {"kind": "spike"})
    assert refused.status_code == 409
    assert "simulation is off on this cloud" in refused.json()["detail"]
    assert biz.get("viewer", path).json() == {"simulation": False, "scenarios": []}
    with psycopg.connect(biz.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM scenario_requests").fetchone() == (0,)


def test_a_scenario_for_an_unknown_device_or_of_an_unknown_kind_is_refused(
        pg_dsn: str) -> None:
    with running_biz(pg_dsn, simulation={"enabled": True}) as biz:
        assert biz.send("POST", "operator", "/api/v1/devices/nobody/scenarios",
                        {"kind": "spike"}).status_code == 404
        assert biz.send("POST", "operator", "/api/v1/devices/nobody/scenarios",
                        {"kind": "fire"}).status_code == 422
        assert biz.send("POST", "operator", "/api/v1/devices/nobody/scenarios",
                        {"kind": "spike", "seconds": 301}).status_code == 422


async def test_the_console_offers_scenarios_only_where_the_fleet_is_simulated(
        pg_dsn: str) -> None:
    async with console_user(pg_dsn) as h:
        await console_sign_in(h, "operator")
        await h.user.open("/explorer?device=motor-001")
        await h.user.should_see(marker="explorer-chart", retries=PATIENT)
        await h.user.should_not_see(marker="scenario-card")


async def test_an_operator_injects_from_the_console_and_a_viewer_may_not(
        pg_dsn: str) -> None:
    async with console_user(pg_dsn, simulation={"enabled": True}) as h:
        await console_sign_in(h, "operator")
        await h.user.open("/explorer?device=motor-001")
        await h.user.should_see(marker="scenario-card", retries=PATIENT)
        h.user.find(marker="scenario-inject").click()
        await h.user.should_see("SIMULATED spike queued for motor-001 via gateway gw-1",
                                retries=PATIENT)
        table = h.user.find(kind=ui.table, marker="scenario-history").elements.pop()
        await wait_until_async(lambda: [r["state"] for r in table.rows] == [
            "queued for the gateway's next sync"], 10, "the request listed as queued")
        assert table.rows[0]["scenario"] == "SIMULATED spike"
        with psycopg.connect(h.cloud.dsn) as conn:
            rows = conn.execute("SELECT device_id, gateway_id, kind, requested_by "
                                "FROM scenario_requests").fetchall()
        assert rows == [("motor-001", "gw-1", "spike", "operator")]


async def test_a_viewer_sees_the_console_scenarios_but_may_not_inject(pg_dsn: str) -> None:
    async with console_user(pg_dsn, simulation={"enabled": True}) as h:
        await console_sign_in(h, "viewer")
        await h.user.open("/explorer?device=motor-001")
        await h.user.should_see(marker="scenario-role", retries=PATIENT)
        (button,) = h.user.find(kind=ui.button, marker="scenario-inject").elements
        assert not button.enabled
