"""Retention under a disk budget: what goes when the database reaches ``db_max_mb``.

Order, each step oldest first (by arrival, i.e. rowid) and only as far as needed to get back
under the low-water mark (``retention_low_water`` of the budget, so retention does not run on
every batch once the budget is reached):

1. readings the cloud has acknowledged (their batch is ``acked``): a copy is upstream;
2. unsynced readings not yet frozen into an upload batch, replaced by per-minute aggregates
   (``reading_aggregates``: n, min, max, mean, sum per device, metric and minute), so the
   history survives at a coarser grain; the outbox uploads them like readings, and a row
   merged again after its upload goes out again with a newer ``updated_ms``. Readings of a
   minute whose aggregate row is frozen in a batch being uploaded wait (stay raw) until that
   batch is acked: merging into the row would change a batch a retry must resend as is;
3. dead letters, as a last resort.

Alerts are never dropped, nor are readings of a batch being uploaded (a retry must resend the
identical batch). Every drop is counted in the ``counters`` table, in the same transaction.

Size is measured in used pages (page_count - freelist_count): SQLite reuses freed pages, so
the file stops growing at the budget even though it does not shrink without a VACUUM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass

from edge.store import Store, now_ms

log = logging.getLogger(__name__)

CHUNK = 500  # rows per delete/aggregate step: short transactions, ingest waits little


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one enforcement pass did."""

    used_bytes_before: int
    used_bytes_after: int
    synced_dropped: int
    aggregated: int
    aggregate_rows: int
    dead_letters_dropped: int

    @property
    def dropped(self) -> int:
        """Rows removed in total."""
        return self.synced_dropped + self.aggregated + self.dead_letters_dropped


def used_bytes(store: Store) -> int:
    """Bytes of the database in use (pages holding data, not free-list pages)."""
    conn = store.conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return (int(pages) - int(free)) * int(size)


