-- Rollup deltas waiting to be folded into readings_1m / readings_1h (cloud/rollup.py).
-- Each sync batch appends its per-minute aggregates here in its own transaction; a folder
-- moves them into the rollup tables about once a second. Append-only between folds and read
-- whole by each fold: no index to maintain.
CREATE TABLE rollup_pending (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL,  -- minute start
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    sum       double precision NOT NULL,
    count     bigint NOT NULL
);

-- Rows that every batch or fold updates in place: rollup buckets, high-water marks, devices'
-- last-seen times, gateways' last contact. With free room on each page PostgreSQL updates
-- them as heap-only tuples (HOT), without new index entries; at the default fillfactor of
-- 100 every such update also inserts into each index.
ALTER TABLE readings_1m SET (fillfactor = 70);
ALTER TABLE readings_1h SET (fillfactor = 70);
ALTER TABLE readings_hwm SET (fillfactor = 50);
ALTER TABLE devices SET (fillfactor = 70);
ALTER TABLE gateways SET (fillfactor = 50);
