-- Folded readings (reading_aggregates) go to the cloud in upload batches like readings:
-- how many a batch carries, and "unsent or in this batch" as an index range scan.
ALTER TABLE sync_batches ADD COLUMN n_aggregates INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS idx_reading_aggregates_batch_seq ON reading_aggregates (batch_seq);
