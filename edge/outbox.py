"""The sync outbox: batches recorded in SQLite before they are uploaded.

A batch is written down (its number, its kind, its readings, the per-minute aggregates of
readings retention folded, the alert versions and device events it carries) in one
transaction before the first upload attempt. Every retry, including one after a crash or a
restart, rebuilds the identical batch from those rows, so the cloud can apply each
(gateway, batch_seq) exactly once.

Kinds: ``live`` (normal operation, and the newest rows after an outage), ``backlog`` (the
oldest unsent rows after an outage, at most one batch per cycle, marked replay) and
``backfill`` (rows the cloud asked for again, also marked replay). Catch-up thus drains oldest
first at a bounded rate while the present keeps flowing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge.store import ALERT_COLUMNS, Store, alert_from_row
from shared.schemas import (
    Alert,
    BackfillRequest,
    DesiredState,
    DeviceEvent,
    GatewayState,
    Reading,
    ReadingAggregate,
    ScenarioDone,
    SyncBatch,
)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A recorded batch's bookkeeping row."""

    batch_seq: int
    created_ms: int
    state: str
    n_readings: int
    n_alerts: int
    attempts: int
    kind: str = "live"
    n_aggregates: int = 0


class Outbox:
    """Sync-side operations on the gateway store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def pending(self) -> BatchInfo | None:
        """The oldest recorded batch not yet acked or rejected: it must go before any new one."""
        row = self.store.conn.execute(
            "SELECT batch_seq, created_ms, state, n_readings, n_alerts, attempts, kind, "
            "n_aggregates FROM sync_batches WHERE state = 'pending' ORDER BY batch_seq "
            "LIMIT 1").fetchone()
        return BatchInfo(*row) if row else None

    def record(self, max_readings: int, created_ms: int, *, backlog_max: int | None = None,
               catchup_after: int | None = None, heartbeat: bool = False) -> BatchInfo | None:
        """Record the next cycle's batches (live, then one catch-up); returns the first or None.

        While at most ``catchup_after`` readings are unsent, one batch takes the oldest of them.
        Beyond that (an outage), the live batch takes the newest ``max_readings`` and a backlog
        batch the oldest ``backlog_max``, marked replay. The live batch also takes up to
        ``backlog_max`` unsent per-minute aggregates (readings retention folded), oldest first.
        With nothing to send, ``heartbeat`` records an empty batch (for the state it carries).
        """
        backlog_max = backlog_max or max_readings
        catchup_after = catchup_after or 2 * max_readings
        conn = self.store.conn
        with self.store.transaction():
            alert_rows = conn.execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts WHERE dirty = 1 ORDER BY updated_ms"
            ).fetchall()
            events, upto = self._new_events()
            self._finish_backfill(created_ms)
            done = [i for (i,) in conn.execute(
                "SELECT id FROM backfills WHERE done_ms IS NOT NULL AND reported = 0 "
                "ORDER BY id")]
            scenarios = self._scenarios_done()
            newest = [r for (r,) in conn.execute(
                "SELECT rowid FROM readings WHERE batch_seq IS NULL ORDER BY rowid DESC "
                "LIMIT ?", (catchup_after + 1,))]
            backlog: list[int] = []
            if len(newest) > catchup_after:
                live = sorted(newest[:max_readings])
                backlog = [r for (r,) in conn.execute(
                    "SELECT rowid FROM readings WHERE batch_seq IS NULL AND rowid < ? "
                    "ORDER BY rowid LIMIT ?", (live[0], backlog_max))]
            else:
                live = sorted(newest)[:max_readings]
            aggregates = [r for (r,) in conn.execute(
                "SELECT rowid FROM reading_aggregates WHERE batch_seq IS NULL ORDER BY rowid "
                "LIMIT ?", (backlog_max,))]
            (last,) = conn.execute("SELECT coalesce(max(batch_seq), 0) FROM sync_batches"
                                   ).fetchone()
            seq = int(last)
            first: BatchInfo | None = None
            if heartbeat or alert_rows or events or live or done or aggregates or scenarios:
                seq += 1
                first = self._insert_batch(seq, created_ms, "live", live,
                                           n_alerts=len(alert_rows), done=done,
                                           aggregates=aggregates)
                if scenarios:  # frozen with the batch, like its readings
                    conn.execute("UPDATE sync_batches SET scenarios_done = ? WHERE batch_seq = ?",
                                 (json.dumps([d.model_dump(mode="json") for d in scenarios]),
                                  seq))
                conn.executemany(
                    "INSERT INTO sync_batch_alerts (batch_seq, alert_id, body) VALUES (?, ?, ?)",
                    [(seq, row[0], alert_from_row(row).model_dump_json())
                     for row in alert_rows])
                conn.executemany(
                    "UPDATE alerts SET dirty = 0 WHERE alert_id = ? AND updated_ms = ?",
                    [(row[0], row[10]) for row in alert_rows])
                if events:
                    conn.execute(
                        "INSERT INTO sync_batch_events (batch_seq, body, upto_ms) "
                        "VALUES (?, ?, ?)",
                        (seq, json.dumps([e.model_dump(mode="json") for e in events]), upto))
            if backlog:
                seq += 1
                info = self._insert_batch(seq, created_ms, "backlog", backlog, n_alerts=0)
                first = first or info
            else:
                info_bf = self._record_backfill(seq + 1, created_ms, backlog_max)
                first = first or info_bf
        return first

    def _insert_batch(self, seq: int, created_ms: int, kind: str, rowids: list[int], *,
                      n_alerts: int, done: list[int] | None = None,
                      aggregates: list[int] | None = None) -> BatchInfo:
        conn = self.store.conn
        aggregates = aggregates or []
        conn.execute(
            "INSERT INTO sync_batches (batch_seq, created_ms, state, n_readings, n_alerts,"
            " attempts, kind, backfill_done, n_aggregates) "
            "VALUES (?, ?, 'pending', ?, ?, 0, ?, ?, ?)",
            (seq, created_ms, len(rowids), n_alerts, kind, json.dumps(done) if done else None,
             len(aggregates)))
        conn.executemany("UPDATE readings SET batch_seq = ? WHERE rowid = ?",
                         [(seq, r) for r in rowids])
        # Frozen like the readings: retention folds nothing into a row of a pending batch
        # (edge/retention.py), so a retry sends these rows exactly as they are now.
        conn.executemany("UPDATE reading_aggregates SET batch_seq = ? WHERE rowid = ?",
                         [(seq, r) for r in aggregates])
        return BatchInfo(seq, created_ms, "pending", len(rowids), n_alerts, 0, kind,
                         len(aggregates))

    def _new_events(self) -> tuple[list[DeviceEvent], int]:
        """Device status changes since the last batch that carried events."""
        conn = self.store.conn
        (since,) = conn.execute("SELECT coalesce(max(upto_ms), -1) FROM sync_batch_events"
                                ).fetchone()
        rows = conn.execute(
            "SELECT device, boot, state, status_ms, type, fw FROM devices "
            "WHERE status_ms > ? ORDER BY status_ms", (since,)).fetchall()
        events = [DeviceEvent(device=d, boot=b, state=s, at_ms=at, type=t, fw=fw)
                  for d, b, s, at, t, fw in rows if s in ("online", "offline")]
        return events, max((r[3] for r in rows), default=since)

    def _scenarios_done(self) -> list[ScenarioDone]:
        """Cloud scenario requests published or refused here and not yet reported (SIMULATED)."""
        return [ScenarioDone(id=i, outcome=o, reason=r, at_ms=at)
                for i, o, r, at in self.store.conn.execute(
                    "SELECT id, outcome, reason, done_ms FROM scenarios WHERE source = 'cloud' "
                    "AND outcome IS NOT NULL AND reported = 0 ORDER BY done_ms, id LIMIT 1000")]

    def _finish_backfill(self, now: int) -> None:
        """Mark the active backfill done once no row of its range is left to send."""
        conn = self.store.conn
        row = conn.execute("SELECT id, since_ms, until_ms, cursor_rowid FROM backfills "
                           "WHERE done_ms IS NULL ORDER BY id LIMIT 1").fetchone()
        if row is not None and conn.execute(
                "SELECT 1 FROM readings WHERE rowid > ? AND ts_ms >= ? AND ts_ms < ? LIMIT 1",
                (row[3], row[1], row[2])).fetchone() is None:
            conn.execute("UPDATE backfills SET done_ms = ?, reported = 0 WHERE id = ?",
                         (now, row[0]))

    def _record_backfill(self, seq: int, created_ms: int, limit: int) -> BatchInfo | None:
        """The next slice of the oldest unfinished backfill request, as a replay batch."""
        conn = self.store.conn
        row = conn.execute("SELECT id, since_ms, until_ms, cursor_rowid FROM backfills "
                           "WHERE done_ms IS NULL ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        bf_id, since, until, cursor = row
        rowids = [r for (r,) in conn.execute(
            "SELECT rowid FROM readings WHERE rowid > ? AND ts_ms >= ? AND ts_ms < ? "
            "ORDER BY rowid LIMIT ?", (cursor, since, until, limit))]
        if not rowids:
            conn.execute("UPDATE backfills SET done_ms = ?, reported = 0 WHERE id = ?",
                         (created_ms, bf_id))
            return None
        conn.execute(
            "INSERT INTO sync_batches (batch_seq, created_ms, state, n_readings, n_alerts,"
            " attempts, kind, backfill_id) VALUES (?, ?, 'pending', ?, 0, 0, 'backfill', ?)",
            (seq, created_ms, len(rowids), bf_id))
        conn.executemany("INSERT INTO sync_batch_readings (batch_seq, reading_rowid) "
                         "VALUES (?, ?)", [(seq, r) for r in rowids])
        conn.execute("UPDATE backfills SET cursor_rowid = ? WHERE id = ?", (rowids[-1], bf_id))
        return BatchInfo(seq, created_ms, "pending", len(rowids), 0, 0, "backfill")

    def load(self, info: BatchInfo, gateway: str, state: GatewayState | None = None
             ) -> SyncBatch:
        """Rebuild a recorded batch exactly: alerts, events, aggregates, then readings."""
        conn = self.store.conn
        alerts = [Alert.model_validate_json(body) for (body,) in conn.execute(
            "SELECT body FROM sync_batch_alerts WHERE batch_seq = ? ORDER BY rowid",
            (info.batch_seq,))]
        ev = conn.execute("SELECT body FROM sync_batch_events WHERE batch_seq = ?",
                          (info.batch_seq,)).fetchone()
        events = [DeviceEvent.model_validate(e) for e in json.loads(ev[0])] if ev else []
        done_json, scenarios_json = conn.execute(
            "SELECT backfill_done, scenarios_done FROM sync_batches WHERE batch_seq = ?",
            (info.batch_seq,)).fetchone()
        cols = ("SELECT device, boot, seq, type, ts_ms, device_ts_ms, received_ms, metrics, "
                "score, scorer, model_version, anomalous, origin, note FROM readings ")
        if info.kind == "backfill":
            rows = conn.execute(cols + "JOIN sync_batch_readings s ON s.reading_rowid = "
                                "readings.rowid WHERE s.batch_seq = ? ORDER BY s.reading_rowid",
                                (info.batch_seq,))
        else:
            rows = conn.execute(cols + "WHERE batch_seq = ? ORDER BY rowid", (info.batch_seq,))
        replay = info.kind != "live"
        readings = [
            Reading(device=d, boot=b, seq=s, type=t, ts_ms=ts, device_ts_ms=dts,
                    received_ms=rcv, metrics=json.loads(m), score=score, scorer=scorer,
                    model_version=mv, anomalous=bool(anom), replay=replay, origin=origin,
                    note=note)
            for d, b, s, t, ts, dts, rcv, m, score, scorer, mv, anom, origin, note in rows
        ]
        return SyncBatch(gateway=gateway, batch_seq=info.batch_seq, created_ms=info.created_ms,
                         readings=readings, alerts=alerts, events=events, state=state,
                         backfill_done=json.loads(done_json) if done_json else [],
                         scenarios_done=[ScenarioDone.model_validate(d) for d in
                                         json.loads(scenarios_json or "[]")],
                         aggregates=self._load_aggregates(info))

    def _load_aggregates(self, info: BatchInfo) -> list[ReadingAggregate]:
        """The per-minute aggregates frozen into a batch (backfill batches carry none)."""
        if info.kind == "backfill":
            return []
        rows = self.store.conn.execute(
            "SELECT device, metric, minute_ms, type, n, min, max, mean, sum, first_ts_ms, "
            "last_ts_ms, updated_ms FROM reading_aggregates WHERE batch_seq = ? ORDER BY rowid",
            (info.batch_seq,))
        return [ReadingAggregate(device=d, metric=m, minute_ms=minute, type=t, n=n, min=lo,
                                 max=hi, mean=mean, sum=total, first_ts_ms=t0, last_ts_ms=t1,
                                 updated_ms=upd)
                for d, m, minute, t, n, lo, hi, mean, total, t0, t1, upd in rows]

    def note_attempt(self, batch_seq: int, error: str | None) -> None:
        """Count an upload attempt and remember its error, for the status page."""
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE sync_batches SET attempts = attempts + 1, last_error = ? "
                "WHERE batch_seq = ?", (error, batch_seq))
            if error is not None:
                self.store.bump("sync_failures")

    def mark_acked(self, info: BatchInfo, acked_ms: int, desired: DesiredState | None = None,
                   body_bytes: int = 0) -> None:
        """The cloud committed the batch: its readings count as synced; keep its wishes.

        ``body_bytes``: the size of the upload's (compressed) body, counted as bytes synced.
        """
        conn = self.store.conn
        with self.store.transaction():
            conn.execute(
                "UPDATE sync_batches SET state = 'acked', acked_ms = ?, last_error = NULL "
                "WHERE batch_seq = ?", (acked_ms, info.batch_seq))
            done_json, scenarios_json = conn.execute(
                "SELECT backfill_done, scenarios_done FROM sync_batches WHERE batch_seq = ?",
                (info.batch_seq,)).fetchone()
            if done_json:
                conn.executemany("UPDATE backfills SET reported = 1 WHERE id = ?",
                                 [(i,) for i in json.loads(done_json)])
            if scenarios_json:
                conn.executemany("UPDATE scenarios SET reported = 1 WHERE id = ?",
                                 [(d["id"],) for d in json.loads(scenarios_json)])
            if info.kind != "backfill":  # a backfill re-sends rows already counted
                self.store.bump("synced", info.n_readings)
            self.store.bump("synced_aggregates", info.n_aggregates)
            self.store.bump("sync_batches")
            self.store.bump("sync_bytes", body_bytes)
            if desired is not None:
                self._apply_desired(desired)

    def _apply_desired(self, desired: DesiredState) -> None:
        conn = self.store.conn
        conn.execute("INSERT INTO desired_state (id, body) VALUES (1, ?) ON CONFLICT(id) DO "
                     "UPDATE SET body = excluded.body", (desired.model_dump_json(),))
        for req in desired.backfill:
            conn.execute("INSERT OR IGNORE INTO backfills (id, since_ms, until_ms) "
                         "VALUES (?, ?, ?)", (req.id, req.since_ms, req.until_ms))
            # Still asked for, though done here: our report was lost; send it again.
            conn.execute("UPDATE backfills SET reported = 0 WHERE id = ? AND "
                         "done_ms IS NOT NULL", (req.id,))
        # A scenario done here but still asked for: our report was lost; send it again (it is
        # never played again: edge/scenarios.py stores each id once).
        conn.executemany("UPDATE scenarios SET reported = 0 WHERE id = ? AND outcome IS NOT NULL",
                         [(req.id,) for req in desired.scenarios])

    def desired(self) -> DesiredState | None:
        """The desired state of the last sync answer, or None before the first."""
        row = self.store.conn.execute("SELECT body FROM desired_state WHERE id = 1").fetchone()
        return DesiredState.model_validate_json(row[0]) if row else None

    def backfills(self) -> list[tuple[BackfillRequest, int | None]]:
        """Every backfill request the cloud made, with when it finished (None: in progress)."""
        return [(BackfillRequest(id=i, since_ms=lo, until_ms=hi), done)
                for i, lo, hi, done in self.store.conn.execute(
                    "SELECT id, since_ms, until_ms, done_ms FROM backfills ORDER BY id")]

    def mark_rejected(self, info: BatchInfo, status: int, reason: str, at_ms: int) -> None:
        """The cloud refused the batch for good: dead-letter it and move on to the next."""
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE sync_batches SET state = 'rejected', last_error = ? WHERE batch_seq = ?",
                (reason, info.batch_seq))
            self.note_dead_letter(info.batch_seq, status, reason, at_ms)
            self.store.bump("sync_rejected_batches")
            if info.kind != "backfill":
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
        """Release the readings (and aggregates) of rejected batches to go out again."""
        with self.store.transaction():
            cur = self.store.conn.execute(
                "UPDATE readings SET batch_seq = NULL WHERE batch_seq IN "
                "(SELECT batch_seq FROM sync_batches WHERE state = 'rejected')")
            n = max(cur.rowcount, 0)
            self.store.conn.execute(
                "UPDATE reading_aggregates SET batch_seq = NULL WHERE batch_seq IN "
                "(SELECT batch_seq FROM sync_batches WHERE state = 'rejected')")
            self.store.conn.execute(
                "UPDATE alerts SET dirty = 1 WHERE alert_id IN (SELECT alert_id FROM "
                "sync_batch_alerts JOIN sync_batches USING (batch_seq) "
                "WHERE sync_batches.state = 'rejected')")
            self.store.conn.execute(
                "UPDATE sync_batches SET state = 'requeued' WHERE state = 'rejected'")
            self.store.bump("sync_rejected_readings", -n)
        return n

    def backlog(self) -> int:
        """Rows waiting for the cloud: readings and per-minute aggregates not yet synced.

        Readings: stored, less those synced, rejected or folded into aggregates by retention.
        Aggregates: unsent or in a batch not yet acked (a merge after an ack sends one again).
        """
        c = self.store.counters
        readings = (c["stored"] - c["synced"] - c["sync_rejected_readings"]
                    - c["retention_aggregated"])
        (aggregates,) = self.store.conn.execute(
            "SELECT count(*) FROM reading_aggregates WHERE batch_seq IS NULL OR batch_seq IN "
            "(SELECT batch_seq FROM sync_batches WHERE state = 'pending')").fetchone()
        return max(readings, 0) + int(aggregates)
