"""A fleet of simulated devices, driven by a few threads that each run many paho clients.

A thread per device would cost 50 threads fighting for the GIL; instead each driver thread
owns a slice of the devices, paces their samples from a heap of due times and runs their
sockets through one selector (paho's external-loop API: loop_read / loop_write / loop_misc).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import queue
import random
import selectors
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from shared.sensors import PROFILES
from simulator.device import DEFAULT_MAX_INFLIGHT, BrokerLogin, SimulatedDevice
from simulator.exceptions import SimulatorError, UnknownDeviceError
from simulator.faults import Fault, FaultInjector, FaultRecord, fault_kind
from simulator.signals import SourceKind, make_source

log = logging.getLogger(__name__)

MIX = ("motor", "mill", "turbofan")
LAG_RESET_S = 1.0  # behind schedule by more than this: drop the backlog instead of bursting
MAX_BURST = 256  # publishes between two socket polls, so acks keep flowing under load
MISC_EVERY_S = 0.5
RECONNECT_EVERY_S = 1.0


class _Driver(threading.Thread):
    """Runs a slice of the fleet: pacing, publishing and socket I/O on one thread."""

    def __init__(self, name: str, devices: list[SimulatedDevice], host: str, port: int) -> None:
        super().__init__(name=name, daemon=True)
        self.devices = devices
        self.host, self.port = host, port
        self.lagged = 0  # samples dropped because this thread fell behind schedule
        self.stopping = threading.Event()
        self.drain_deadline = 0.0
        self.commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._sel = selectors.DefaultSelector()
        self._socks: dict[SimulatedDevice, Any] = {}

    def _watch(self, dev: SimulatedDevice) -> None:
        """Keep the selector registration in step with the client's current socket."""
        sock = None if dev.crashed else dev.client.socket()
        old = self._socks.get(dev)
        if sock is old:
            return
        if old is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(old)
            del self._socks[dev]
        if sock is not None:
            self._sel.register(sock, selectors.EVENT_READ, dev)
            self._socks[dev] = sock

    def crash(self, dev: SimulatedDevice) -> None:
        """Crash a device of this thread, unregistering its socket before it is closed."""
        # Unregister first: a closed fd number is soon reused by another client's socket.
        dev.crashed = True
        self._watch(dev)
        dev.crash()

    def _io(self, timeout: float) -> None:
        for dev in self.devices:
            if not dev.crashed and dev.client.want_write():
                dev.client.loop_write()
                self._watch(dev)  # a failed write closes the socket
        for key, _ in self._sel.select(timeout):
            dev = key.data
            if not dev.crashed:
                dev.client.loop_read()
                self._watch(dev)

    def _misc(self, now: float, next_retry: dict[SimulatedDevice, float]) -> None:
        for dev in self.devices:
            if dev.crashed:
                continue
            dev.client.loop_misc()
            lost = not dev.connected and dev.client.socket() is None
            if lost and not self.stopping.is_set() and now >= next_retry.get(dev, 0.0):
                next_retry[dev] = now + RECONNECT_EVERY_S
                try:
                    dev.reconnect()
                except OSError as exc:
                    log.debug("%s reconnect failed: %s", dev.device_id, exc)
            self._watch(dev)

    def run(self) -> None:
        """Publish on schedule until asked to stop, then drain acks and disconnect cleanly."""
        for dev in self.devices:
            self._watch(dev)
        # Let every CONNACK in before the clock starts, so no sample is skipped at start-up.
        while not self.stopping.is_set() and not all(d.connected or d.error for d in self.devices):
            self._io(0.01)
        start = time.monotonic()
        heap: list[tuple[float, int, SimulatedDevice]] = []
        for i, dev in enumerate(self.devices):
            # Spread first samples over one interval so devices do not publish in lockstep.
            interval = 1.0 / dev.rate_hz
            heap.append((start + interval * i / max(len(self.devices), 1), i, dev))
        heapq.heapify(heap)
        next_misc, next_retry = start, dict[SimulatedDevice, float]()
        while not self.stopping.is_set():
            self._run_commands()
            now = time.monotonic()
            burst = 0
            while heap and heap[0][0] <= now and burst < MAX_BURST:
                due, i, dev = heapq.heappop(heap)
                interval = 1.0 / dev.rate_hz
                if now - due > LAG_RESET_S:
                    missed = int((now - due) / interval)
                    self.lagged += missed
                    due += missed * interval
                if dev.can_publish:
                    dev.publish_sample()
                    burst += 1
                elif not dev.crashed:
                    dev.skipped += 1
                heapq.heappush(heap, (due + interval, i, dev))
            if now >= next_misc:
                self._misc(now, next_retry)
                next_misc = now + MISC_EVERY_S
            wait = 0.0 if burst >= MAX_BURST or not heap else heap[0][0] - time.monotonic()
            self._io(min(max(wait, 0.0), 0.05))
        self._shutdown()

    def _run_commands(self) -> None:
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return
            cmd()
            for dev in self.devices:
                self._watch(dev)

    def _wait(self, done: Callable[[], bool]) -> None:
        while not done() and time.monotonic() < self.drain_deadline:
            self._run_commands()
            self._io(0.01)
            now = time.monotonic()
            self._misc(now, {})

    def _shutdown(self) -> None:
        live = [d for d in self.devices if not d.crashed]
        self._wait(lambda: all(d.pending == 0 or not d.connected for d in live))
        online = [d for d in live if d.connected]
        for dev in online:
            dev.say_offline()
        self._wait(lambda: all(d.offline_acked or not d.connected for d in online))
        for dev in online:
            dev.disconnect()
            self._watch(dev)
        self._wait(lambda: all(d.client.socket() is None for d in online))
        self._sel.close()


