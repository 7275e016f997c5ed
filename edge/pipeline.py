"""One micro-batch through the gateway: validate, drop redeliveries, score, alert, store.

Independent of MQTT so it can be driven by tests, a replay tool or a different transport. The
caller acknowledges the messages to the broker only after :meth:`Pipeline.handle` returned,
i.e. after the transaction holding them committed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from edge.alert_lifecycle import AlertTracker
from edge.device_tracking import DeviceTracker
from edge.score import UNSCORED, Score, Scorer
from edge.store import ReadingKey, ReadingRow, Store, now_ms
from edge.validate import DeadLetter, Incoming, classify
from shared.schemas import Alert, DeviceStatus, Telemetry

log = logging.getLogger(__name__)


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

    def handle(self, batch: Sequence[Incoming]) -> BatchResult:
        """Process and commit one micro-batch; raises only if the database itself fails."""
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
                key = (item.device, item.boot, item.seq)
                fresh.setdefault(key, (item, msg.received_ms))
        # Redeliveries (an ack lost to a crash or a disconnect) are dropped before scoring, so
        # they neither count twice nor skew a detector's rolling window.
        for key in self.store.existing_keys(list(fresh)):
            del fresh[key]
        new = list(fresh.values())
        scores = self._score([t for t, _ in new])
        now = now_ms()
        rows: list[ReadingRow] = []
        changed: dict[str, Alert] = {}
        versions: list[Alert] = []
        opened = resolved = 0
        seen: dict[str, tuple[str, str, str, int]] = {}
        scored = anomalous = 0
        for (t, received), s in zip(new, scores, strict=True):
            # Skewed device clocks corrected, unsynced ones re-timed from boot + uptime.
            ts, time_source = self.health.retime(t, received)
            rows.append((t.device, t.boot, t.seq, t.type, ts, t.ts_ms if t.synced else None,
                         received, json.dumps(t.metrics, separators=(",", ":")), s.value,
                         s.scorer, s.model_version, int(s.anomalous), time_source))
            scored += s.value is not None
            anomalous += s.anomalous
            change = self.alerts.observe(t.device, ts, s, now)
            if change is not None:
                alert = change.alert
                changed[alert.alert_id] = alert  # only an alert's latest version is stored
                versions.append(alert)
                opened += change.kind == "opened"
                resolved += change.kind == "resolved"
                log.info("alert=%s state=%s severity=%s score=%.1f",
                         alert.alert_id, alert.state,
                         alert.severity, alert.score, extra={"device": t.device})
            prev = seen.get(t.device)
            if prev is None or received >= prev[3]:
                seen[t.device] = (t.device, t.type, t.boot, received)
        with self._degradable(changed, versions) as alerts, self.store.transaction():
            stored = self.store.insert_readings(rows)
            self.store.insert_dead_letters(dead)
            self.store.touch_devices(seen.values())
            self.store.apply_statuses(statuses)
            self.store.upsert_alerts(alerts)
            self.store.upsert_boots(self.health.stage(new))
            # Every telemetry message not stored as new was a redelivery of a stored one.
            duplicates = len(batch) - len(dead) - len(statuses) - stored
            for name, n in (("received", len(batch)), ("stored", stored),
                            ("duplicates", duplicates), ("dead_letters", len(dead)),
                            ("statuses", len(statuses)), ("scored", scored),
                            ("anomalous", anomalous),
                            ("alerts_opened", opened), ("alerts_resolved", resolved)):
                self.store.bump(name, n)
        self.health.commit()
        if versions and self.on_alerts is not None:
            # Only after the commit: a local consumer never sees an alert the gateway lost.
            self.on_alerts(versions)
        return BatchResult(len(batch), stored, duplicates, len(dead), len(statuses), scored,
                           anomalous, len(changed))
