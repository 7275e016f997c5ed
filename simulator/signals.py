"""Per-profile signal sources: replays of public data sets, and smooth synthetic baselines.

Replays: NAB machine temperature drives ``motor`` (°F converted to °C, with vibration and
current synthesised from it), AI4I 2020 rows drive ``mill``, C-MAPSS FD001 engines drive
``turbofan``. Provenance and licenses: ``simulator/data/README.md``. Files are read on
first use, not at import time, and cached for the process.
"""

from __future__ import annotations

import csv
import math
import random
from functools import lru_cache
from importlib import resources
from typing import Literal, Protocol

from shared.sensors import SensorProfile, profile
from simulator.exceptions import SimulatorError
from simulator.faults import FAULT_KINDS, Fault, FaultInjector, FaultKind, FaultRecord

__all__ = [
    "CMAPSS_COLUMNS",
    "FAULT_KINDS",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultRecord",
    "MillReplay",
    "MotorReplay",
    "SignalSource",
    "SourceKind",
    "Synthetic",
    "TurbofanReplay",
    "make_source",
]

SourceKind = Literal["replay", "synthetic"]

NAB_FILE = "machine_temperature_system_failure.csv"
AI4I_FILE = "ai4i2020.csv"
CMAPSS_FILE = "train_FD001.txt"

# 0-based column of each turbofan metric in train_FD001.txt (unit, cycle, 3 settings, s1..s21):
# sensor sN sits at index 4 + N. Names per Saxena et al. 2008, Table 2.
CMAPSS_COLUMNS: dict[str, int] = {
    "t24_r": 4 + 2,  # s2  T24
    "t30_r": 4 + 3,  # s3  T30
    "t50_r": 4 + 4,  # s4  T50
    "p30_psia": 4 + 7,  # s7  P30
    "nf_rpm": 4 + 8,  # s8  Nf
    "nc_rpm": 4 + 9,  # s9  Nc
    "ps30_psia": 4 + 11,  # s11 Ps30
    "phi": 4 + 12,  # s12 phi
}

AI4I_COLUMNS: dict[str, str] = {
    "air_temperature_k": "Air temperature [K]",
    "process_temperature_k": "Process temperature [K]",
    "rotational_speed_rpm": "Rotational speed [rpm]",
    "torque_nm": "Torque [Nm]",
    "tool_wear_min": "Tool wear [min]",
}


class SignalSource(Protocol):
    """Yields one reading (metric name -> value in the profile's units) per call."""

    profile: SensorProfile

    def next(self) -> dict[str, float]:
        """The next reading."""
        ...


def _data_lines(name: str, encoding: str = "utf-8") -> list[str]:
    path = resources.files("simulator").joinpath("data").joinpath(name)
    # splitlines() also drops the CRLF endings of the AI4I file; no field spans lines.
    return path.read_text(encoding=encoding).splitlines()


@lru_cache(maxsize=1)
def nab_machine_temperature_f() -> tuple[float, ...]:
    """NAB machine temperature values (°F by their range), in file row order."""
    rows = csv.DictReader(_data_lines(NAB_FILE))
    return tuple(float(r["value"]) for r in rows)


@lru_cache(maxsize=1)
def ai4i_rows() -> tuple[tuple[float, ...], ...]:
    """AI4I 2020 rows as tuples in the ``mill`` profile's metric order."""
    # The file starts with a BOM: utf-8-sig keeps it out of the first header.
    rows = csv.DictReader(_data_lines(AI4I_FILE, encoding="utf-8-sig"))
    order = profile("mill").metric_names
    return tuple(tuple(float(r[AI4I_COLUMNS[m]]) for m in order) for r in rows)


@lru_cache(maxsize=1)
def cmapss_units() -> tuple[tuple[tuple[float, ...], ...], ...]:
    """C-MAPSS FD001 training engines, each a tuple of cycles in ``turbofan`` metric order."""
    order = profile("turbofan").metric_names
    units: dict[int, list[tuple[float, ...]]] = {}
    for line in _data_lines(CMAPSS_FILE):
        cols = line.split()  # lines end in trailing spaces: split() not split(" ")
        if cols:
            row = tuple(float(cols[CMAPSS_COLUMNS[m]]) for m in order)
            units.setdefault(int(cols[0]), []).append(row)
    return tuple(tuple(units[u]) for u in sorted(units))


def clamp(prof: SensorProfile, metrics: dict[str, float]) -> dict[str, float]:
    """Clip every value into its metric's physical range (the gateway rejects anything else)."""
    out = {}
    for m in prof.metrics:
        out[m.name] = min(max(metrics[m.name], m.low), m.high)
    return out


class MotorReplay:
    """``motor`` from NAB machine temperature, plus vibration and current synthesised from it."""

    def __init__(self, offset: int, rng: random.Random) -> None:
        self.profile = profile("motor")
        self._temps = nab_machine_temperature_f()
        self._i = offset % len(self._temps)
        self._rng = rng

    def next(self) -> dict[str, float]:
        """The next row, °F -> °C, with correlated synthetic vibration and current."""
        temp_c = (self._temps[self._i] - 32.0) * 5.0 / 9.0
        self._i = (self._i + 1) % len(self._temps)
        # A hotter machine works harder: vibration and current rise with temperature. Below
        # freezing the NAB series is a shutdown, so the motor idles.
        load = max(temp_c, 0.0)
        g = self._rng.gauss
        vib = 0.15 + 0.012 * load + g(0.0, 0.02)
        current = (6.0 + 0.2 * load + g(0.0, 0.3)) if temp_c > 0.0 else 0.4 + abs(g(0.0, 0.05))
        return clamp(
            self.profile, {"temperature_c": temp_c, "vibration_rms_g": vib, "current_a": current}
        )


