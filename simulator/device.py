"""One simulated ESP32 sensor: a paho-mqtt client publishing Telemetry at QoS 1.

A device does no I/O scheduling of its own: the fleet's driver thread calls ``connect``,
``publish_sample`` and the paho ``loop_*`` functions, so every paho call and callback for a
device happens on one thread. Other threads only queue faults and read counters.

Unlike real firmware, a simulated device subscribes to its ``.../simulate`` topic: a
ScenarioRequest there (published by the gateway after a panel or console request) becomes a
SIMULATED fault, exactly as one injected by ``Fleet.inject``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from shared import topics
from shared.codec import decode_scenario, encode
from shared.exceptions import DecodeError
from shared.schemas import DeviceStatus, ScenarioRequest, Telemetry
from simulator.faults import Fault, FaultInjector, FaultRecord
from simulator.signals import SignalSource

log = logging.getLogger(__name__)

FIRMWARE = "sim-0.1"
# paho stalls near 65,535 unacknowledged QoS 1 messages (message ids wrap): stay far below.
DEFAULT_MAX_INFLIGHT = 1_000
STATUS_HEADROOM = 16
# Telemetry of a reading a SIMULATED fault altered carries "sim": true (Telemetry.sim), so the
# gateway stores it with origin "simulated" and labels what it opens SIMULATED.
MARK_SIMULATED = True
# Strength of a requested scenario (units of 10 % of the metric's span, simulator/faults.py):
# strong enough for the detector to see, as the demo's own schedule uses.
SCENARIO_MAGNITUDE = {"spike": 1.5, "drift": 1.5, "stuck": 1.0, "noise": 1.5}
_SEEN_REQUESTS = 64  # request ids remembered, so a redelivered request plays once


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """How a device logs in: its broker account and, for TLS, the CA to verify the broker with.

    A real node reads these from its provisioning file (``smaint provision device``);
    :func:`simulator.provisioning.read_login` reads the same file.
    """

    username: str
    password: str
    ca_file: str | None = None


@dataclass(slots=True)
class _SeqSet:
    """Acknowledged seqs of one boot, kept as 'all below n' plus stragglers: O(1) memory."""

    below: int = 0
    extra: set[int] = field(default_factory=set)

    def add(self, seq: int) -> None:
        if seq == self.below:
            self.below += 1
            while self.below in self.extra:
                self.extra.discard(self.below)
                self.below += 1
        elif seq > self.below:
            self.extra.add(seq)

    def __len__(self) -> int:
        return self.below + len(self.extra)

    def __iter__(self) -> Iterator[int]:
        yield from range(self.below)
        yield from sorted(self.extra)


class SimulatedDevice:
    """A simulated sensor device with one MQTT connection (client id = device id)."""

    def __init__(
        self,
        device_id: str,
        source: SignalSource,
        *,
        rate_hz: float,
        injector: FaultInjector,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        keepalive_s: int = 30,
        mark_simulated: bool | None = None,
        login: BrokerLogin | None = None,
    ) -> None:
        self.device_id = device_id
        self.login = login
        self.topic = topics.telemetry(device_id)  # validates the id against ID_PATTERN
        self.status_topic = topics.status(device_id)
        self.simulate_topic = topics.simulate(device_id)
        self.mark_simulated = MARK_SIMULATED if mark_simulated is None else mark_simulated
        self.subscribed = False  # the broker acknowledged the .../simulate subscription
        self.scenarios: list[ScenarioRequest] = []  # requests played, oldest first
        # Called with the ground-truth record of each requested scenario (the fleet's log).
        self.on_fault: Callable[[FaultRecord], None] | None = None
        self._seen: collections.deque[str] = collections.deque(maxlen=_SEEN_REQUESTS)
        self.source = source
        self.profile = source.profile
        self.rate_hz = rate_hz
        self.max_inflight = max_inflight
        self.keepalive_s = keepalive_s
        self.injector = injector
        self.boot = ""
        self.seq = 0
        self.sent = 0  # publish() calls that paho accepted
        self.published = 0  # telemetry the broker acknowledged (PUBACK)
        self.skipped = 0  # samples not taken: offline or too many unacknowledged
        self.connected = False
        self.crashed = False
        self.offline_acked = False
        self.error: str | None = None
        self._boot_t = 0.0
        self._pending: dict[int, int] = {}  # mid -> seq of unacknowledged telemetry
        self._status_mids: dict[int, str] = {}  # mid -> state of unacknowledged status
        self._acked: dict[str, _SeqSet] = {}
        self._acked_lock = threading.Lock()
        self._faults: queue.SimpleQueue[FaultRecord] = queue.SimpleQueue()
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        # Telemetry stops at max_inflight unacknowledged (can_publish); the headroom keeps room
        # for status messages, and paho refuses (MQTT_ERR_QUEUE_SIZE) rather than grows.
        client.max_inflight_messages_set(self.max_inflight + STATUS_HEADROOM)
        client.max_queued_messages_set(self.max_inflight + STATUS_HEADROOM)
        if self.login is not None:
            client.username_pw_set(self.login.username, self.login.password)
            if self.login.ca_file:
                client.tls_set(ca_certs=self.login.ca_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # --- lifecycle (driver thread) -------------------------------------------------------

    @property
    def interval_ms(self) -> int:
        """Sample interval as announced in the status (the schema's floor is 10 ms)."""
        return max(10, round(1000 / self.rate_hz))

    def _status(self, state: str) -> bytes:
        msg = DeviceStatus(
            v=1,
            device=self.device_id,
            boot=self.boot,
            state="online" if state == "online" else "offline",
            ts_ms=time.time_ns() // 1_000_000,
            type=self.profile.name,
            fw=FIRMWARE,
            interval_ms=self.interval_ms,
        )
        return encode(msg)

    def connect(self, host: str, port: int) -> None:
        """Boot (new random boot id, seq from 0) and open the TCP connection; blocks briefly."""
        self.boot = secrets.token_hex(4)
        self.seq = 0
        self._boot_t = time.monotonic()
        self.client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        self.client.connect(host, port, keepalive=self.keepalive_s)

    def reconnect(self) -> None:
        """Reopen a lost connection (same boot: the network dropped, the device did not)."""
        self.client.reconnect()

    def crash(self) -> None:
        """Die without a DISCONNECT (power cut): close the socket so the broker sends the will."""
        sock = self.client.socket()
        self.crashed = True
        self.connected = False
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                # The broker sees EOF now rather than after a keepalive timeout.
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def say_offline(self) -> None:
        """Publish the retained offline status before a clean disconnect."""
        info = self.client.publish(self.status_topic, self._status("offline"), qos=1, retain=True)
        self._status_mids[info.mid] = "offline"

    def disconnect(self) -> None:
        """Send DISCONNECT, so the broker discards the will."""
        self.client.disconnect()
        self.connected = False

    # --- publishing (driver thread) ------------------------------------------------------

    @property
    def pending(self) -> int:
        """Telemetry messages sent but not yet acknowledged by the broker."""
        return len(self._pending)

    @property
    def can_publish(self) -> bool:
        """Connected, alive and below the in-flight cap."""
        return self.connected and not self.crashed and len(self._pending) < self.max_inflight

    def publish_sample(self) -> bool:
        """Take one sample, apply any SIMULATED faults, publish it at QoS 1; False if refused."""
        while True:
            try:
                self.injector.add(self._faults.get_nowait())
            except queue.Empty:
                break
        metrics = self.injector.apply(self.source.next(), self.seq, self.boot)
        msg = Telemetry(
            v=1,
            device=self.device_id,
            boot=self.boot,
            seq=self.seq,
            ts_ms=time.time_ns() // 1_000_000,
            uptime_ms=int((time.monotonic() - self._boot_t) * 1000),
            synced=True,
            type=self.profile.name,
            metrics=metrics,
        )
        if self.mark_simulated and self.injector.altered:
            msg = msg.model_copy(update={"sim": True})
        payload = encode(msg)
        info = self.client.publish(self.topic, payload, qos=1)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            # Not queued by paho: the sample is lost, and seq is not used up.
            self.skipped += 1
            return False
        # Any other rc (NO_CONN included) leaves the message in paho's queue for a resend.
        self._pending[info.mid] = self.seq
        self.seq += 1
        self.sent += 1
        return True

    def inject(self, record: FaultRecord) -> None:
        """Queue a SIMULATED fault (any thread); it takes effect on the next sample."""
        log.warning(
            "SIMULATED fault %s on %s (metric %s, %d samples after %d)",
            record.fault.kind,
            self.device_id,
            record.fault.metric or "all",
            record.fault.samples,
            record.fault.after,
        )
        self._faults.put(record)

    def play(self, request: ScenarioRequest) -> FaultRecord | None:
        """Turn a scenario request into a SIMULATED fault; None if this id was played already."""
        if request.id in self._seen:
            return None
        self._seen.append(request.id)
        samples = max(1, round(request.seconds * self.rate_hz))
        record = FaultRecord(self.device_id, Fault(
            request.kind, samples, magnitude=SCENARIO_MAGNITUDE[request.kind]),
            request=request.id)
        log.warning("SIMULATED scenario %s requested by %s (request %s) for %s, %g s",
                    request.kind, request.requested_by, request.id, self.device_id,
                    request.seconds)
        self.scenarios.append(request)
        if self.on_fault is not None:
            self.on_fault(record)
        self.inject(record)
        return record

    # --- paho callbacks (driver thread) --------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self.error = f"broker refused {self.device_id}: {reason_code}"
            log.error("%s", self.error)
            return
        self.connected = True
        # A clean session: subscribe again on every connect.
        client.subscribe(self.simulate_topic, qos=1)
        info = client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self._status_mids[info.mid] = "online"

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        self.connected = False
        self.subscribed = False
        if reason_code.is_failure and not self.crashed:
            log.info("%s lost its connection: %s", self.device_id, reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: Any, properties: Any) -> None:
        self.subscribed = not any(rc.is_failure for rc in reason_codes)

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        try:
            request = decode_scenario(bytes(message.payload), self.device_id)
        except DecodeError as exc:
            # A bad request is somebody else's bug: say so and keep sampling.
            log.warning("%s ignored a scenario request on %s: %s", self.device_id,
                        message.topic, exc)
            return
        self.play(request)

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason_code: Any, properties: Any
    ) -> None:
        seq = self._pending.pop(mid, None)
        if seq is None:
            if self._status_mids.pop(mid, None) == "offline":
                self.offline_acked = True
            return
        self.published += 1
        with self._acked_lock:
            self._acked.setdefault(self.boot, _SeqSet()).add(seq)

    # --- read-outs (any thread) ----------------------------------------------------------

    def keys(self) -> set[tuple[str, str, int]]:
        """Every acknowledged (device, boot, seq)."""
        with self._acked_lock:
            return {(self.device_id, b, s) for b, seqs in self._acked.items() for s in seqs}
