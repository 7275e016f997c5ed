"""Event-based figures of alerts against labelled failures, the way a plant engineer counts.

A labelled set is a list of devices; each device has rows a detector may fit on (never
scored), labelled events and healthy rows. An event is a window of rows in which an alert
counts as a warning of that failure, plus the row of the failure itself. For one detector:

- an event is *detected* when an alert opens inside its window;
- a *false alert* is an alert opening on a healthy row (rows that are neither healthy nor
  in an event window, e.g. a turbofan's degrading middle life, count neither way);
- precision = detected / (detected + false alerts), recall = detected / events, F1 their
  harmonic mean (each event counts once however many alerts it drew);
- lead time = failure row minus the row of the first alert in the event's window, in
  readings and, where rows have timestamps, in hours (negative: after the labelled row);
- false alerts per device-day = false alerts / healthy device-days, where a device-day is
  24 h of healthy rows by their timestamps, or a documented number of readings per day for
  data without time (LabelledSet.readings_per_day).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Bools = npt.NDArray[np.bool_]
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Event:
    """Alerts in rows [first, last] detect it; ``failure`` is the labelled failure row."""

    first: int
    last: int
    failure: int


@dataclass(frozen=True)
class Device:
    """One device's replay with its labels."""

    name: str
    values: npt.NDArray[np.float64]  # (rows, metrics)
    epoch_ms: npt.NDArray[np.int64]
    fit_rows: int
    events: tuple[Event, ...]
    healthy: Bools
    timed: bool = True  # False: epoch_ms is a stand-in clock, there is no lead time in hours


@dataclass(frozen=True)
class LabelledSet:
    """Devices of one sensor profile, and what their labels mean."""

    name: str
    profile: str
    metrics: tuple[str, ...]
    devices: tuple[Device, ...]
    definition: str
    readings_per_day: float | None = None  # None: from the timestamps
    fleet_model: bool = False  # one model fitted on every device's fit rows


def _device_days(s: LabelledSet) -> float:
    total = 0.0
    for d in s.devices:
        healthy = int(d.healthy.sum())
        if s.readings_per_day is not None:
            total += healthy / s.readings_per_day
        elif healthy:
            step = float(np.median(np.diff(d.epoch_ms))) if len(d.epoch_ms) > 1 else 0.0
            total += healthy * step / _DAY_MS
    return total


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def event_figures(s: LabelledSet, openings: list[Bools]) -> dict[str, float | int | None]:
    """Precision, recall, F1, lead time and false alerts of one detector's alert openings."""
    events = detected = false_alerts = alerts = 0
    lead_rows: list[int] = []
    lead_hours: list[float] = []
    for d, opened in zip(s.devices, openings, strict=True):
        live = np.asarray(opened, dtype=bool).copy()
        live[:d.fit_rows] = False
        alerts += int(live.sum())
        false_alerts += int((live & d.healthy).sum())
        for e in d.events:
            events += 1
            hits = np.flatnonzero(live[e.first:e.last + 1])
            if hits.size == 0:
                continue
            detected += 1
            row = e.first + int(hits[0])
            lead_rows.append(e.failure - row)
            if d.timed:
                lead_hours.append((int(d.epoch_ms[e.failure]) - int(d.epoch_ms[row])) / 3.6e6)
    precision = _ratio(detected, detected + false_alerts)
    recall = _ratio(detected, events)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else 0.0)
    days = _device_days(s)
    healthy_rows = sum(int(d.healthy.sum()) for d in s.devices)
    return {
        "events": events,
        "detected": detected,
        "alerts": alerts,
        "false_alerts": false_alerts,
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "lead_readings_median": statistics.median(lead_rows) if lead_rows else None,
        "lead_hours_median": _round(statistics.median(lead_hours)) if lead_hours else None,
        "healthy_device_days": _round(days),
        "false_alerts_per_device_day": _round(_ratio(false_alerts, days)),
        "false_alerts_per_1k_healthy_readings": _round(
            _ratio(1000 * false_alerts, healthy_rows)),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
