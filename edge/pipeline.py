"""One micro-batch through the gateway: validate, drop redeliveries, score, alert, store.

Independent of MQTT so it can be driven by tests, a replay tool or a different transport. The
caller acknowledges the messages to the broker only after :meth:`Pipeline.handle` returned,
i.e. after the transaction holding them committed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from edge.alert_lifecycle import AlertTracker
from edge.device_tracking import DeviceTracker
from edge.score import UNSCORED, Score, Scorer
from edge.store import ReadingKey, ReadingRow, Store, now_ms
from edge.validate import DeadLetter, Incoming, classify
from shared.schemas import Alert, DeviceStatus, Telemetry

log = logging.getLogger(__name__)
# One encoder for every reading's metrics: json.dumps with non-default separators builds a
# new JSONEncoder per call, a third of its cost on the hot path.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(slots=True)
class StageTimes:
    """Seconds one micro-batch spent in each stage of :meth:`Pipeline.handle`."""

    decode: float = 0.0  # topic parsing, JSON decoding and validation
    dedupe: float = 0.0  # the lookup of redelivered (already stored) readings
    score: float = 0.0  # the detectors
    prepare: float = 0.0  # re-timing, alert tracking, building the rows
    commit: float = 0.0  # the SQLite transaction, COMMIT included


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one micro-batch did, for logs and metrics."""

    received: int
    stored: int
    duplicates: int
    dead_letters: int
    statuses: int
    scored: int
    anomalous: int
    alerts_changed: int
    stages: StageTimes = field(default_factory=StageTimes)


@dataclass(slots=True)
class _Prepared:
    """A batch's new readings made ready for its transaction."""

    rows: list[ReadingRow] = field(default_factory=list)
    changed: dict[str, Alert] = field(default_factory=dict)  # latest version per alert
    versions: list[Alert] = field(default_factory=list)  # every version, in order
    seen: dict[str, tuple[str, str, str, int]] = field(default_factory=dict)
    scored: int = 0
    anomalous: int = 0
    opened: int = 0
    resolved: int = 0


