"""The sync outbox: batches recorded in SQLite before they are uploaded.

A batch is written down (its number, its readings, the alert versions it carries) in one
transaction before the first upload attempt. Every retry, including one after a crash or a
restart, rebuilds the identical ``SyncBatch`` from those rows, so the cloud can apply each
(gateway, batch_seq) exactly once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge.store import Store, alert_from_row
from shared.schemas import Alert, Reading, SyncBatch


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A recorded batch's bookkeeping row."""

    batch_seq: int
    created_ms: int
    state: str
    n_readings: int
    n_alerts: int
    attempts: int


class Outbox:
    """Sync-side operations on the gateway store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def pending(self) -> BatchInfo | None:
        """The oldest recorded batch not yet acked or rejected: it must go before any new one."""
        row = self.store.conn.execute(
            "SELECT batch_seq, created_ms, state, n_readings, n_alerts, attempts "
            "FROM sync_batches WHERE state = 'pending' ORDER BY batch_seq LIMIT 1").fetchone()
        return BatchInfo(*row) if row else None

    def record(self, max_readings: int, created_ms: int) -> BatchInfo | None:
        """Assign the next batch_seq to changed alerts + the oldest unsent readings, or None."""
        conn = self.store.conn
        with self.store.transaction():
            alert_rows = conn.execute(
                "SELECT alert_id, device, opened_ms, resolved_ms, severity, state, score, "
                "scorer, model_version, explanation, updated_ms FROM alerts WHERE dirty = 1 "
                "ORDER BY updated_ms").fetchall()
            rowids = [r for (r,) in conn.execute(
                "SELECT rowid FROM readings WHERE batch_seq IS NULL ORDER BY batch_seq, rowid "
                "LIMIT ?", (max_readings,))]
            if not alert_rows and not rowids:
                return None
            (last,) = conn.execute("SELECT coalesce(max(batch_seq), 0) FROM sync_batches"
                                   ).fetchone()
            seq = int(last) + 1
            conn.execute(
                "INSERT INTO sync_batches (batch_seq, created_ms, state, n_readings, n_alerts,"
                " attempts) VALUES (?, ?, 'pending', ?, ?, 0)",
                (seq, created_ms, len(rowids), len(alert_rows)))
            conn.executemany("UPDATE readings SET batch_seq = ? WHERE rowid = ?",
                             [(seq, r) for r in rowids])
            conn.executemany(
                "INSERT INTO sync_batch_alerts (batch_seq, alert_id, body) VALUES (?, ?, ?)",
                [(seq, row[0], alert_from_row(row).model_dump_json()) for row in alert_rows])
            conn.executemany("UPDATE alerts SET dirty = 0 WHERE alert_id = ? AND updated_ms = ?",
                             [(row[0], row[10]) for row in alert_rows])
        return BatchInfo(seq, created_ms, "pending", len(rowids), len(alert_rows), 0)

    def load(self, info: BatchInfo, gateway: str) -> SyncBatch:
        """Rebuild a recorded batch exactly: alerts first (they matter most), then readings."""
        conn = self.store.conn
        alerts = [Alert.model_validate_json(body) for (body,) in conn.execute(
            "SELECT body FROM sync_batch_alerts WHERE batch_seq = ? ORDER BY rowid",
            (info.batch_seq,))]
        readings = [
            Reading(device=d, boot=b, seq=s, type=t, ts_ms=ts, device_ts_ms=dts,
                    received_ms=rcv, metrics=json.loads(m), score=score, scorer=scorer,
                    model_version=mv, anomalous=bool(anom))
            for d, b, s, t, ts, dts, rcv, m, score, scorer, mv, anom in conn.execute(
                "SELECT device, boot, seq, type, ts_ms, device_ts_ms, received_ms, metrics, "
                "score, scorer, model_version, anomalous FROM readings WHERE batch_seq = ? "
                "ORDER BY rowid", (info.batch_seq,))
        ]
        return SyncBatch(gateway=gateway, batch_seq=info.batch_seq, created_ms=info.created_ms,
                         readings=readings, alerts=alerts)

    def note_attempt(self, batch_seq: int, error: str | None) -> None:
        """Count an upload attempt and remember its error, for the status page."""
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE sync_batches SET attempts = attempts + 1, last_error = ? "
                "WHERE batch_seq = ?", (error, batch_seq))
            if error is not None:
                self.store.bump("sync_failures")

    def mark_acked(self, info: BatchInfo, acked_ms: int) -> None:
        """The cloud committed the batch: its readings count as synced."""
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE sync_batches SET state = 'acked', acked_ms = ?, last_error = NULL "
                "WHERE batch_seq = ?", (acked_ms, info.batch_seq))
            self.store.bump("synced", info.n_readings)
            self.store.bump("sync_batches")

    def mark_rejected(self, info: BatchInfo, status: int, reason: str, at_ms: int) -> None:
        """The cloud refused the batch for good: dead-letter it and move on to the next."""
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE sync_batches SET state = 'rejected', last_error = ? WHERE batch_seq = ?",
                (reason, info.batch_seq))
            self.note_dead_letter(info.batch_seq, status, reason, at_ms)
            self.store.bump("sync_rejected_batches")
            self.store.bump("sync_rejected_readings", info.n_readings)

    def note_dead_letter(self, batch_seq: int, status: int | None, reason: str,
                         at_ms: int) -> None:
        """Add a sync dead-letter entry (inside the caller's transaction, if any)."""
        sql = ("INSERT INTO sync_dead_letters (batch_seq, at_ms, status, reason) "
               "VALUES (?, ?, ?, ?)")
        params = (batch_seq, at_ms, status, reason)
        if self.store.conn.in_transaction:
            self.store.conn.execute(sql, params)
        else:
            with self.store.transaction():
                self.store.conn.execute(sql, params)

    def requeue_rejected(self) -> int:
        """Release the readings of rejected batches so they go out again in new batches."""
        with self.store.transaction():
            cur = self.store.conn.execute(
                "UPDATE readings SET batch_seq = NULL WHERE batch_seq IN "
                "(SELECT batch_seq FROM sync_batches WHERE state = 'rejected')")
            n = max(cur.rowcount, 0)
            self.store.conn.execute(
                "UPDATE alerts SET dirty = 1 WHERE alert_id IN (SELECT alert_id FROM "
                "sync_batch_alerts JOIN sync_batches USING (batch_seq) "
                "WHERE sync_batches.state = 'rejected')")
            self.store.conn.execute(
                "UPDATE sync_batches SET state = 'requeued' WHERE state = 'rejected'")
            self.store.bump("sync_rejected_readings", -n)
        return n

    def backlog(self) -> int:
        """Readings stored but neither synced nor rejected."""
        c = self.store.counters
        return max(c["stored"] - c["synced"] - c["sync_rejected_readings"], 0)
