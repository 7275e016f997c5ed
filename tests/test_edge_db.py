"""The gateway schema has one owner (edge/db): ordered migrations applied once each, and a
database made by the code before them opens at the latest version with its rows intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.db import MigrationError, available, migrate, version
from edge.db.migrate import Migration
from edge.outbox import Outbox
from edge.store import Store

# The DDL the gateway ran before versioned migrations (store.py's sqlite-utils calls, then
# outbox.py's statements and ALTERs), verbatim from sqlite_master of a database it made.
OLD_DDL = '''
CREATE TABLE "readings" (
   "device" TEXT,
   "boot" TEXT,
   "seq" INTEGER,
   "type" TEXT NOT NULL,
   "ts_ms" INTEGER NOT NULL,
   "device_ts_ms" INTEGER,
   "received_ms" INTEGER NOT NULL,
   "metrics" TEXT NOT NULL,
   "score" REAL,
   "scorer" TEXT NOT NULL,
   "model_version" TEXT,
   "anomalous" INTEGER NOT NULL,
   "batch_seq" INTEGER, time_source TEXT NOT NULL DEFAULT 'device',
   PRIMARY KEY ("device", "boot", "seq")
);
CREATE INDEX "idx_readings_batch_seq"
    ON "readings" ("batch_seq");
CREATE TABLE "dead_letters" (
   "id" INTEGER PRIMARY KEY,
   "received_ms" INTEGER NOT NULL,
   "topic" TEXT NOT NULL,
   "payload" BLOB NOT NULL,
   "reason" TEXT NOT NULL,
   "field" TEXT
);
CREATE TABLE "devices" (
   "device" TEXT PRIMARY KEY,
   "type" TEXT,
   "boot" TEXT,
   "state" TEXT,
   "last_seen_ms" INTEGER,
   "status_ms" INTEGER,
   "fw" TEXT,
   "interval_ms" INTEGER
);
CREATE TABLE "alerts" (
   "alert_id" TEXT PRIMARY KEY,
   "device" TEXT NOT NULL,
   "opened_ms" INTEGER NOT NULL,
   "resolved_ms" INTEGER,
   "severity" TEXT NOT NULL,
   "state" TEXT NOT NULL,
   "score" REAL,
   "scorer" TEXT,
   "model_version" TEXT,
   "explanation" TEXT,
   "updated_ms" INTEGER NOT NULL,
   "dirty" INTEGER
);
CREATE INDEX "idx_alerts_dirty"
    ON "alerts" ("dirty");
CREATE TABLE "sync_batches" (
   "batch_seq" INTEGER PRIMARY KEY,
   "created_ms" INTEGER NOT NULL,
   "state" TEXT NOT NULL,
   "n_readings" INTEGER NOT NULL,
   "n_alerts" INTEGER NOT NULL,
   "attempts" INTEGER DEFAULT 0,
   "acked_ms" INTEGER,
   "last_error" TEXT
, kind TEXT NOT NULL DEFAULT 'live', backfill_id INTEGER, backfill_done TEXT);
CREATE INDEX "idx_sync_batches_state"
    ON "sync_batches" ("state");
CREATE TABLE "sync_batch_alerts" (
   "batch_seq" INTEGER,
   "alert_id" TEXT,
   "body" TEXT NOT NULL,
   PRIMARY KEY ("batch_seq", "alert_id")
);
CREATE TABLE "sync_dead_letters" (
   "id" INTEGER PRIMARY KEY,
   "batch_seq" INTEGER NOT NULL,
   "at_ms" INTEGER NOT NULL,
   "status" INTEGER,
   "reason" TEXT NOT NULL
);
CREATE TABLE "device_boots" (
   "device" TEXT,
   "boot" TEXT,
   "first_seq" INTEGER NOT NULL,
   "last_seq" INTEGER NOT NULL,
   "n" INTEGER NOT NULL,
   "first_seen_ms" INTEGER NOT NULL,
   "last_seen_ms" INTEGER NOT NULL,
   "device_epoch_ms" INTEGER,
   "gateway_epoch_ms" INTEGER,
   PRIMARY KEY ("device", "boot")
);
CREATE TABLE "reading_aggregates" (
   "device" TEXT,
   "metric" TEXT,
   "minute_ms" INTEGER,
   "type" TEXT NOT NULL,
   "n" INTEGER NOT NULL,
   "min" REAL NOT NULL,
   "max" REAL NOT NULL,
   "mean" REAL NOT NULL,
   "sum" REAL NOT NULL,
   "first_ts_ms" INTEGER NOT NULL,
   "last_ts_ms" INTEGER NOT NULL,
   "updated_ms" INTEGER NOT NULL,
   "batch_seq" INTEGER,
   PRIMARY KEY ("device", "metric", "minute_ms")
);
CREATE TABLE write_probe (id INTEGER PRIMARY KEY, filler BLOB);
CREATE TABLE "counters" (
   "name" TEXT PRIMARY KEY,
   "value" INTEGER NOT NULL
);
CREATE TABLE sync_batch_readings (batch_seq INTEGER NOT NULL, reading_rowid INTEGER NOT NULL,
  PRIMARY KEY (batch_seq, reading_rowid));
CREATE TABLE sync_batch_events (batch_seq INTEGER PRIMARY KEY, body TEXT NOT NULL,
  upto_ms INTEGER NOT NULL);
CREATE TABLE backfills (id INTEGER PRIMARY KEY, since_ms INTEGER NOT NULL,
  until_ms INTEGER NOT NULL, cursor_rowid INTEGER NOT NULL DEFAULT 0, done_ms INTEGER,
  reported INTEGER NOT NULL DEFAULT 0);
CREATE TABLE desired_state (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
'''
# An older database still: made before time_source, catch-up and backfill existed.
OLDER_DDL = (OLD_DDL.replace(", time_source TEXT NOT NULL DEFAULT 'device'", "")
             .replace(", kind TEXT NOT NULL DEFAULT 'live', backfill_id INTEGER, "
                      "backfill_done TEXT", ""))

ROWS = (
    "INSERT INTO readings (device, boot, seq, type, ts_ms, received_ms, metrics, score, "
    "scorer, anomalous, batch_seq) VALUES ('old-dev', '0badc0de', 1, 'motor', "
    "1700000000000, 1700000000005, '{\"current_a\": 5.0}', 0.5, 'stat', 0, 1), "
    "('old-dev', '0badc0de', 2, 'motor', 1700000001000, 1700000001005, "
    "'{\"current_a\": 6.0}', NULL, 'stat', 0, NULL)",
    "INSERT INTO sync_batches (batch_seq, created_ms, state, n_readings, n_alerts) "
    "VALUES (1, 1700000000100, 'acked', 1, 0)",
    "INSERT INTO reading_aggregates (device, metric, minute_ms, type, n, min, max, mean, sum, "
    "first_ts_ms, last_ts_ms, updated_ms) VALUES ('old-dev', 'current_a', 1699999980000, "
    "'motor', 2, 4.0, 5.0, 4.5, 9.0, 1699999980000, 1699999981000, 1700000000000)",
    "INSERT INTO counters (name, value) VALUES ('stored', 4), ('synced', 1), "
    "('retention_aggregated', 2)",
)


def old_database(path: Path, ddl: str) -> None:
    """A database as the pre-migration gateway left it, with a few rows."""
    with sqlite3.connect(path) as conn:
        conn.executescript(ddl)
        for sql in ROWS:
            conn.execute(sql)
    conn.close()


def schema(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str, int, object, int]]]:
    """table -> its columns (name, type, notnull, default, pk), the shape that matters."""
    tables = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: sorted(tuple(r[1:]) for r in conn.execute(f'PRAGMA table_info("{t}")'))
            for t in tables}


def indexes(conn: sqlite3.Connection) -> set[str]:
    """Names of the explicit indexes."""
    return {n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


@pytest.mark.parametrize("ddl", [OLD_DDL, OLDER_DDL], ids=["before-migrations", "older"])
def test_a_database_of_the_old_code_opens_at_the_latest_version_with_its_rows(
    tmp_path: Path, ddl: str
) -> None:
    old_database(tmp_path / "old.db", ddl)
    store = Store.open(tmp_path / "old.db")
    fresh = Store.open(tmp_path / "fresh.db")
    latest = available()[-1].name
    assert version(store.conn) == version(fresh.conn) == latest
    # Same tables, columns, indexes as a database made from scratch: no drift either way.
    assert schema(store.conn) == schema(fresh.conn)
    assert indexes(store.conn) == indexes(fresh.conn)
    rows = store.conn.execute(
        "SELECT seq, batch_seq, time_source FROM readings ORDER BY seq").fetchall()
    assert rows == [(1, 1, "device"), (2, None, "device")]
    assert store.conn.execute("SELECT kind, n_aggregates FROM sync_batches").fetchall() == [
        ("live", 0)]
    assert store.count("reading_aggregates", "batch_seq IS NULL") == 1
    assert store.counters["stored"] == 4
    # Its unsent aggregate counts in the backlog: 4 stored - 1 synced - 2 folded + 1 row.
    assert Outbox(store).backlog() == 2
    store.close()
    fresh.close()


def test_each_migration_is_applied_once_and_recorded(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    names = [m.name for m in available()]
    assert names == sorted(names)
    assert names[0] == "0001_init.sql"
    assert migrate(conn) == names
    assert migrate(conn) == []  # a second start changes nothing
    recorded = [n for (n,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert recorded == names
    conn.close()


def test_an_edited_or_unknown_migration_is_refused_with_what_to_do(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    migrate(conn)
    conn.execute("UPDATE schema_migrations SET sha256 = 'edited' WHERE name = '0001_init.sql'")
    with pytest.raises(MigrationError, match=r"0001_init\.sql: changed after it was applied"):
        migrate(conn)
    conn.execute("DELETE FROM schema_migrations WHERE name = '0001_init.sql'")
    conn.execute("INSERT INTO schema_migrations VALUES ('0001_init.sql', ?, 0), "
                 "('9999_future.sql', 'x', 0)", (available()[0].sha256,))
    with pytest.raises(MigrationError, match="made by a newer version"):
        Store.open(tmp_path / "gw.db")
    conn.close()


def test_a_failing_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    good = Migration("0001_a.sql", "CREATE TABLE a (x INTEGER); -- a ';' in a comment\n"
                                   "INSERT INTO a VALUES (1);")
    assert list(good.statements()) == [
        "CREATE TABLE a (x INTEGER);", " -- a ';' in a comment\nINSERT INTO a VALUES (1);"]
    with pytest.raises(MigrationError, match="without a closing"):
        list(Migration("0002_b.sql", "CREATE TABLE b (x INTEGER)").statements())
    conn = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
                  "applied_ms INTEGER NOT NULL)")
    # 0002 of this build fails on a database whose sync_batches already has its column.
    conn.execute("CREATE TABLE sync_batches (batch_seq INTEGER PRIMARY KEY, "
                 "n_aggregates INTEGER)")
    with pytest.raises(MigrationError, match=r"0002_aggregate_sync\.sql: duplicate column"):
        migrate(conn)
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'readings'"
                        ).fetchone() == (0,)  # 0001's tables rolled back with it
    conn.close()
