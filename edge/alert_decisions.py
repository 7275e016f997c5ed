"""The cloud's alert decisions, applied to this gateway's alerts (DesiredState.alert_decisions).

Operators acknowledge and resolve alerts in the cloud console too; every sync answer carries
the decisions after the newest one this gateway reported applied (GatewayState.alert_decision,
see ``applied``). Each is kept once under the cloud's number, in one transaction with the new
alert versions it makes, so a repeated answer (a retry, the stored desired state replayed
after a restart) changes nothing twice, and one lost before it was applied comes again.

What a decision does here (the review only moves forward, as in the cloud):
- acknowledge: an open alert becomes acknowledged; otherwise nothing changes.
- resolve: an open or acknowledged alert becomes resolved (resolved_ms: when decided), and the
  tracker lets go of it (edge.alert_lifecycle: it is not escalated or reopened, and the device
  re-arms after ``resolve_after`` normal readings); an alert the gateway resolved already
  keeps its own resolution and gains the decision.
- an alert this gateway no longer has is noted as ``unknown_alert``.
Every decision is kept with what it did, for the panel ("from cloud").
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.alert_lifecycle import AlertTracker
from edge.store import Store, now_ms
from shared.schemas import Alert, AlertDecision, DesiredState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeptDecision:
    """A cloud decision as this gateway keeps it."""

    id: int
    alert_id: str
    action: str
    by: str
    at_ms: int
    decision: str | None
    comment: str
    applied_ms: int
    outcome: str


class CloudDecisions:
    """Applies and keeps the cloud's alert decisions; reports the newest applied."""

    def __init__(self, store: Store, tracker: AlertTracker,
                 on_alerts: Callable[[list[Alert]], None] | None = None) -> None:
        self.store = store
        self.tracker = tracker
        # Called after the commit with the alert versions the decisions made (MQTT publish).
        self.on_alerts = on_alerts

    def applied(self) -> int:
        """The newest decision number kept here (0: none), reported with every upload."""
        (n,) = self.store.conn.execute("SELECT coalesce(max(id), 0) FROM alert_decisions"
                                       ).fetchone()
        return int(n)

    def on_desired(self, desired: DesiredState) -> list[Alert]:
        """Apply the decisions not kept yet, in order; returns the alert versions they made."""
        try:
            versions = self._keep(desired)
        except sqlite3.Error as exc:
            # Nothing kept, so the number reported stays and the next answer brings them again.
            log.warning("cloud alert decisions not applied (%s); they come again with the next"
                        " sync answer", exc)
            return []
        for version in versions:  # only once stored: the tracker follows the database
            self.tracker.adopt(version)
        if versions and self.on_alerts is not None:
            self.on_alerts(versions)
        return versions

    def _keep(self, desired: DesiredState) -> list[Alert]:
        """Keep and apply the new decisions in one transaction; the alert versions made."""
        conn = self.store.conn
        latest: dict[str, Alert] = {}  # versions made by this answer, newest per alert
        now = now_ms()
        with self.store.transaction():
            for d in sorted(desired.alert_decisions, key=lambda d: d.id):
                if conn.execute("SELECT 1 FROM alert_decisions WHERE id = ?",
                                (d.id,)).fetchone() is not None:
                    continue  # kept (and applied) before: a repeated answer
                outcome, version = self._apply(d, now, latest)
                conn.execute(
                    "INSERT INTO alert_decisions (id, alert_id, action, by, at_ms, decision, "
                    "comment, applied_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (d.id, d.alert_id, d.action, d.by, d.at_ms, d.decision, d.comment, now,
                     outcome))
                if version is not None:
                    latest[version.alert_id] = version
                log.info("cloud decision %d: %s alert=%s by %s%s: %s", d.id, d.action,
                         d.alert_id, d.by, f" as {d.decision}" if d.decision else "", outcome)
            versions = list(latest.values())
            self.store.upsert_alerts(versions)
        return versions

    def _apply(self, d: AlertDecision, now: int,
               latest: dict[str, Alert]) -> tuple[str, Alert | None]:
        current = (latest.get(d.alert_id) or self.tracker.find(d.alert_id)
                   or self.store.alert(d.alert_id))
        if current is None:
            return "unknown_alert", None
        if d.action == "acknowledge":
            if current.state != "open":
                return "unchanged", None
            return "applied", current.model_copy(update={
                "state": "acknowledged", "updated_ms": max(now, current.updated_ms + 1)})
        if current.state == "resolved":
            return "unchanged", None
        return "applied", current.model_copy(update={
            "state": "resolved", "resolved_ms": max(d.at_ms, current.opened_ms),
            "updated_ms": max(now, current.updated_ms + 1)})

    def kept(self, alert_ids: Sequence[str]) -> dict[str, list[KeptDecision]]:
        """The decisions kept per alert id, oldest first (for the panel)."""
        out: dict[str, list[KeptDecision]] = {}
        ids = list(alert_ids)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            rows = self.store.conn.execute(
                "SELECT id, alert_id, action, by, at_ms, decision, comment, applied_ms, outcome "
                f"FROM alert_decisions WHERE alert_id IN ({','.join('?' * len(part))}) "
                "ORDER BY id", part)
            for row in rows:
                kept = KeptDecision(*row)
                out.setdefault(kept.alert_id, []).append(kept)
        return out
