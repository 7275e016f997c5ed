-- Time-series storage for readings, rollups, registries, desired state and backfill requests.
--
-- readings becomes time-partitioned. With the timescaledb extension installed it is a
-- hypertable with compression; otherwise (what the tests exercise: Debian's PostgreSQL 15 has
-- no timescaledb package here) native range partitions by day, each with a BRIN index on ts.
-- Both keep one unique btree (device_id, ts, boot_id, seq): it serves a device's time-range
-- and keyset queries and is the safety net of exactly-once. The unique key must hold the
-- partition key, hence ts in it: a reading's ts never changes once the gateway stored it.
-- Rollups readings_1m / readings_1h (min/max/sum/count per device, metric, bucket) are tables
-- maintained by ingest from the rows it actually inserted, in both cases: one query path.

ALTER TABLE readings RENAME TO readings_0001;
ALTER TABLE readings_0001 RENAME CONSTRAINT readings_identity TO readings_0001_identity;
ALTER INDEX readings_device_ts RENAME TO readings_0001_device_ts;

CREATE TABLE readings (
    device_id     text NOT NULL,
    boot_id       text NOT NULL,
    seq           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    device_ts     timestamptz,
    received_at   timestamptz NOT NULL,
    gateway_id    text NOT NULL,
    batch_seq     bigint NOT NULL,
    type          text NOT NULL,
    -- Wide row, metrics as jsonb: one row and one index entry per reading (a long/narrow
    -- layout would triple both), profiles keep their own metric sets, and per-metric
    -- series are read from the rollups or with metrics->>'name' over a device's range.
    metrics       jsonb NOT NULL,
    score         double precision,
    scorer        text NOT NULL,
    model_version text,
    anomalous     boolean NOT NULL,
    replay        boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (ts);

-- Creates the missing daily partitions for the given days (UTC); ingest calls it, outside its
-- batch transaction, for the days a batch touches. Days outside 2000..2099 land in the default
-- partition, which never overlaps a creatable day: a wild device clock cannot make a
-- partition creation fail later, nor make thousands of them.
CREATE FUNCTION readings_ensure_partitions(days date[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    made integer := 0;
    name text;
BEGIN
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = 'readings'::regclass) <> 'p' THEN
        RETURN 0;  -- a hypertable makes its own chunks
    END IF;
    FOREACH d IN ARRAY days LOOP
        CONTINUE WHEN d < date '2000-01-01' OR d >= date '2100-01-01';
        name := 'readings_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                name, (d::timestamp AT TIME ZONE 'UTC'),
                ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        -- Untested here (no package): the same table as a hypertable with compression.
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        DROP TABLE readings;
        CREATE TABLE readings (LIKE readings_0001 INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
        ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_0001_identity;
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => interval '1 day');
        EXECUTE 'ALTER TABLE readings SET (timescaledb.compress,'
                ' timescaledb.compress_segmentby = ''device_id'','
                ' timescaledb.compress_orderby = ''ts, boot_id, seq'')';
        PERFORM add_compression_policy('readings', interval '7 days');
    ELSE
        CREATE TABLE readings_default PARTITION OF readings DEFAULT;
        CREATE INDEX readings_ts_brin ON readings USING brin (ts);
    END IF;
END $$;

CREATE UNIQUE INDEX readings_identity ON readings (device_id, ts, boot_id, seq);

SELECT readings_ensure_partitions(array_agg(DISTINCT (ts AT TIME ZONE 'UTC')::date))
FROM readings_0001 HAVING count(*) > 0;
INSERT INTO readings SELECT * FROM readings_0001;
DROP TABLE readings_0001;

-- Per (device, boot) the highest seq stored. Invariant (kept by ingest in the same
-- transaction as its inserts): every stored reading has seq <= its high-water mark, so a row
-- above the mark cannot be a duplicate and skips all conflict checks.
CREATE TABLE readings_hwm (
    device_id text NOT NULL,
    boot_id   text NOT NULL,
    max_seq   bigint NOT NULL,
    PRIMARY KEY (device_id, boot_id)
);
INSERT INTO readings_hwm SELECT device_id, boot_id, max(seq) FROM readings GROUP BY 1, 2;

CREATE TABLE readings_1m (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    sum       double precision NOT NULL,
    count     bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE TABLE readings_1h (LIKE readings_1m INCLUDING ALL);

INSERT INTO readings_1m
SELECT device_id, key, date_trunc('minute', ts), min(v), max(v), sum(v), count(*)
FROM readings, LATERAL (SELECT key, value::double precision AS v FROM jsonb_each(metrics)) m
GROUP BY 1, 2, 3;
INSERT INTO readings_1h
SELECT device_id, metric, date_trunc('hour', bucket), min(min), max(max), sum(sum), sum(count)
FROM readings_1m GROUP BY 1, 2, 3;

-- Registries: sites group gateways; devices know their status as the gateway reported it.
CREATE TABLE sites (
    site_id    text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE gateways
    ADD COLUMN site_id text REFERENCES sites (site_id),
    -- Desired state, returned with every sync answer.
    ADD COLUMN config_version integer NOT NULL DEFAULT 0,
    ADD COLUMN desired_config jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN desired_models jsonb NOT NULL DEFAULT '{}',
    -- Actual state, as the gateway last reported it.
    ADD COLUMN reported_state jsonb,
    ADD COLUMN reported_at timestamptz;

ALTER TABLE devices
    ADD COLUMN state text NOT NULL DEFAULT 'online' CHECK (state IN ('online', 'offline')),
    ADD COLUMN state_at timestamptz,
    ADD COLUMN boot_id text,
    ADD COLUMN fw text;

CREATE TABLE backfill_requests (
    id           bigserial PRIMARY KEY,
    gateway_id   text NOT NULL REFERENCES gateways (gateway_id),
    since_at     timestamptz NOT NULL,
    until_at     timestamptz NOT NULL CHECK (until_at > since_at),
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX backfill_requests_open ON backfill_requests (gateway_id, id)
    WHERE completed_at IS NULL;
