"""The ESP32 firmware's host build: its C++ unit tests, and virtual-esp32 nodes on a real broker.

Two ``virtual-esp32`` processes (the firmware core + libmosquitto) publish to a private
Mosquitto; a subscriber with a persistent QoS 1 session stands in for the gateway (swap
``TelemetrySink`` for the real gateway once ``edge/`` ingests). The broker is stopped for a few
seconds and started again: every reading the nodes buffered meanwhile must arrive, none lost.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import PrivateMosquitto
from shared import topics
from shared.codec import decode_telemetry
from shared.exceptions import DecodeError
from shared.schemas import Telemetry

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware" / "esp32"
BUILD_DIR = FIRMWARE / "build-host"
BINARY = BUILD_DIR / "virtual-esp32"
SOURCE_GLOBS = (
    "lib/**/*.cpp",
    "lib/**/*.hpp",
    "host/*.cpp",
    "host/*.hpp",
    "tests/*.cpp",
    "tests/*.hpp",
    "CMakeLists.txt",
    "build_host.sh",
)

pytestmark = pytest.mark.slow


def _stale() -> bool:
    if not BINARY.exists():
        return True
    built = BINARY.stat().st_mtime
    return any(p.stat().st_mtime > built for g in SOURCE_GLOBS for p in FIRMWARE.glob(g))


def _build() -> None:
    """Build the host binaries with build_host.sh unless they are current; fail with its output."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    lock_path = BUILD_DIR / ".pytest-build.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build once
        try:
            if not _stale():
                return
            proc = subprocess.run(
                [str(FIRMWARE / "build_host.sh"), "--no-test"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if proc.returncode != 0:
                pytest.fail(
                    f"firmware host build failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def virtual_esp32() -> Path:
    """Path of the built virtual-esp32 binary."""
    _build()
    return BINARY


# --- the stand-in gateway -------------------------------------------------------------------


@dataclass
class TelemetrySink:
    """A persistent-session QoS 1 subscriber that decodes every telemetry message."""

    readings: list[Telemetry] = field(default_factory=list)
    dead_letters: list[tuple[str, bytes, str]] = field(default_factory=list)
    others: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Decode one message the way the gateway does; a failure is a dead letter."""
        try:
            device, channel = topics.parse_device_topic(topic)
        except DecodeError:
            with self.lock:
                self.others.append((topic, payload))
            return
        if channel != "telemetry":
            with self.lock:
                self.others.append((topic, payload))
            return
        try:
            msg = decode_telemetry(payload, topic_device=device)
        except DecodeError as exc:
            with self.lock:
                self.dead_letters.append((topic, payload, str(exc)))
            return
        with self.lock:
            self.readings.append(msg)

    def seqs(self, device: str, boot: str) -> set[int]:
        """Distinct seq numbers received from one boot of a device."""
        with self.lock:
            return {r.seq for r in self.readings if r.device == device and r.boot == boot}

    def of(self, device: str) -> list[Telemetry]:
        """Readings received from ``device`` so far, in arrival order."""
        with self.lock:
            return [r for r in self.readings if r.device == device]


def subscribe(broker: PrivateMosquitto, client_id: str, sink: TelemetrySink) -> mqtt.Client:
    """Connect a persistent-session QoS 1 subscriber feeding ``sink``; it reconnects by itself."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.reconnect_delay_set(min_delay=1, max_delay=1)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            c.subscribe("smaint/v1/dev/+/#", qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        sink.on_message(msg.topic, bytes(msg.payload))

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        sink.subscribed.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(broker.host, broker.port, keepalive=5)
    client.loop_start()
    return client


@pytest.fixture
def sink(fresh_broker: PrivateMosquitto, request: pytest.FixtureRequest) -> Iterator[TelemetrySink]:
    """A TelemetrySink subscribed to the test's broker before any node starts."""
    s = TelemetrySink()
    client = subscribe(fresh_broker, f"sink-{request.node.name}"[:60], s)
    wait_until(s.subscribed.is_set, 10, "subscriber connected and subscribed")
    yield s
    client.loop_stop()
    client.disconnect()


# --- helpers ---------------------------------------------------------------------------------


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``cond()`` until true; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s: {what}")
        time.sleep(0.05)


@dataclass
class Node:
    """A running virtual-esp32 process."""

    device: str
    proc: subprocess.Popen[str]

    def finish(self, timeout_s: float = 60) -> dict[str, Any]:
        """Wait for the process to end; its final counters (the "done" line)."""
        out, err = self.proc.communicate(timeout=timeout_s)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        done = [x for x in lines if x.get("event") == "done"]
        assert done, f"{self.device}: no final counters (exit {self.proc.returncode}):\n{err}"
        counters: dict[str, Any] = done[-1]
        counters["exit"] = self.proc.returncode
        counters["stderr"] = err
        return counters


def start_node(binary: Path, broker: PrivateMosquitto, device: str, *args: str) -> Node:
    """Start virtual-esp32 for ``device`` against ``broker``."""
    cmd = [
        str(binary),
        "--host",
        broker.host,
        "--port",
        str(broker.port),
        "--device",
        device,
        "--type",
        "motor",
        "--backoff-base-ms",
        "100",
        "--backoff-max-ms",
        "800",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Node(device, proc)


# --- tests -----------------------------------------------------------------------------------


def test_core_unit_tests_pass(virtual_esp32: Path) -> None:
    """The C++ core's ctest suite (golden vectors, ring, backoff, config, node) passes."""
    proc = subprocess.run(
        ["ctest", "--test-dir", str(BUILD_DIR), "--output-on-failure"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "100% tests passed" in proc.stdout


def test_two_nodes_survive_broker_outage(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, sink: TelemetrySink
) -> None:
    """Readings buffered while the broker is down all arrive after it is back, none lost."""
    nodes = [
        start_node(
            virtual_esp32,
            fresh_broker,
            dev,
            "--rate-hz",
            "20",
            "--seconds",
            "7",
            "--ring-size",
            "1000",
            "--sync-after-ms",
            "400",
        )
        for dev in ("fw-node-a", "fw-node-b")
    ]
    wait_until(
        lambda: all(len(sink.of(n.device)) >= 10 for n in nodes),
        15,
        "both nodes publishing before the outage",
    )
    fresh_broker.stop()
    time.sleep(3)
    fresh_broker.start()
    results = [n.finish() for n in nodes]

    for n, c in zip(nodes, results, strict=True):
        assert c["exit"] == 0, c
        assert c["disconnects"] >= 1, c  # the outage was seen
        assert c["buffered_max"] >= 40, c  # ~3 s at 20 Hz was kept in the ring
        assert c["dropped_overflow"] == 0, c
        assert c["buffered"] == 0, c
        assert c["unsynced"] >= 1, c  # the first readings predate the clock
        expected = set(range(c["next_seq"]))

        def got_all(dev: str = n.device, boot: str = c["boot"], e: set[int] = expected) -> bool:
            return sink.seqs(dev, boot) >= e

        wait_until(got_all, 20, f"all {len(expected)} readings of {n.device}")
        assert sink.seqs(n.device, c["boot"]) == expected

    assert sink.dead_letters == []
    unsynced = [r for r in sink.readings if not r.synced]
    assert unsynced
    assert all(r.ts_ms == 0 for r in unsynced)
    assert all(r.ts_ms > 1_600_000_000_000 for r in sink.readings if r.synced)
    for r in sink.readings:
        assert set(r.metrics) == {"temperature_c", "vibration_rms_g", "current_a"}


def test_ring_overflow_keeps_newest(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, sink: TelemetrySink
) -> None:
    """With a small ring the oldest readings of the outage are lost, the newest all arrive."""
    node = start_node(
        virtual_esp32,
        fresh_broker,
        "fw-node-small",
        "--rate-hz",
        "20",
        "--seconds",
        "5",
        "--ring-size",
        "20",
    )
    wait_until(lambda: len(sink.of(node.device)) >= 5, 15, "node publishing")
    fresh_broker.stop()
    time.sleep(2.5)
    fresh_broker.start()
    c = node.finish()
    assert c["exit"] == 0, c
    assert c["dropped_overflow"] > 0, c
    assert c["buffered_max"] == 20, c
    sent = set(range(c["next_seq"]))
    wait_until(
        lambda: len(sink.seqs(node.device, c["boot"])) >= len(sent) - c["dropped_overflow"],
        20,
        "readings after the outage",
    )
    missing = sorted(sent - sink.seqs(node.device, c["boot"]))
    # Usually equal; fewer if the broker took a reading whose PUBACK died with it.
    assert 0 < len(missing) <= c["dropped_overflow"]
    # One contiguous gap: the oldest readings of the outage, not the newest.
    assert missing == list(range(missing[0], missing[0] + len(missing)))
    assert missing[-1] + 1 + 20 <= c["next_seq"]
    assert sink.dead_letters == []


def test_retained_config_applied_and_bad_config_rejected(
    virtual_esp32: Path, fresh_broker: PrivateMosquitto, sink: TelemetrySink
) -> None:
    """A retained config changes rate and metrics at run time; a bad one is refused."""
    device = "fw-node-cfg"
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cfg-publisher")
    pub.connect(fresh_broker.host, fresh_broker.port)
    pub.loop_start()
    try:
        pub.publish(
            topics.config(device), b'{"v":1,"interval_ms":"fast"}', qos=1, retain=True
        ).wait_for_publish(5)
        node = start_node(virtual_esp32, fresh_broker, device, "--rate-hz", "5", "--seconds", "4")
        wait_until(lambda: len(sink.of(device)) >= 3, 10, "node publishing")
        pub.publish(
            topics.config(device),
            b'{"v":1,"interval_ms":50,"enabled":["current_a"]}',
            qos=1,
            retain=True,
        ).wait_for_publish(5)
        c = node.finish()
    finally:
        pub.loop_stop()
        pub.disconnect()
    assert c["exit"] == 0, c
    assert c["config_rejected"] == 1, c
    assert "interval_ms" in c["stderr"]
    assert c["config_applied"] == 1, c
    assert c["interval_ms"] == 50
    wait_until(lambda: len(sink.seqs(device, c["boot"])) == c["next_seq"], 10, "every reading")
    readings = sink.of(device)
    assert len(readings[0].metrics) == 3
    assert set(readings[-1].metrics) == {"current_a"}
    # ~1 s at 5 Hz, then ~3 s at 20 Hz.
    assert c["next_seq"] > 40, c
    statuses = [json.loads(p) for t, p in sink.others if t == topics.status(device)]
    assert any(s.get("interval_ms") == 50 and s["state"] == "online" for s in statuses)
    assert sink.dead_letters == []