class Retention:
    """Keeps one store under its disk budget (``max_bytes``; 0 disables it)."""

    def __init__(self, store: Store, max_bytes: int, low_water: float = 0.9,
                 gateway_id: str = "") -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.low_water = low_water
        self.gateway_id = gateway_id
        self.last: RetentionResult | None = None

    @property
    def enabled(self) -> bool:
        """False when no budget is configured."""
        return self.max_bytes > 0

    def over_budget(self) -> bool:
        """True once the used size reached the budget."""
        return self.enabled and used_bytes(self.store) >= self.max_bytes

    def enforce(self, force: bool = False) -> RetentionResult | None:
        """Free space down to the low-water mark if the budget is reached (or ``force``)."""
        if not self.enabled:
            return None
        before = used_bytes(self.store)
        if before < self.max_bytes and not force:
            return None
        target = int(self.max_bytes * self.low_water)
        synced = self._drop_synced(target)
        aggregated, agg_rows = self._aggregate_unsynced(target)
        letters = self._drop_dead_letters(target)
        after = used_bytes(self.store)
        result = RetentionResult(before, after, synced, aggregated, agg_rows, letters)
        self.last = result
        log.warning("disk budget %d B reached (%d B used): dropped %d synced "
                    "readings, aggregated %d unsynced into %d rows, dropped %d dead letters; "
                    "%d B used now", self.max_bytes, before, synced,
                    aggregated, agg_rows, letters, after)
        if after > target:
            log.error("still over the disk budget after retention (%d B > %d B): "
                      "only alerts and readings being uploaded are left", after, target)
        return result

    def _drop_synced(self, target: int) -> int:
        conn = self.store.conn
        dropped = 0
        while used_bytes(self.store) > target:
            with self.store.transaction():
                rowids = [r for (r,) in conn.execute(
                    "SELECT rowid FROM readings WHERE batch_seq IN (SELECT batch_seq FROM "
                    "sync_batches WHERE state = 'acked') ORDER BY rowid LIMIT ?", (CHUNK,))]
                if rowids:
                    self._delete("readings", rowids)
                    self.store.bump("retention_synced_dropped", len(rowids))
            if not rowids:
                break
            dropped += len(rowids)
        return dropped

    def _aggregate_unsynced(self, target: int) -> tuple[int, int]:
        aggregated = rows_written = 0
        while used_bytes(self.store) > target:
            with self.store.transaction():
                rowids = self._foldable(CHUNK)
                if rowids:
                    # Computed before the delete, written after it: on a full disk the delete
                    # frees the pages the aggregate rows need.
                    groups = self._minute_groups(rowids)
                    self._delete("readings", rowids)
                    self._merge_aggregates(groups)
                    self.store.bump("retention_aggregated", len(rowids))
                    self.store.bump("retention_aggregate_rows", len(groups))
            if not rowids:
                break
            aggregated += len(rowids)
            rows_written += len(groups)
        return aggregated, rows_written

    def _drop_dead_letters(self, target: int) -> int:
        conn = self.store.conn
        dropped = 0
        while used_bytes(self.store) > target:
            with self.store.transaction():
                ids = [r for (r,) in conn.execute(
                    "SELECT id FROM dead_letters ORDER BY id LIMIT ?", (CHUNK,))]
                if ids:
                    self._delete("dead_letters", ids, key="id")
                    self.store.bump("retention_dead_letters_dropped", len(ids))
            if not ids:
                break
            dropped += len(ids)
        return dropped

    def _delete(self, table: str, ids: list[int], key: str = "rowid") -> None:
        self.store.conn.executemany(f"DELETE FROM [{table}] WHERE {key} = ?",
                                    [(i,) for i in ids])

    def _foldable(self, limit: int) -> list[int]:
        """Oldest unsent readings whose minute has no aggregate row frozen in a pending batch.

        A technician's manual entries are never folded: a note has no aggregate, and they are
        a few rows against the devices' millions.
        """
        conn = self.store.conn
        frozen = conn.execute(
            "SELECT DISTINCT device, minute_ms FROM reading_aggregates WHERE batch_seq IN "
            "(SELECT batch_seq FROM sync_batches WHERE state = 'pending')").fetchall()
        if not frozen:  # the usual case: no aggregates being uploaded
            return [r for (r,) in conn.execute(
                "SELECT rowid FROM readings WHERE batch_seq IS NULL AND origin != 'manual' "
                "ORDER BY rowid LIMIT ?", (limit,))]
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS retention_frozen (device TEXT, "
                     "minute_ms INTEGER, PRIMARY KEY (device, minute_ms))")
        conn.execute("DELETE FROM temp.retention_frozen")
        conn.executemany("INSERT INTO temp.retention_frozen VALUES (?, ?)", frozen)
        return [r for (r,) in conn.execute(
            "SELECT rowid FROM readings r WHERE batch_seq IS NULL AND origin != 'manual' "
            "AND NOT EXISTS (SELECT 1 "
            "FROM temp.retention_frozen f WHERE f.device = r.device "
            "AND f.minute_ms = (r.ts_ms / 60000) * 60000) ORDER BY rowid LIMIT ?", (limit,))]

    def _minute_groups(self, rowids: list[int]) -> list[tuple[object, ...]]:
        """(device, metric, minute, type, n, min, max, sum, first_ts, last_ts) of these rows."""
        conn = self.store.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS retention_ids (id INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM temp.retention_ids")
        conn.executemany("INSERT INTO temp.retention_ids VALUES (?)", [(r,) for r in rowids])
        # json_each over the metrics object: SQLite does the grouping, no Python loop per value.
        rows = conn.execute(
            "SELECT r.device, j.key, (r.ts_ms / 60000) * 60000 AS minute, max(r.type), "
            "count(*), min(j.value), max(j.value), sum(j.value), min(r.ts_ms), max(r.ts_ms) "
            "FROM readings r JOIN temp.retention_ids i ON r.rowid = i.id, json_each(r.metrics) j "
            "GROUP BY r.device, j.key, minute").fetchall()
        return [tuple(r) for r in rows]

    def _merge_aggregates(self, groups: list[tuple[object, ...]]) -> None:
        at = now_ms()
        self.store.conn.executemany(
            "INSERT INTO reading_aggregates (device, metric, minute_ms, type, n, min, max, mean,"
            " sum, first_ts_ms, last_ts_ms, updated_ms, batch_seq) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, CAST(?8 AS REAL) / ?5, ?8, ?9, ?10, ?11, NULL) "
            "ON CONFLICT(device, metric, minute_ms) DO UPDATE SET n = n + excluded.n, "
            "min = min(min, excluded.min), max = max(max, excluded.max), "
            "sum = sum + excluded.sum, mean = CAST(sum + excluded.sum AS REAL) / (n + excluded.n), "
            "first_ts_ms = min(first_ts_ms, excluded.first_ts_ms), "
            "last_ts_ms = max(last_ts_ms, excluded.last_ts_ms), "
            # Strictly newer than the version the cloud may hold (last writer wins), even if
            # two merges fall in one millisecond or the clock stepped back.
            "updated_ms = max(excluded.updated_ms, updated_ms + 1), batch_seq = NULL",
            [(*g, at) for g in groups])


async def run_retention(retention: Retention, stop: asyncio.Event, interval_s: float) -> None:
    """Check the budget every ``interval_s`` until ``stop``; a failing pass is logged, not fatal."""
    if not retention.enabled:
        await stop.wait()  # a task ending early reads as a failed part to the service
        return
    while not stop.is_set():
        try:
            retention.enforce()
        except sqlite3.Error:
            # A full or read-only disk: ingest's degraded mode reports it and retries.
            log.exception("retention pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
