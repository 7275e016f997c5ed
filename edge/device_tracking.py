"""Device tracking: per-device seq gaps, clocks and message rates.

Seq gaps are counted per (device, boot): a boot whose readings span seqs ``first..last`` and of
which ``n`` distinct ones were stored is missing ``last - first + 1 - n``. A reading that comes
late (a redelivery after a reconnect) raises ``n`` and so closes the gap it had opened; a
redelivery of a stored reading is dropped before it gets here and counts nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.store import BootRow, Store
from edge.timing import BootClock, TimeSource, retime
from shared.schemas import Telemetry

RATE_WINDOW_S = 60


@dataclass(slots=True)
class BootState:
    """One boot of one device: the seqs stored so far and its clock."""

    first_seq: int
    last_seq: int
    n: int
    first_seen_ms: int
    last_seen_ms: int
    clock: BootClock = field(default_factory=BootClock)

    @property
    def missing(self) -> int:
        """Readings of this boot's seq range that never arrived."""
        return max(self.last_seq - self.first_seq + 1 - self.n, 0)


class _Rate:
    """Messages per second over the last minute, in one-second buckets."""

    __slots__ = ("buckets", "since_s")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.since_s: int | None = None  # the first second counted

    def add(self, n: int, now_s: int) -> None:
        if self.since_s is None:
            self.since_s = now_s
        if self.buckets and self.buckets[-1][0] == now_s:
            self.buckets[-1][1] += n
        else:
            self.buckets.append([now_s, n])
        self._trim(now_s)

    def _trim(self, now_s: int) -> None:
        while self.buckets and self.buckets[0][0] <= now_s - RATE_WINDOW_S:
            self.buckets.popleft()

    def per_s(self, now_s: int) -> float:
        self._trim(now_s)
        # Over the seconds counted so far while that is less than the window: a device (or a
        # gateway) 10 s in at 10 readings/s runs at 10/s, not at 100/60.
        counted = now_s - self.since_s + 1 if self.since_s is not None else RATE_WINDOW_S
        return sum(n for _, n in self.buckets) / min(RATE_WINDOW_S, max(counted, 1))


class DeviceTracker:
    """Per-boot seq accounting and clocks, per-device message rates (mirrors ``device_boots``)."""

    def __init__(self, skew_tolerance_ms: int = 120_000) -> None:
        self.skew_tolerance_ms = skew_tolerance_ms
        self.boots: dict[tuple[str, str], BootState] = {}
        self._clocks: dict[tuple[str, str], BootClock] = {}
        self._rates: dict[str, _Rate] = {}
        self._total = _Rate()
        self._staged: list[BootRow] = []

    def load(self, rows: Iterable[BootRow]) -> None:
        """Resume from the ``device_boots`` table after a restart."""
        for (device, boot, first, last, n, first_seen, last_seen, dev_epoch, gw_epoch) in rows:
            clock = BootClock(dev_epoch, gw_epoch)
            self._clocks[(device, boot)] = clock
            self.boots[(device, boot)] = BootState(first, last, n, first_seen, last_seen, clock)

    def retime(self, t: Telemetry, received_ms: int) -> tuple[int, TimeSource]:
        """Sampling time and its source for a new reading (see ``edge.timing``)."""
        clock = self._clocks.setdefault((t.device, t.boot), BootClock())
        return retime(clock, ts_ms=t.ts_ms, uptime_ms=t.uptime_ms, synced=t.synced,
                      received_ms=received_ms, tolerance_ms=self.skew_tolerance_ms)

    def stage(self, new: Sequence[tuple[Telemetry, int]]) -> list[BootRow]:
        """Per-boot deltas of a batch of new readings, for ``Store.upsert_boots``.

        They count once :meth:`commit` is called after the transaction committed; a failed
        transaction leaves them staged until the next batch replaces them.
        """
        acc: dict[tuple[str, str], list[int]] = {}
        for t, received in new:
            row = acc.get((t.device, t.boot))
            if row is None:
                acc[(t.device, t.boot)] = [t.seq, t.seq, 1, received, received]
            else:
                row[0], row[1] = min(row[0], t.seq), max(row[1], t.seq)
                row[2] += 1
                row[3], row[4] = min(row[3], received), max(row[4], received)
        out: list[BootRow] = []
        for (device, boot), (first, last, n, seen0, seen1) in acc.items():
            clock = self._clocks.get((device, boot), BootClock())
            out.append((device, boot, first, last, n, seen0, seen1, clock.device_epoch_ms,
                        clock.gateway_epoch_ms))
        self._staged = out
        return out

    def commit(self) -> None:
        """Apply the staged deltas: their transaction committed."""
        now_s = int(time.monotonic())
        rows, self._staged = self._staged, []
        for device, boot, first, last, n, seen0, seen1, _, _ in rows:
            state = self.boots.get((device, boot))
            if state is None:
                clock = self._clocks.setdefault((device, boot), BootClock())
                self.boots[(device, boot)] = BootState(first, last, n, seen0, seen1, clock)
            else:
                state.first_seq, state.last_seq = min(state.first_seq, first), max(
                    state.last_seq, last)
                state.n += n
                state.first_seen_ms = min(state.first_seen_ms, seen0)
                state.last_seen_ms = max(state.last_seen_ms, seen1)
            self._rates.setdefault(device, _Rate()).add(n, now_s)
            self._total.add(n, now_s)

    def seq_gaps(self) -> int:
        """Readings missing across all devices and boots."""
        return sum(b.missing for b in self.boots.values())

    def device_gaps(self) -> dict[str, int]:
        """Missing readings per device, all boots together."""
        out: dict[str, int] = {}
        for (device, _), state in self.boots.items():
            out[device] = out.get(device, 0) + state.missing
        return out

    def rate(self, device: str) -> float:
        """Stored readings per second of one device over the last minute."""
        r = self._rates.get(device)
        return r.per_s(int(time.monotonic())) if r is not None else 0.0

    def ingest_rate(self) -> float:
        """Stored readings per second, all devices, over the last minute."""
        return self._total.per_s(int(time.monotonic()))

    def report(self, store: Store) -> list[dict[str, Any]]:
        """The /api/devices document: status, last seen, rate and gaps of every device."""
        gaps = self.device_gaps()
        out = []
        for d in store.devices():
            boot = self.boots.get((d["device"], d["boot"]))
            d["seq_gaps"] = gaps.get(d["device"], 0)
            d["boot_seq_gaps"] = boot.missing if boot is not None else 0
            d["boot_readings"] = boot.n if boot is not None else 0
            d["rate_per_s"] = round(self.rate(d["device"]), 3)
            out.append(d)
        return out
