"""Re-timing readings: device-clock skew against the gateway clock, and unsynced clocks.

Every reading carries ``uptime_ms`` (time since its boot) next to ``ts_ms`` (device clock), so
each boot has an epoch: the wall-clock time it started. Two estimates of it are kept per boot:

* the **device epoch**, ``ts_ms - uptime_ms`` of a reading whose clock was synced and agreed
  with the gateway's estimate;
* the **gateway epoch**, the smallest ``received_ms - uptime_ms`` seen. A reading cannot arrive
  before it was taken, so each value is an upper bound of the true epoch and the smallest is
  the tightest: live readings pin it within the delivery latency, and readings held back by
  the broker during an outage do not drag it.

A synced reading whose device epoch is more than the tolerance away from the gateway epoch has
a skewed clock: its time becomes ``gateway epoch + uptime`` (flagged ``corrected``), its
device clock is kept as ``device_ts_ms``. An unsynced reading is re-timed from the boot's
device epoch once a synced reading of the same boot has taught it (``boot``), until then from
the gateway epoch (``uptime``). Nothing is thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TimeSource = Literal["device", "corrected", "boot", "uptime"]
TIME_SOURCES: tuple[TimeSource, ...] = ("device", "corrected", "boot", "uptime")
_MAX_MS = 2**53  # the wire contract's EpochMs bound


@dataclass(slots=True)
class BootClock:
    """What the gateway has learnt about one boot's clock (epochs in Unix ms)."""

    device_epoch_ms: int | None = None
    gateway_epoch_ms: int | None = None


def _clamp(ms: int) -> int:
    return min(max(ms, 0), _MAX_MS)


def retime(clock: BootClock, *, ts_ms: int, uptime_ms: int, synced: bool, received_ms: int,
           tolerance_ms: int) -> tuple[int, TimeSource]:
    """The best sampling time of one reading and where it came from; updates ``clock``."""
    estimate = received_ms - uptime_ms
    if clock.gateway_epoch_ms is None or estimate < clock.gateway_epoch_ms:
        clock.gateway_epoch_ms = estimate
    gateway_epoch = clock.gateway_epoch_ms
    if synced:
        claimed = ts_ms - uptime_ms
        if abs(claimed - gateway_epoch) <= tolerance_ms:
            clock.device_epoch_ms = claimed
            return ts_ms, "device"
        return _clamp(gateway_epoch + uptime_ms), "corrected"
    if clock.device_epoch_ms is not None:
        return _clamp(clock.device_epoch_ms + uptime_ms), "boot"
    return _clamp(gateway_epoch + uptime_ms), "uptime"
