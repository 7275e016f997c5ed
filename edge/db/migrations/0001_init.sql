-- The gateway database as the code before versioned migrations left it. Every statement is
-- IF NOT EXISTS so a database made by that code adopts this version unchanged; columns that
-- code added later by ALTER are added first by edge.db.migrate's legacy step.

-- One row per stored reading. batch_seq: the upload batch it is frozen in (NULL: unsent).
CREATE TABLE IF NOT EXISTS "readings" (
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
   "batch_seq" INTEGER,
   -- where ts_ms came from (edge/timing.py)
   time_source TEXT NOT NULL DEFAULT 'device',
   PRIMARY KEY ("device", "boot", "seq")
);
-- NULL batch_seq sorts first, then by rowid (arrival order): "oldest unsent first" is an
-- index range scan, and loading a batch's rows for a retry is one too.
CREATE INDEX IF NOT EXISTS "idx_readings_batch_seq" ON "readings" ("batch_seq");

CREATE TABLE IF NOT EXISTS "dead_letters" (
   "id" INTEGER PRIMARY KEY,
   "received_ms" INTEGER NOT NULL,
   "topic" TEXT NOT NULL,
   "payload" BLOB NOT NULL,
   "reason" TEXT NOT NULL,
   "field" TEXT
);

CREATE TABLE IF NOT EXISTS "devices" (
   "device" TEXT PRIMARY KEY,
   "type" TEXT,
   "boot" TEXT,
   "state" TEXT,
   "last_seen_ms" INTEGER,
   "status_ms" INTEGER,
   "fw" TEXT,
   "interval_ms" INTEGER
);

CREATE TABLE IF NOT EXISTS "alerts" (
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
CREATE INDEX IF NOT EXISTS "idx_alerts_dirty" ON "alerts" ("dirty");

-- The outbox (edge/outbox.py): one row per recorded upload batch.
CREATE TABLE IF NOT EXISTS "sync_batches" (
   "batch_seq" INTEGER PRIMARY KEY,
   "created_ms" INTEGER NOT NULL,
   "state" TEXT NOT NULL,
   "n_readings" INTEGER NOT NULL,
   "n_alerts" INTEGER NOT NULL,
   "attempts" INTEGER DEFAULT 0,
   "acked_ms" INTEGER,
   "last_error" TEXT,
   kind TEXT NOT NULL DEFAULT 'live',
   backfill_id INTEGER,
   backfill_done TEXT
);
CREATE INDEX IF NOT EXISTS "idx_sync_batches_state" ON "sync_batches" ("state");

-- The exact alert versions a batch carries, so a retry re-sends the identical batch even if
-- the alert changed since (the change goes in a later batch).
CREATE TABLE IF NOT EXISTS "sync_batch_alerts" (
   "batch_seq" INTEGER,
   "alert_id" TEXT,
   "body" TEXT NOT NULL,
   PRIMARY KEY ("batch_seq", "alert_id")
);

CREATE TABLE IF NOT EXISTS "sync_dead_letters" (
   "id" INTEGER PRIMARY KEY,
   "batch_seq" INTEGER NOT NULL,
   "at_ms" INTEGER NOT NULL,
   "status" INTEGER,
   "reason" TEXT NOT NULL
);

-- Seq accounting and learnt clock of every boot of every device.
CREATE TABLE IF NOT EXISTS "device_boots" (
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

-- What retention leaves of unsynced readings it had to drop: one row per device, metric and
-- minute (minute_ms = start of the minute of ts_ms). batch_seq is for sync, as in readings;
-- a merge sets it back to NULL so the merged row goes out again.
CREATE TABLE IF NOT EXISTS "reading_aggregates" (
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

-- Store.probe_write commits a page-sized row here to learn whether the disk takes writes.
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, filler BLOB);

CREATE TABLE IF NOT EXISTS "counters" (
   "name" TEXT PRIMARY KEY,
   "value" INTEGER NOT NULL
);

-- Readings of backfill batches: they were sent before, so readings.batch_seq is taken.
CREATE TABLE IF NOT EXISTS sync_batch_readings (
   batch_seq INTEGER NOT NULL,
   reading_rowid INTEGER NOT NULL,
   PRIMARY KEY (batch_seq, reading_rowid)
);

-- Device status changes a batch carries, frozen like its alerts.
CREATE TABLE IF NOT EXISTS sync_batch_events (
   batch_seq INTEGER PRIMARY KEY,
   body TEXT NOT NULL,
   upto_ms INTEGER NOT NULL
);

-- Backfill requests from the cloud and how far each got (rowid cursor).
CREATE TABLE IF NOT EXISTS backfills (
   id INTEGER PRIMARY KEY,
   since_ms INTEGER NOT NULL,
   until_ms INTEGER NOT NULL,
   cursor_rowid INTEGER NOT NULL DEFAULT 0,
   done_ms INTEGER,
   reported INTEGER NOT NULL DEFAULT 0
);

-- The desired state of the last sync answer, kept across restarts.
CREATE TABLE IF NOT EXISTS desired_state (
   id INTEGER PRIMARY KEY CHECK (id = 1),
   body TEXT NOT NULL
);
