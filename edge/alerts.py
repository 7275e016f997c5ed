"""Alert lifecycle per device: open after k anomalous readings in a row, resolve after m normal.

Requiring a run of readings on both edges is the hysteresis that keeps one noisy sensor from
opening and closing an alert on every sample (an alert storm).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from edge.score import Score
from shared.schemas import Alert

Severity = Literal["low", "medium", "high"]


def severity_for(score: float, threshold: float) -> Severity:
    """Severity by how far the score overshoots the threshold: <2x low, <4x medium, else high."""
    if score < 2 * threshold:
        return "low"
    if score < 4 * threshold:
        return "medium"
    return "high"


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert's new version and what happened to it."""

    kind: Literal["opened", "escalated", "resolved"]
    alert: Alert


@dataclass
class _DeviceState:
    anomalous_run: int = 0
    normal_run: int = 0
    open: Alert | None = None


class AlertTracker:
    """Turns a stream of scores into alert openings, escalations and resolutions."""

    def __init__(self, open_after: int = 3, resolve_after: int = 5, threshold: float = 6.0) -> None:
        self.open_after = open_after
        self.resolve_after = resolve_after
        self.threshold = threshold
        self._devices: dict[str, _DeviceState] = {}

    def load(self, open_alerts: Iterable[Alert]) -> None:
        """Resume alerts that were open when the gateway stopped, so none is opened twice."""
        for alert in open_alerts:
            self._state(alert.device).open = alert

    @property
    def open_count(self) -> int:
        """Alerts open right now."""
        return sum(1 for s in self._devices.values() if s.open is not None)

    def _state(self, device: str) -> _DeviceState:
        st = self._devices.get(device)
        if st is None:
            st = self._devices[device] = _DeviceState()
        return st

    def observe(self, device: str, ts_ms: int, score: Score, now_ms: int) -> AlertChange | None:
        """Feed one scored reading; returns the change if an alert opened, escalated or resolved."""
        if score.value is None:
            return None  # warming up: neither evidence for nor against a fault
        st = self._state(device)
        if score.anomalous:
            st.anomalous_run += 1
            st.normal_run = 0
            return self._anomalous(st, device, ts_ms=ts_ms, value=score.value, score=score,
                                   now_ms=now_ms)
        st.normal_run += 1
        st.anomalous_run = 0
        if st.open is not None and st.normal_run >= self.resolve_after:
            resolved = st.open.model_copy(update={
                "state": "resolved", "resolved_ms": ts_ms,
                "updated_ms": max(now_ms, st.open.updated_ms + 1),
            })
            st.open = None
            return AlertChange("resolved", resolved)
        return None

    def _anomalous(self, st: _DeviceState, device: str, *, ts_ms: int, value: float,
                   score: Score, now_ms: int) -> AlertChange | None:
        if st.open is None:
            if st.anomalous_run < self.open_after:
                return None
            st.open = Alert(
                alert_id=str(uuid.uuid4()), device=device, opened_ms=ts_ms,
                severity=severity_for(value, self.threshold), state="open", score=value,
                scorer=score.scorer, model_version=score.model_version,
                explanation=dict(score.contributions), updated_ms=now_ms,
            )
            return AlertChange("opened", st.open)
        if value <= st.open.score:
            return None
        # Escalate: the alert reports its peak, and what drove the peak.
        st.open = st.open.model_copy(update={
            "score": value, "severity": severity_for(value, self.threshold),
            "explanation": dict(score.contributions),
            "updated_ms": max(now_ms, st.open.updated_ms + 1),
        })
        return AlertChange("escalated", st.open)
