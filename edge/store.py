"""The gateway's SQLite database: readings, dead letters, devices, alerts, outbox and counters.

Its schema is owned by edge/db (ordered migrations, applied when the store opens).

One connection, used only from the event loop's thread: every write is a short synchronous
transaction with no ``await`` inside, so ingest and sync never interleave half-transactions.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.db import migrate
from edge.validate import DeadLetter
from shared.schemas import Alert, AlertAck, DeviceStatus

if TYPE_CHECKING:
    import sqlite_utils

COUNTERS = (
    "received", "stored", "duplicates", "dead_letters", "statuses", "scored", "anomalous",
    "alerts_opened", "alerts_resolved", "synced", "sync_batches", "sync_rejected_batches",
    "sync_rejected_readings", "sync_failures", "synced_aggregates", "sync_bytes",
    # retention under the disk budget (edge/retention.py)
    "retention_synced_dropped", "retention_aggregated", "retention_aggregate_rows",
    "retention_dead_letters_dropped",
    # SIMULATED scenarios for simulated devices (edge/scenarios.py)
    "scenarios_published", "scenarios_refused",
    "manual_entries",  # measurements and notes entered on the panel (edge/manual.py)
)

ReadingKey = tuple[str, str, int]
# device, boot, seq, type, ts_ms, device_ts_ms, received_ms, metrics JSON, score, scorer,
# model_version, anomalous, time_source, origin, note: the column order of READING_COLUMNS.
ReadingRow = tuple[str, str, int, str, int, int | None, int, str, float | None, str,
                   str | None, int, str, str, str | None]
READING_COLUMNS = ("device", "boot", "seq", "type", "ts_ms", "device_ts_ms", "received_ms",
                   "metrics", "score", "scorer", "model_version", "anomalous", "time_source",
                   "origin", "note")
# The alerts table's columns alert_from_row reads, in its order (``dirty`` is sync's own).
# Every column of an Alert, in alert_from_row's order.
ALERT_COLUMNS = ("alert_id, device, opened_ms, resolved_ms, severity, state, score, scorer, "
                 "model_version, explanation, updated_ms, simulated, ack_by, ack_ms, ack_comment")
# device, boot, first_seq, last_seq, n (distinct seqs stored), first_seen_ms, last_seen_ms,
# device_epoch_ms, gateway_epoch_ms: one row of device_boots (see edge/health.py, edge/timing.py).
BootRow = tuple[str, str, int, int, int, int, int, int | None, int | None]


def now_ms() -> int:
    """The gateway clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Store:
    """Typed access to the gateway database; counters are mirrored in memory after each commit."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._db: sqlite_utils.Database | None = None
        self._pending: dict[str, int] = {}
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    @classmethod
    def open(cls, path: str | Path, synchronous: str = "NORMAL") -> Store:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
        # one micro-batch and the broker ack follows its COMMIT.
        conn = sqlite3.connect(str(path), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is durable once it returns against a crash or kill -9 of this
        # process (the WAL is in the OS page cache), and costs no fsync; only a power cut can
        # lose the last commits before a checkpoint. fsync per batch on an SD card would cap
        # ingest; FULL is one setting away (SMAINT_GATEWAY_STORAGE__SYNCHRONOUS=FULL).
        if synchronous not in {"NORMAL", "FULL"}:
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        store = cls(conn)
        for name, value in conn.execute("SELECT name, value FROM counters"):
            store._counters[name] = int(value)
        return store

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for schema work and inspection."""
        if self._db is None:
            # Imported on first use, not with this module: sqlite-utils imports pandas whenever
            # it is installed (a dev venv), and importing the gateway must not pull it in.
            import sqlite_utils  # noqa: PLC0415

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    def close(self) -> None:
        """Close the connection (checkpoints the WAL)."""
        self.conn.close()

    # -- transactions and counters ---------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; counters bumped inside become visible after the commit."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._pending = {}
        try:
            yield
            if self._pending:
                self.conn.executemany(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    list(self._pending.items()),
                )
            self.conn.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (SQLITE_FULL, IOERR): a second
            # ROLLBACK would fail and hide the error that matters.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._pending = {}
            raise
        for name, delta in self._pending.items():
            self._counters[name] = self._counters.get(name, 0) + delta
        self._pending = {}

    def probe_write(self) -> None:
        """Commit and remove a page-sized row: raises sqlite3.Error while the disk refuses writes.

        A real write, committed: a rolled-back one would never reach the WAL and so could not
        see a full disk, and updating a row in place needs no new page.
        """
        with self.transaction():
            self.conn.execute("INSERT INTO write_probe (filler) VALUES (zeroblob(8192))")
        with self.transaction():
            self.conn.execute("DELETE FROM write_probe")

    def bump(self, name: str, delta: int = 1) -> None:
        """Add to a persistent counter, as part of the current transaction."""
        if delta:
            self._pending[name] = self._pending.get(name, 0) + delta

    @property
    def counters(self) -> Mapping[str, int]:
        """Committed counter values (a copy)."""
        return dict(self._counters)

    # -- ingest side -------------------------------------------------------------------------

    def existing_keys(self, keys: Sequence[ReadingKey]) -> set[ReadingKey]:
        """Which of these (device, boot, seq) are stored already: redeliveries to drop."""
        found: set[ReadingKey] = set()
        chunk = 300  # 900 parameters: under SQLite's oldest default limit of 999
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            values = ",".join("(?,?,?)" for _ in part)
            params = [v for k in part for v in k]
            # A join on the VALUES list, not a row-value IN: SQLite plans the IN form as a
            # full scan of readings (48 ms per batch at 200k rows, growing), the join as
            # primary-key lookups (0.6 ms).
            rows = self.conn.execute(
                f"SELECT r.device, r.boot, r.seq FROM (VALUES {values}) AS v "
                f"JOIN readings AS r ON r.device = v.column1 AND r.boot = v.column2 "
                f"AND r.seq = v.column3", params)
            found.update((d, b, int(s)) for d, b, s in rows)
        return found

    def insert_readings(self, rows: Sequence[ReadingRow]) -> int:
        """INSERT OR IGNORE readings; returns how many were new."""
        # Raw executemany, not sqlite-utils insert_all: ~3x faster on this hot path (LIMITS.md).
        cur = self.conn.executemany(
            f"INSERT OR IGNORE INTO readings ({', '.join(READING_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(READING_COLUMNS))})", rows)
        return max(cur.rowcount, 0)

    def insert_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Keep refused messages, payload verbatim, for someone to look at."""
        self.conn.executemany(
            "INSERT INTO dead_letters (received_ms, topic, payload, reason, field) "
            "VALUES (?, ?, ?, ?, ?)",
            [(d.received_ms, d.topic, d.payload, d.reason, d.field) for d in letters])

    def touch_devices(self, seen: Iterable[tuple[str, str, str, int]]) -> None:
        """Record (device, type, boot, received_ms) of telemetry: last seen, current boot."""
        self.conn.executemany(
            "INSERT INTO devices (device, type, boot, state, last_seen_ms) "
            "VALUES (?, ?, ?, 'online', ?) ON CONFLICT(device) DO UPDATE SET "
            "type = excluded.type, boot = excluded.boot, "
            "last_seen_ms = max(coalesce(last_seen_ms, 0), excluded.last_seen_ms)",
            list(seen))

    def apply_statuses(self, statuses: Iterable[tuple[DeviceStatus, int]]) -> None:
        """Apply online/offline status messages (with their receipt time) in arrival order."""
        self.conn.executemany(
            "INSERT INTO devices (device, type, boot, state, last_seen_ms, status_ms, fw, "
            "interval_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(device) DO UPDATE SET "
            "type = coalesce(excluded.type, type), boot = excluded.boot, state = excluded.state,"
            " last_seen_ms = max(coalesce(last_seen_ms, 0), excluded.last_seen_ms),"
            " status_ms = excluded.status_ms, fw = coalesce(excluded.fw, fw),"
            " interval_ms = coalesce(excluded.interval_ms, interval_ms)",
            [(s.device, s.type, s.boot, s.state, at, at, s.fw, s.interval_ms)
             for s, at in statuses])

    def upsert_alerts(self, alerts: Iterable[Alert]) -> None:
        """Write alert versions and flag them for the next upload (dirty = 1).

        Last writer wins on updated_ms, as in the cloud: a version built before a newer one
        was stored (a cloud decision applied meanwhile, say) is dropped.
        """
        self.conn.executemany(
            "INSERT INTO alerts (alert_id, device, opened_ms, resolved_ms, severity, state, "
            "score, scorer, model_version, explanation, updated_ms, simulated, ack_by, ack_ms, "
            "ack_comment, dirty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
            "ON CONFLICT(alert_id) DO UPDATE SET "
            "resolved_ms = excluded.resolved_ms, severity = excluded.severity, "
            "state = excluded.state, score = excluded.score, "
            "explanation = excluded.explanation, updated_ms = excluded.updated_ms, "
            "ack_by = excluded.ack_by, ack_ms = excluded.ack_ms, "
            "ack_comment = excluded.ack_comment, dirty = 1 "
            "WHERE excluded.updated_ms >= alerts.updated_ms",
            [(a.alert_id, a.device, a.opened_ms, a.resolved_ms, a.severity, a.state, a.score,
              a.scorer, a.model_version, json.dumps(a.explanation), a.updated_ms,
              int(a.simulated),
              *((a.ack.by, a.ack.at_ms, a.ack.comment) if a.ack else (None, None, None)))
             for a in alerts])

    def upsert_boots(self, rows: Sequence[BootRow]) -> None:
        """Merge per-boot seq deltas and clock estimates of a batch of new readings."""
        self.conn.executemany(
            "INSERT INTO device_boots (device, boot, first_seq, last_seq, n, first_seen_ms, "
            "last_seen_ms, device_epoch_ms, gateway_epoch_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(device, boot) DO UPDATE SET first_seq = min(first_seq, "
            "excluded.first_seq), last_seq = max(last_seq, excluded.last_seq), "
            "n = n + excluded.n, first_seen_ms = min(first_seen_ms, excluded.first_seen_ms), "
            "last_seen_ms = max(last_seen_ms, excluded.last_seen_ms), "
            "device_epoch_ms = coalesce(excluded.device_epoch_ms, device_epoch_ms), "
            "gateway_epoch_ms = min(coalesce(gateway_epoch_ms, excluded.gateway_epoch_ms), "
            "coalesce(excluded.gateway_epoch_ms, gateway_epoch_ms))", rows)

    def boots(self) -> list[BootRow]:
        """Every row of device_boots, to resume seq accounting after a restart."""
        rows = self.conn.execute(
            "SELECT device, boot, first_seq, last_seq, n, first_seen_ms, last_seen_ms, "
            "device_epoch_ms, gateway_epoch_ms FROM device_boots")
        return [tuple(r) for r in rows]

    def devices(self) -> list[dict[str, Any]]:
        """Every known device with its status, boot and last-seen time, by id."""
        cur = self.conn.execute(
            "SELECT device, type, boot, state, last_seen_ms, status_ms, fw, interval_ms "
            "FROM devices ORDER BY device")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def open_alerts(self) -> list[Alert]:
        """Alerts not yet resolved, to resume tracking them after a restart."""
        rows = self.conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE state != 'resolved'")
        return [alert_from_row(r) for r in rows]

    def alert(self, alert_id: str) -> Alert | None:
        """The stored version of one alert, or None (local acknowledgement looks it up)."""
        row = self.conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return alert_from_row(row) if row is not None else None

    def add_alert_comment(self, alert_id: str, at_ms: int, author: str, comment: str) -> None:
        """Keep an operator's comment on an alert (written with the panel's acknowledgement)."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO alert_comments (alert_id, at_ms, author, comment) "
                "VALUES (?, ?, ?, ?)", (alert_id, at_ms, author, comment))

    def alert_comments(self, alert_ids: Sequence[str]) -> dict[str, list[tuple[int, str, str]]]:
        """(at_ms, author, comment) per alert id, oldest first."""
        out: dict[str, list[tuple[int, str, str]]] = {}
        ids = list(alert_ids)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            rows = self.conn.execute(
                f"SELECT alert_id, at_ms, author, comment FROM alert_comments WHERE alert_id IN "
                f"({','.join('?' * len(part))}) ORDER BY id", part)
            for alert_id, at_ms, author, comment in rows:
                out.setdefault(alert_id, []).append((int(at_ms), str(author), str(comment)))
        return out

    # -- inspection (status endpoint, CLI, tests) --------------------------------------------

    def count(self, table: str, where: str = "", params: Sequence[Any] = ()) -> int:
        """Row count of one of our tables, optionally filtered."""
        if table not in self.db.table_names():
            raise KeyError(table)
        sql = f"SELECT count(*) FROM [{table}]" + (f" WHERE {where}" if where else "")
        (n,) = self.conn.execute(sql, tuple(params)).fetchone()
        return int(n)

    def dead_letters(self) -> list[dict[str, Any]]:
        """All dead letters, oldest first."""
        return list(self.db.table("dead_letters").rows_where(order_by="id"))


def alert_from_row(row: Sequence[Any]) -> Alert:
    """An Alert from the alerts table's ALERT_COLUMNS."""
    (alert_id, device, opened_ms, resolved_ms, severity, state, score, scorer, model_version,
     explanation, updated_ms, simulated, ack_by, ack_ms, ack_comment) = row
    return Alert(alert_id=alert_id, device=device, opened_ms=opened_ms, resolved_ms=resolved_ms,
                 severity=severity, state=state, score=score, scorer=scorer,
                 model_version=model_version, explanation=json.loads(explanation or "{}"),
                 updated_ms=updated_ms, simulated=bool(simulated),
                 ack=None if ack_by is None else AlertAck(
                     by=ack_by, at_ms=ack_ms, comment=ack_comment or ""))
