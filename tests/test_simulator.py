"""The device simulator: valid telemetry, honest counters, status/will, faults, replay ranges."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devstack.mosquitto import PrivateMosquitto
from edge.provision import write_provisioning
from shared import topics
from shared.codec import decode_status, decode_telemetry
from shared.sensors import PROFILES, SensorProfile, profile
from simulator import cli
from simulator.exceptions import SimulatorError, UnknownDeviceError
from simulator.faults import OFFSET_SPAN, Fault, FaultInjector, FaultRecord
from simulator.fleet import Fleet
from simulator.signals import (
    MotorReplay,
    TurbofanReplay,
    cmapss_units,
    make_source,
    nab_machine_temperature_f,
)
from tests.fixtures.waiting import wait_until


class Collector:
    """A paho subscriber (QoS 1) that keeps every message for devices with a given prefix."""

    def __init__(self, broker: PrivateMosquitto, prefix: str, channel: str) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{prefix}sub-{channel}-{random.getrandbits(32):x}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.username_pw_set(*broker.fixture_login())
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{topics.ROOT}/dev/+/{channel}", qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device, _ = topics.parse_device_topic(msg.topic)
        if device.startswith(self.prefix):
            with self.lock:
                self.messages.append((device, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, check: Callable[[list[tuple[str, bytes, bool]]], bool], t: float) -> bool:
        """Wait up to ``t`` seconds until ``check(messages)`` holds."""
        deadline = time.monotonic() + t
        while time.monotonic() < deadline:
            with self.lock:
                if check(list(self.messages)):
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collectors(broker: PrivateMosquitto) -> Iterator[list[Collector]]:
    made: list[Collector] = []
    yield made
    for c in made:
        c.close()


def test_every_message_decodes_and_published_equals_received(
    broker: PrivateMosquitto, collectors: list[Collector]
) -> None:
    sub = Collector(broker, "t-dec-", "telemetry")
    collectors.append(sub)
    fleet = Fleet(broker.host, broker.port, 6, 50.0, "mix", seed=1, id_prefix="t-dec-",
                  login=broker.fixture_device_login)
    fleet.start()
    wait_until(lambda: fleet.published > 200, 15, "the fleet publishing")
    stats = fleet.stop()
    assert stats["pending"] == 0
    assert stats["published"] == stats["sent"] > 200
    assert sub.wait_for(lambda m: len(m) >= stats["published"], 5)
    received: set[tuple[str, str, int]] = set()
    for device, payload, _ in sub.messages:
        msg = decode_telemetry(payload, topic_device=device)
        assert msg.synced
        assert len(msg.boot) == 8
        received.add((msg.device, msg.boot, msg.seq))
    assert len(received) == len(sub.messages) == fleet.published
    assert received == fleet.keys()
    assert fleet.per_device() == {
        d: sum(1 for m in sub.messages if m[0] == d) for d in fleet.devices
    }
    # seq runs from 0 without gaps on every device, and the types cover the mix.
    for dev in fleet.devices.values():
        assert sorted(s for d, _, s in received if d == dev.device_id) == list(range(dev.seq))
        assert dev.client.max_inflight_messages < 65_535
    assert {d.profile.name for d in fleet.devices.values()} == set(PROFILES)


def test_status_online_retained_then_will_on_crash_and_offline_on_stop(
    broker: PrivateMosquitto, collectors: list[Collector]
) -> None:
    fleet = Fleet(broker.host, broker.port, 2, 20.0, "motor", seed=2, id_prefix="t-st-",
                  login=broker.fixture_device_login)
    fleet.start()
    boots = {d.device_id: d.boot for d in fleet.devices.values()}
    crashed, survivor = list(fleet.devices)

    def states(m: list[tuple[str, bytes, bool]]) -> list[tuple[str, str, str, bool]]:
        out: list[tuple[str, str, str, bool]] = []
        for device, payload, retained in m:
            st = decode_status(payload, topic_device=device)
            out.append((device, st.state, st.boot, retained))
        return out

    # A subscriber that arrives after the devices gets the retained online status: a device's
    # first acknowledged reading follows its status on the same connection.
    wait_until(lambda: all(n > 0 for n in fleet.per_device().values()), 10,
               "a reading from every device")
    sub = Collector(broker, "t-st-", "status")
    collectors.append(sub)
    assert sub.wait_for(lambda m: len(m) >= 2, 5)
    assert sorted(states(sub.messages)) == sorted(
        (d, "online", boots[d], True) for d in (crashed, survivor)
    )

    fleet.crash(crashed)
    assert sub.wait_for(lambda m: (crashed, "offline", boots[crashed], False) in states(m), 5)
    stats = fleet.stop()
    assert stats["crashed"] == 1
    assert sub.wait_for(lambda m: (survivor, "offline", boots[survivor], False) in states(m), 5)

    # Both offline states are retained for whoever subscribes later.
    late = Collector(broker, "t-st-", "status")
    collectors.append(late)
    assert late.wait_for(lambda m: len(m) >= 2, 5)
    assert sorted(states(late.messages)) == sorted(
        (d, "offline", boots[d], True) for d in (crashed, survivor)
    )


def test_fleet_reconnects_after_broker_restart(fresh_broker: PrivateMosquitto) -> None:
    fleet = Fleet(fresh_broker.host, fresh_broker.port, 2, 50.0, "mill", seed=6,
                  login=fresh_broker.fixture_device_login).start()
    try:
        wait_until(lambda: fleet.published > 0, 10, "the fleet publishing")
        fresh_broker.restart()
        before = fleet.published
        wait_until(lambda: fleet.published >= before + 50, 15, "publishing after the restart")
    finally:
        stats = fleet.stop()
    assert stats["pending"] == 0
    assert stats["published"] == stats["sent"]


def test_cli_runs_and_prints_summary(
    broker: PrivateMosquitto, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Each device logs in over TLS with its own provisioning file, as a real node does.
    for n in (1, 2, 3):
        device = f"t-cli-turbofan-{n:03d}"
        write_provisioning(tmp_path / f"{device}.json", broker.provision(device))
    argv = ["--port", str(broker.tls_port), "--provisioning-dir", str(tmp_path)]
    argv += ["--devices", "3", "--rate", "20", "--seconds", "1.2"]
    argv += ["--id-prefix", "t-cli-", "--profile", "turbofan", "--seed", "3"]
    argv += ["--fault", "t-cli-turbofan-002:drift:0.2:0.5"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["devices"] == 3
    assert summary["published"] == summary["sent"] >= 60
    assert "t=1s published=" in err
    (fault,) = summary["faults"]
    assert fault["device"] == "t-cli-turbofan-002"
    assert fault["simulated"] is True
    assert fault["last_seq"] - fault["first_seq"] + 1 == 10


def test_cli_rejects_bad_fault_and_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--fault", "motor-001:melt"])
    assert cli.parse_fault("motor-001:stuck:2.5") == cli.FaultSpec("motor-001", "stuck", 2.5)
    with PrivateMosquitto() as b:
        port = b.port
    assert cli.main(["--port", str(port), "--devices", "1", "--seconds", "1"]) == 2
    assert "cannot reach" in capsys.readouterr().err


# --- faults (no broker) ---------------------------------------------------------------------


def _run_fault(
    fault: Fault, prof: SensorProfile, values: Callable[[int], dict[str, float]], n: int
) -> tuple[list[dict[str, float]], FaultRecord]:
    inj = FaultInjector(prof, random.Random(0))
    rec = FaultRecord("motor-001", fault)
    inj.add(rec)
    return [inj.apply(values(i), i, "deadbeef") for i in range(n)], rec


MOTOR = profile("motor")
BASE = {"temperature_c": 50.0, "vibration_rms_g": 0.5, "current_a": 12.0}
TEMP_SPAN = MOTOR.metric("temperature_c").high - MOTOR.metric("temperature_c").low


def test_spike_adds_offset_only_while_active() -> None:
    out, rec = _run_fault(
        Fault("spike", 2, after=3, metric="temperature_c"), MOTOR, lambda _: BASE, 8
    )
    temps = [o["temperature_c"] for o in out]
    bump = 50.0 + OFFSET_SPAN * TEMP_SPAN
    assert temps == [50.0, 50.0, 50.0, bump, bump, 50.0, 50.0, 50.0]
    assert all(o["current_a"] == 12.0 for o in out)  # one metric only
    assert (rec.first_seq, rec.last_seq, rec.boot, rec.done) == (3, 4, "deadbeef", True)


def test_drift_ramps_up_to_full_offset() -> None:
    out, _ = _run_fault(Fault("drift", 5, metric="temperature_c"), MOTOR, lambda _: BASE, 6)
    temps = [o["temperature_c"] for o in out]
    assert temps[:5] == sorted(temps[:5])
    assert temps[0] > 50.0
    assert temps[4] == pytest.approx(50.0 + OFFSET_SPAN * TEMP_SPAN)
    assert temps[5] == 50.0


def test_stuck_freezes_every_metric() -> None:
    def moving(i: int) -> dict[str, float]:
        return {k: v + i for k, v in BASE.items()}

    out, _ = _run_fault(Fault("stuck", 4, after=1), MOTOR, moving, 7)
    assert out[0] == moving(0)
    assert out[1] == out[2] == out[3] == out[4] == moving(1)
    assert out[5] == moving(5)


def test_noise_adds_variance_around_the_signal() -> None:
    out, _ = _run_fault(
        Fault("noise", 200, metric="current_a", magnitude=2.0), MOTOR, lambda _: BASE, 200
    )
    currents = [o["current_a"] for o in out]
    spread = max(currents) - min(currents)
    assert spread > 10.0
    assert all(o["temperature_c"] == 50.0 for o in out)


def test_faults_stay_in_physical_range() -> None:
    out, _ = _run_fault(Fault("spike", 3, magnitude=50.0), MOTOR, lambda _: BASE, 3)
    for o in out:
        assert all(m.in_range(o[m.name]) for m in MOTOR.metrics)
        assert o["temperature_c"] == MOTOR.metric("temperature_c").high


def test_inject_validates_device_kind_and_metric() -> None:
    fleet = Fleet(n_devices=2, rate_hz=10.0, profile="motor", seed=4)
    with pytest.raises(UnknownDeviceError):
        fleet.inject("motor-404", "spike")
    with pytest.raises(SimulatorError):
        fleet.inject("motor-001", "melt")
    with pytest.raises(KeyError):
        fleet.inject("motor-001", "drift", metric="torque_nm")
    rec = fleet.inject("motor-002", "drift", seconds=2.0, after_s=1.0)
    assert (rec.fault.samples, rec.fault.after) == (20, 10)
    assert fleet.faults()[0]["kind"] == "drift"


# --- replay sources (no broker) -------------------------------------------------------------


@pytest.mark.parametrize(("name", "rows"), [("motor", 22_695), ("mill", 10_000), ("turbofan", 0)])
def test_replay_values_stay_in_physical_ranges(name: str, rows: int) -> None:
    prof = profile(name)
    n = rows or sum(len(u) for u in cmapss_units())
    sources = [make_source(name, "replay", i, 3, random.Random(i)) for i in range(3)]
    firsts = []
    for src in sources:
        readings = [src.next() for _ in range(n)]
        firsts.append(readings[0])
        for r in readings:
            assert tuple(r) == prof.metric_names
            assert all(m.in_range(r[m.name]) for m in prof.metrics), r
    assert firsts[0] != firsts[1] != firsts[2]  # each device starts at its own offset


def test_replay_conversions_and_column_mapping() -> None:
    assert nab_machine_temperature_f()[0] == pytest.approx(73.96732207)
    motor = MotorReplay(0, random.Random(0)).next()
    assert motor["temperature_c"] == pytest.approx((73.96732207 - 32) * 5 / 9)  # °F -> °C
    first = TurbofanReplay(0).next()
    # train_FD001 line 1: s2=641.82 s3=1589.70 s4=1400.60 s7=554.36 s8=2388.06 s9=9046.19
    # s11=47.47 s12=521.66
    assert first == {
        "t24_r": 641.82,
        "t30_r": 1589.70,
        "t50_r": 1400.60,
        "p30_psia": 554.36,
        "nf_rpm": 2388.06,
        "nc_rpm": 9046.19,
        "ps30_psia": 47.47,
        "phi": 521.66,
    }


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_synthetic_values_stay_in_physical_ranges(name: str) -> None:
    src = make_source(name, "synthetic", 0, 1, random.Random(5))
    prof = profile(name)
    for _ in range(2_000):
        r: dict[str, Any] = src.next()
        assert all(m.in_range(r[m.name]) for m in prof.metrics)