class MillReplay:
    """``mill`` from AI4I 2020 rows (independent process runs), in file order from ``offset``."""

    def __init__(self, offset: int) -> None:
        self.profile = profile("mill")
        self._rows = ai4i_rows()
        self._i = offset % len(self._rows)
        self._names = self.profile.metric_names

    def next(self) -> dict[str, float]:
        """The next row."""
        row = self._rows[self._i]
        self._i = (self._i + 1) % len(self._rows)
        return dict(zip(self._names, row, strict=True))


class TurbofanReplay:
    """``turbofan`` from one C-MAPSS FD001 engine, one cycle per reading, run to failure.

    After the failure cycle the device moves on to the next engine, as if it were replaced.
    """

    def __init__(self, unit: int, offset: int = 0) -> None:
        self.profile = profile("turbofan")
        self._units = cmapss_units()
        self._unit = unit % len(self._units)
        self._i = offset % len(self._units[self._unit])
        self._names = self.profile.metric_names

    @property
    def unit(self) -> int:
        """The C-MAPSS unit number (1-based, as in the file) being replayed now."""
        return self._unit + 1

    def next(self) -> dict[str, float]:
        """The next cycle."""
        cycles = self._units[self._unit]
        row = cycles[self._i]
        self._i += 1
        if self._i >= len(cycles):
            self._unit, self._i = (self._unit + 1) % len(self._units), 0
        return dict(zip(self._names, row, strict=True))


# Nominal value, slow-wave amplitude and noise sd per metric: healthy-machine figures read off
# the replay data sets, so synthetic and replayed devices look alike to a detector.
_BASELINES: dict[str, tuple[float, float, float]] = {
    "temperature_c": (55.0, 3.0, 0.3),
    "vibration_rms_g": (0.5, 0.05, 0.02),
    "current_a": (12.0, 1.0, 0.2),
    "air_temperature_k": (300.0, 2.0, 0.1),
    "process_temperature_k": (310.0, 1.5, 0.1),
    "rotational_speed_rpm": (1540.0, 50.0, 20.0),
    "torque_nm": (40.0, 3.0, 1.5),
    "t24_r": (642.5, 0.3, 0.1),
    "t30_r": (1590.0, 2.0, 1.0),
    "t50_r": (1408.0, 3.0, 1.5),
    "p30_psia": (553.5, 0.5, 0.3),
    "nf_rpm": (2388.1, 0.03, 0.02),
    "nc_rpm": (9060.0, 10.0, 5.0),
    "ps30_psia": (47.5, 0.1, 0.05),
    "phi": (521.5, 0.4, 0.2),
}
_PERIOD = 600.0  # samples per slow wave: smooth at any rate
_TOOL_LIFE_MIN = 240.0


class Synthetic:
    """A smooth baseline (slow sine) plus Gaussian noise for every metric of a profile."""

    def __init__(self, prof: SensorProfile, rng: random.Random) -> None:
        self.profile = prof
        self._rng = rng
        self._t = 0
        self._phase = rng.uniform(0.0, 2 * math.pi)
        self._wear = rng.uniform(0.0, _TOOL_LIFE_MIN)

    def next(self) -> dict[str, float]:
        """The next reading."""
        wave = math.sin(2 * math.pi * self._t / _PERIOD + self._phase)
        self._t += 1
        out: dict[str, float] = {}
        for m in self.profile.metrics:
            if m.name == "tool_wear_min":
                # Wear accumulates, then the tool is changed.
                self._wear = (self._wear + 0.5) % _TOOL_LIFE_MIN
                out[m.name] = self._wear
                continue
            default = (m.low + 0.3 * (m.high - m.low), 0.02 * (m.high - m.low), 0.0)
            nominal, amp, sd = _BASELINES.get(m.name, default)
            out[m.name] = nominal + amp * wave + self._rng.gauss(0.0, sd)
        return clamp(self.profile, out)


def make_source(
    profile_name: str, kind: SourceKind, index: int, count: int, rng: random.Random
) -> SignalSource:
    """The source for the ``index``-th of ``count`` devices of a profile, each at its own offset."""
    prof = profile(profile_name)
    if kind == "synthetic":
        return Synthetic(prof, rng)
    count = max(count, 1)
    if profile_name == "motor":
        n = len(nab_machine_temperature_f())
        return MotorReplay(index * n // count + rng.randrange(n // count), rng)
    if profile_name == "mill":
        n = len(ai4i_rows())
        return MillReplay(index * n // count + rng.randrange(n // count))
    if profile_name == "turbofan":
        # One engine per device; past 100 devices engines repeat, shifted by some cycles.
        units = len(cmapss_units())
        return TurbofanReplay(index, offset=(index // units) * 37)
    raise SimulatorError(f"no replay data for profile {profile_name!r}; use synthetic")
