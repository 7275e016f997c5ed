"""SIMULATED fault injection: spike, drift, stuck and noise applied to one device's readings.

Every fault here is a simulation for demos, tests and benchmarks. The fleet keeps a ground-truth
log of each; a reading a fault altered also carries ``"sim": true`` when the device is told to
mark it (simulator.device.MARK_SIMULATED).
Offsets are in units of 10 % of the metric's physical span times ``magnitude``, and results are
clamped into the physical range so the gateway scores them instead of dead-lettering them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import cast

from shared.schemas import SCENARIO_KINDS, ScenarioKind
from shared.sensors import SensorProfile
from simulator.exceptions import SimulatorError

# The wire contract's scenario kinds (shared.schemas): what a ScenarioRequest may ask for.
FaultKind = ScenarioKind
FAULT_KINDS: tuple[str, ...] = SCENARIO_KINDS

# Fraction of a metric's physical span that one unit of magnitude means.
OFFSET_SPAN = 0.10
NOISE_SPAN = 0.02


def fault_kind(name: str) -> FaultKind:
    """Validate a fault kind name; SimulatorError naming the known kinds otherwise."""
    if name in FAULT_KINDS:
        return cast(FaultKind, name)
    raise SimulatorError(f"unknown fault kind {name!r}; known: {', '.join(FAULT_KINDS)}")


@dataclass(frozen=True, slots=True)
class Fault:
    """What to inject: ``kind`` for ``samples`` readings, starting after ``after`` readings.

    ``metric`` None means every metric of the profile (a whole sensor going bad).
    """

    kind: FaultKind
    samples: int
    after: int = 0
    metric: str | None = None
    magnitude: float = 1.0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise SimulatorError(f"a fault lasts at least 1 sample, not {self.samples}")
        if self.after < 0:
            raise SimulatorError(f"a fault cannot start {self.after} samples in the past")


@dataclass(slots=True)
class FaultRecord:
    """Ground truth of one injected (SIMULATED) fault: which readings it altered."""

    device: str
    fault: Fault
    boot: str = ""
    first_seq: int | None = None
    last_seq: int | None = None
    simulated: bool = True
    request: str | None = None  # the ScenarioRequest id, when one asked for it over MQTT

    @property
    def done(self) -> bool:
        """True once the fault has altered all the samples it was asked to."""
        return (
            self.first_seq is not None
            and self.last_seq is not None
            and self.last_seq - self.first_seq + 1 >= self.fault.samples
        )

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view for summaries and UIs."""
        return {
            "device": self.device,
            "kind": self.fault.kind,
            "metric": self.fault.metric,
            "magnitude": self.fault.magnitude,
            "samples": self.fault.samples,
            "boot": self.boot,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "simulated": self.simulated,
            "request": self.request,
        }


@dataclass(slots=True)
class _Active:
    record: FaultRecord
    delay: int
    elapsed: int = 0
    held: dict[str, float] = field(default_factory=dict)


class FaultInjector:
    """Applies queued faults to one device's readings, one sample at a time (not thread-safe)."""

    def __init__(self, profile: SensorProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng
        self._active: list[_Active] = []
        self.altered = False  # whether the last apply() changed the reading (SIMULATED)

    def add(self, record: FaultRecord) -> None:
        """Queue a fault; it starts after ``record.fault.after`` further samples."""
        metric = record.fault.metric
        if metric is not None and metric not in self.profile.metric_names:
            raise SimulatorError(
                f"metric {metric!r} is not part of profile {self.profile.name!r} "
                f"({', '.join(self.profile.metric_names)})"
            )
        self._active.append(_Active(record, delay=record.fault.after))

    @property
    def active(self) -> bool:
        """True while any fault is queued or running."""
        return bool(self._active)

    def apply(self, metrics: dict[str, float], seq: int, boot: str) -> dict[str, float]:
        """Return ``metrics`` with every running fault applied to reading ``seq``."""
        self.altered = False
        if not self._active:
            return metrics
        out = dict(metrics)
        still: list[_Active] = []
        for act in self._active:
            if act.delay > 0:
                act.delay -= 1
                still.append(act)
                continue
            self._apply_one(act, out)
            self.altered = True
            rec = act.record
            if rec.first_seq is None:
                rec.first_seq, rec.boot = seq, boot
            rec.last_seq = seq
            act.elapsed += 1
            if act.elapsed < rec.fault.samples:
                still.append(act)
        self._active = still
        return out

    def _apply_one(self, act: _Active, out: dict[str, float]) -> None:
        fault = act.record.fault
        names = [fault.metric] if fault.metric is not None else list(out)
        for name in names:
            m = self.profile.metric(name)
            span = m.high - m.low
            value = out[name]
            if fault.kind == "spike":
                value += fault.magnitude * OFFSET_SPAN * span
            elif fault.kind == "drift":
                # A ramp that reaches the full offset on the fault's last sample.
                value += fault.magnitude * OFFSET_SPAN * span * (act.elapsed + 1) / fault.samples
            elif fault.kind == "stuck":
                value = act.held.setdefault(name, value)
            else:
                value += self._rng.gauss(0.0, abs(fault.magnitude) * NOISE_SPAN * span)
            out[name] = min(max(value, m.low), m.high)
