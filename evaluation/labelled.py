"""The bundled real labelled sets, as devices with events (evaluation.events).

- ``nab_system_failure``: NAB's realKnownCause ``*system_failure*`` series (machine
  temperature, ambient temperature, EC2 request latency), one device each. Events are NAB's
  label windows; the failure row is the point label inside each window. Detectors fit on
  NAB's probationary rows; healthy rows are the later rows outside every window.
- ``ai4i2020``: AI4I 2020 as one ``mill`` stream in row order. Each row is one machining
  run, so a failure shows in its own row (and, for tool wear and overstrain, in the tool
  wear that led to it). An event is a row with ``Machine failure`` = 1; its window runs from
  5 rows before it to 2 rows after it (a tracker that confirms over a few readings opens up
  to 2 rows late); overlapping windows merge into one event whose failure row is its first.
  Detectors fit on the first 750 rows (NAB's probation rule; 19 failures lie in them and
  are not scored). Healthy rows are the rows outside every window. A device-day is 24 h of
  machining: each run adds 2, 3 or 5 min of tool wear (by quality variant), so a day is
  1,440 min over the mean increment, about 554 rows.
- ``cmapss_fd001``: C-MAPSS FD001, each of the 100 training engines one ``turbofan`` device
  replayed cycle by cycle to its failure (the last cycle). The failure onset is the last
  50 cycles: an alert there detects the engine's failure. Healthy rows are cycles more than
  125 cycles before failure (the usual knee of C-MAPSS's piecewise-linear remaining-life
  labels); cycles in between count neither way. One model is fitted on every engine's first
  50 cycles (the fleet's early life). No timestamps: a device-day is taken as 5 flight
  cycles (an assumption: a short-haul engine flies about five a day).
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from evaluation.events import Device, Event, LabelledSet
from evaluation.nab import corpus_names, load_series, probation_rows
from shared.sensors import profile
from simulator.signals import AI4I_COLUMNS, AI4I_FILE, cmapss_units

SETS = ("nab_system_failure", "ai4i2020", "cmapss_fd001")
AI4I_BEFORE = 5
AI4I_AFTER = 2
CMAPSS_FIT = 50
CMAPSS_ONSET = 50
CMAPSS_HEALTHY_RUL = 125
CMAPSS_CYCLES_PER_DAY = 5.0
_MINUTE_MS = 60_000


def _clock(rows: int) -> np.ndarray:
    """A stand-in clock (one reading a minute) for data without time: the tracker needs one."""
    return np.arange(rows, dtype=np.int64) * _MINUTE_MS


def nab_system_failure(root: Path | None = None, limit: int | None = None) -> LabelledSet:
    """NAB's realKnownCause system-failure series, one device each."""
    devices = []
    for i, name in enumerate(corpus_names(root, "realKnownCause/*system_failure*.csv")[:limit]):
        s = load_series(name, root)
        events = []
        healthy = np.arange(s.rows) >= s.probation
        for first, last in s.windows:
            inside = [r for r in s.labels if first <= r <= last]
            events.append(Event(first, last, inside[0] if inside else (first + last) // 2))
            healthy[first:last + 1] = False
        devices.append(Device(name=f"nab-{i + 1:04d}", values=s.values.reshape(-1, 1),
                              epoch_ms=s.epoch_ms, fit_rows=s.probation,
                              events=tuple(events), healthy=healthy))
    return LabelledSet(name="nab_system_failure", profile="nab", metrics=("value",),
                       devices=tuple(devices),
                       definition="NAB label windows; failure = the point label in each")


def _ai4i_table() -> tuple[np.ndarray, np.ndarray]:
    path = resources.files("simulator").joinpath("data").joinpath(AI4I_FILE)
    # The file starts with a BOM: utf-8-sig keeps it out of the first header.
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    order = profile("mill").metric_names
    values = np.asarray([[float(r[AI4I_COLUMNS[m]]) for m in order] for r in rows])
    failed = np.asarray([r["Machine failure"] == "1" for r in rows])
    return values, failed


def ai4i() -> LabelledSet:
    """AI4I 2020 as one mill stream in row order."""
    values, failed = _ai4i_table()
    n = len(values)
    fit = probation_rows(n)
    windows: list[list[int]] = []
    for r in np.flatnonzero(failed[fit:]) + fit:
        lo, hi = max(fit, int(r) - AI4I_BEFORE), min(n - 1, int(r) + AI4I_AFTER)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi, int(r)])
    healthy = np.arange(n) >= fit
    for lo, hi, _ in windows:
        healthy[lo:hi + 1] = False
    wear = np.diff(values[:, profile("mill").metric_names.index("tool_wear_min")])
    per_day = 1440.0 / float(wear[wear > 0].mean())
    device = Device(name="mill-0001", values=values, epoch_ms=_clock(n), fit_rows=fit,
                    events=tuple(Event(lo, hi, f) for lo, hi, f in windows),
                    healthy=healthy, timed=False)
    return LabelledSet(name="ai4i2020", profile="mill", metrics=profile("mill").metric_names,
                       devices=(device,), readings_per_day=per_day,
                       definition=f"failure rows, window -{AI4I_BEFORE}..+{AI4I_AFTER} rows, "
                                  f"merged; device-day = {per_day:.0f} runs")


def cmapss(limit: int | None = None) -> LabelledSet:
    """C-MAPSS FD001's training engines, one turbofan device each, run to failure."""
    devices = []
    for unit, cycles in enumerate(cmapss_units()[:limit], start=1):
        values = np.asarray(cycles, dtype=np.float64)
        n = len(values)
        rul = n - 1 - np.arange(n)
        healthy = (np.arange(n) >= CMAPSS_FIT) & (rul > CMAPSS_HEALTHY_RUL)
        onset = Event(max(CMAPSS_FIT, n - CMAPSS_ONSET), n - 1, n - 1)
        devices.append(Device(name=f"engine-{unit:04d}", values=values, epoch_ms=_clock(n),
                              fit_rows=CMAPSS_FIT, events=(onset,), healthy=healthy,
                              timed=False))
    return LabelledSet(name="cmapss_fd001", profile="turbofan",
                       metrics=profile("turbofan").metric_names, devices=tuple(devices),
                       readings_per_day=CMAPSS_CYCLES_PER_DAY, fleet_model=True,
                       definition=f"onset = last {CMAPSS_ONSET} cycles; healthy = RUL > "
                                  f"{CMAPSS_HEALTHY_RUL}; device-day = "
                                  f"{CMAPSS_CYCLES_PER_DAY:g} cycles")


def load(name: str, devices: int | None = None, nab_root: Path | None = None) -> LabelledSet:
    """One labelled set by name; ``devices`` keeps the first devices (AI4I has one)."""
    if name == "nab_system_failure":
        return nab_system_failure(nab_root, devices)
    if name == "ai4i2020":
        return ai4i()
    if name == "cmapss_fd001":
        return cmapss(devices)
    raise ValueError(f"unknown labelled set {name!r}; choose from {SETS}")