class Pipeline:
    """Validates, scores, raises alerts and stores micro-batches of device messages."""

    def __init__(self, store: Store, scorer: Scorer, alerts: AlertTracker, gateway_id: str,
                 on_alerts: Callable[[list[Alert]], None] | None = None, *,
                 health: DeviceTracker | None = None) -> None:
        self.store = store
        self.scorer = scorer
        self.alerts = alerts
        self.gateway_id = gateway_id
        # Called after the commit with every alert version of the batch, in order (MQTT).
        self.on_alerts = on_alerts
        # Seq gaps, device clocks and rates (edge/health.py); re-times readings (edge/timing.py).
        self.health = health if health is not None else DeviceTracker()
        # Alert versions a failed transaction could not write (full disk): the next commit does.
        self._unsaved_alerts: dict[str, Alert] = {}

    def _score(self, readings: Sequence[Telemetry]) -> list[Score]:
        try:
            scores = self.scorer.score_batch(readings)
        except Exception:
            # A detector bug must not stop ingest: store the readings unscored, keep going.
            log.exception("scorer failed on %d readings; storing them unscored",
                          len(readings))
            return [UNSCORED] * len(readings)
        if len(scores) != len(readings):
            log.error("scorer returned %d scores for %d readings; ignoring them",
                      len(scores), len(readings))
            return [UNSCORED] * len(readings)
        return scores

    @contextmanager
    def _degradable(self, changed: dict[str, Alert], versions: list[Alert]
                    ) -> Iterator[list[Alert]]:
        """Yield the alert versions to write; keep them in memory if the write fails."""
        unsaved = {**self._unsaved_alerts, **changed}
        try:
            yield list(unsaved.values())
        except sqlite3.Error:
            # Degraded mode (the caller acks nothing, the broker keeps the readings): scoring
            # and alerting go on from memory; the alerts are written by the next commit.
            self._unsaved_alerts = unsaved
            if versions and self.on_alerts is not None:
                self.on_alerts(versions)
            raise
        self._unsaved_alerts = {}

    def _classify(self, batch: Sequence[Incoming]) -> tuple[
            dict[ReadingKey, tuple[Telemetry, int]], list[tuple[DeviceStatus, int]],
            list[DeadLetter]]:
        """Decode and validate: telemetry by key (first copy wins), statuses, dead letters."""
        fresh: dict[ReadingKey, tuple[Telemetry, int]] = {}
        statuses: list[tuple[DeviceStatus, int]] = []
        dead: list[DeadLetter] = []
        for msg in batch:
            item = classify(msg)
            if isinstance(item, DeadLetter):
                log.warning("dead letter topic=%s field=%s reason=%s",
                            item.topic, item.field, item.reason)
                dead.append(item)
            elif isinstance(item, DeviceStatus):
                statuses.append((item, msg.received_ms))
            else:
                fresh.setdefault((item.device, item.boot, item.seq), (item, msg.received_ms))
        return fresh, statuses, dead

    def _prepare(self, new: Sequence[tuple[Telemetry, int]], scores: Sequence[Score]
                 ) -> _Prepared:
        """Re-time the new readings, feed their scores to the alert tracker, build the rows."""
        now = now_ms()
        out = _Prepared()
        seen = out.seen
        for (t, received), s in zip(new, scores, strict=True):
            # Skewed device clocks corrected, unsynced ones re-timed from boot + uptime.
            ts, time_source = self.health.retime(t, received)
            out.rows.append((t.device, t.boot, t.seq, t.type, ts,
                             t.ts_ms if t.synced else None, received,
                             _compact_json(t.metrics), s.value, s.scorer,
                             s.model_version, int(s.anomalous), time_source,
                             "simulated" if t.sim else "sensor", None))
            out.scored += s.value is not None
            out.anomalous += s.anomalous
            # A simulated fault is scored like any reading (the demo shows the detector at
            # work); an alert it opens carries the mark.
            change = self.alerts.observe(t.device, ts, s, now, simulated=t.sim)
            if change is not None:
                alert = change.alert
                out.changed[alert.alert_id] = alert  # only an alert's latest version is stored
                out.versions.append(alert)
                out.opened += change.kind == "opened"
                out.resolved += change.kind == "resolved"
                log.info("alert=%s state=%s severity=%s score=%.1f",
                         alert.alert_id, alert.state,
                         alert.severity, alert.score, extra={"device": t.device})
            prev = seen.get(t.device)
            if prev is None or received >= prev[3]:
                seen[t.device] = (t.device, t.type, t.boot, received)
        return out

    def handle(self, batch: Sequence[Incoming]) -> BatchResult:
        """Process and commit one micro-batch; raises only if the database itself fails."""
        clock = time.perf_counter
        t0 = clock()
        fresh, statuses, dead = self._classify(batch)
        t1 = clock()
        # Redeliveries (an ack lost to a crash or a disconnect) are dropped before scoring, so
        # they neither count twice nor skew a detector's rolling window.
        for key in self.store.existing_keys(list(fresh)):
            del fresh[key]
        new = list(fresh.values())
        t2 = clock()
        scores = self._score([t for t, _ in new])
        t3 = clock()
        p = self._prepare(new, scores)
        t4 = clock()
        with self._degradable(p.changed, p.versions) as alerts, self.store.transaction():
            stored = self.store.insert_readings(p.rows)
            self.store.insert_dead_letters(dead)
            self.store.touch_devices(p.seen.values())
            self.store.apply_statuses(statuses)
            self.store.upsert_alerts(alerts)
            self.store.upsert_boots(self.health.stage(new))
            # Every telemetry message not stored as new was a redelivery of a stored one.
            duplicates = len(batch) - len(dead) - len(statuses) - stored
            for name, n in (("received", len(batch)), ("stored", stored),
                            ("duplicates", duplicates), ("dead_letters", len(dead)),
                            ("statuses", len(statuses)), ("scored", p.scored),
                            ("anomalous", p.anomalous),
                            ("alerts_opened", p.opened), ("alerts_resolved", p.resolved)):
                self.store.bump(name, n)
        t5 = clock()
        self.health.commit()
        if p.versions and self.on_alerts is not None:
            # Only after the commit: a local consumer never sees an alert the gateway lost.
            self.on_alerts(p.versions)
        return BatchResult(len(batch), stored, duplicates, len(dead), len(statuses), p.scored,
                           p.anomalous, len(p.changed),
                           StageTimes(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4))