class Fleet:
    """N simulated devices publishing at ``rate_hz`` each, with fault injection and counters."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        n_devices: int = 10,
        rate_hz: float = 1.0,
        profile: str = "motor",
        *,
        seed: int | None = None,
        source: SourceKind = "replay",
        id_prefix: str = "",
        threads: int = 1,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        keepalive_s: int = 30,
        mark_simulated: bool | None = None,
        login: Callable[[str], BrokerLogin] | None = None,
    ) -> None:
        """``login`` gives each device id its broker account (None: connect without one)."""
        if n_devices < 1:
            raise SimulatorError("a fleet needs at least one device")
        if rate_hz <= 0:
            raise SimulatorError(f"rate must be positive, not {rate_hz}")
        if profile != "mix" and profile not in PROFILES:
            raise SimulatorError(f"unknown profile {profile!r}; known: mix, {', '.join(PROFILES)}")
        if not 1 <= max_inflight < 60_000:
            raise SimulatorError("max_inflight must be between 1 and 60,000 (paho mid wrap)")
        self.host, self.port, self.rate_hz = host, port, rate_hz
        rng = random.Random(seed)
        kinds = [MIX[i % len(MIX)] if profile == "mix" else profile for i in range(n_devices)]
        self.devices: dict[str, SimulatedDevice] = {}
        for kind in dict.fromkeys(kinds):
            count = kinds.count(kind)
            for k in range(count):
                dev_rng = random.Random(rng.getrandbits(64))
                src = make_source(kind, source, k, count, dev_rng)
                dev_id = f"{id_prefix}{kind}-{k + 1:03d}"
                self.devices[dev_id] = SimulatedDevice(
                    dev_id,
                    src,
                    rate_hz=rate_hz,
                    injector=FaultInjector(src.profile, dev_rng),
                    max_inflight=max_inflight,
                    keepalive_s=keepalive_s,
                    mark_simulated=mark_simulated,
                    login=login(dev_id) if login is not None else None,
                )
        ordered = list(self.devices.values())
        n_threads = max(1, min(threads, len(ordered)))
        self._drivers = [
            _Driver(f"smaint-sim-{t}", ordered[t::n_threads], host, port) for t in range(n_threads)
        ]
        self._records: list[FaultRecord] = []
        self._lock = threading.Lock()
        for dev in ordered:
            dev.on_fault = self._remember  # scenarios requested over MQTT join the log
        self._started_at: float | None = None
        self._stopped_at: float | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> Fleet:
        """Connect every device, wait for every CONNACK, then start publishing."""
        opened: list[SimulatedDevice] = []
        try:
            for dev in self.devices.values():
                dev.connect(self.host, self.port)
                opened.append(dev)
        except OSError as exc:
            for dev in opened:
                dev.disconnect()  # no CONNACK read yet, but the socket must not leak
            raise SimulatorError(
                f"cannot reach MQTT broker {self.host}:{self.port}: {exc}"
            ) from exc
        self._started_at = time.monotonic()
        for drv in self._drivers:
            drv.start()
        deadline = time.monotonic() + timeout_s
        while not all(d.connected for d in self.devices.values()):
            errors = [d.error for d in self.devices.values() if d.error]
            if errors or time.monotonic() > deadline:
                self.stop(timeout_s=1.0)
                raise SimulatorError(errors[0] if errors else "devices did not connect in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop publishing, wait for every ack, publish offline, disconnect; return stats()."""
        deadline = time.monotonic() + timeout_s
        for drv in self._drivers:
            drv.drain_deadline = deadline
            drv.stopping.set()
        for drv in self._drivers:
            if drv.is_alive():
                drv.join(max(deadline - time.monotonic(), 0.0) + 1.0)
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        return self.stats()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- control -------------------------------------------------------------------------

    def device(self, device_id: str) -> SimulatedDevice:
        """The device called ``device_id``; UnknownDeviceError otherwise."""
        try:
            return self.devices[device_id]
        except KeyError:
            raise UnknownDeviceError(device_id, list(self.devices)) from None

    def inject(
        self,
        device_id: str,
        kind: str,
        *,
        samples: int | None = None,
        seconds: float | None = None,
        after_s: float = 0.0,
        metric: str | None = None,
        magnitude: float = 1.0,
    ) -> FaultRecord:
        """Inject a SIMULATED fault into one device; returns its ground-truth record.

        Duration is ``samples`` readings, or ``seconds`` at the fleet's rate; by default 3
        readings for a spike and 10 s for the other kinds.
        """
        dev = self.device(device_id)
        fk = fault_kind(kind)
        if samples is None:
            secs = seconds if seconds is not None else (3 / self.rate_hz if fk == "spike" else 10)
            samples = max(1, round(secs * self.rate_hz))
        fault = Fault(fk, samples, round(after_s * self.rate_hz), metric, magnitude)
        if metric is not None:
            dev.profile.metric(metric)  # KeyError now rather than in the driver thread
        record = FaultRecord(device_id, fault)
        self._remember(record)
        dev.inject(record)
        return record

    def _remember(self, record: FaultRecord) -> None:
        with self._lock:
            self._records.append(record)

    def crash(self, device_id: str, timeout_s: float = 5.0) -> None:
        """Kill a device uncleanly (socket closed, no DISCONNECT) so its last will fires."""
        dev = self.device(device_id)
        drv = next(d for d in self._drivers if dev in d.devices)
        done = threading.Event()

        def _crash() -> None:
            drv.crash(dev)
            done.set()

        if drv.is_alive():
            drv.commands.put(_crash)
            if not done.wait(timeout_s):
                raise SimulatorError(f"{device_id} did not crash within {timeout_s} s")
        else:
            _crash()

    # --- counters ------------------------------------------------------------------------

    @property
    def published(self) -> int:
        """Telemetry messages the broker acknowledged (QoS 1 PUBACK), all devices."""
        return sum(d.published for d in self.devices.values())

    @property
    def sent(self) -> int:
        """Telemetry publish attempts accepted by paho, all devices."""
        return sum(d.sent for d in self.devices.values())

    def per_device(self) -> dict[str, int]:
        """Acknowledged telemetry per device."""
        return {k: d.published for k, d in self.devices.items()}

    def keys(self) -> set[tuple[str, str, int]]:
        """Every acknowledged (device, boot, seq) across the fleet."""
        out: set[tuple[str, str, int]] = set()
        for d in self.devices.values():
            out |= d.keys()
        return out

    def faults(self) -> list[dict[str, object]]:
        """Ground truth of every SIMULATED fault injected so far."""
        with self._lock:
            return [r.as_dict() for r in self._records]

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-friendly dict (what the CLI prints)."""
        devs = self.devices.values()
        end = self._stopped_at or time.monotonic()
        elapsed = end - self._started_at if self._started_at is not None else 0.0
        published = self.published
        return {
            "published": published,
            "sent": self.sent,
            "pending": sum(d.pending for d in devs),
            "skipped": sum(d.skipped for d in devs),
            "lagged": sum(drv.lagged for drv in self._drivers),
            "devices": len(self.devices),
            "connected": sum(d.connected for d in devs),
            "crashed": sum(d.crashed for d in devs),
            "rate_hz_per_device": self.rate_hz,
            "elapsed_s": round(elapsed, 3),
            "published_per_s": round(published / elapsed, 1) if elapsed > 0 else 0.0,
            "per_device": self.per_device(),
            "faults": self.faults(),
        }
