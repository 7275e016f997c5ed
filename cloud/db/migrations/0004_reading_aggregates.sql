-- Per-minute aggregates a gateway folded from readings it had to drop under its disk budget
-- (shared.schemas.ReadingAggregate). A later fold of the same minute arrives again with a
-- bigger n and a newer updated_ms: the newest version wins, an older replay changes nothing.
-- Ingest feeds the rollups with the difference between the new and the stored version.
CREATE TABLE reading_aggregates (
    device_id  text NOT NULL,
    metric     text NOT NULL,
    minute     timestamptz NOT NULL,
    gateway_id text NOT NULL,
    type       text NOT NULL,
    n          integer NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    mean       double precision NOT NULL,
    sum        double precision NOT NULL,
    first_ts   timestamptz NOT NULL,
    last_ts    timestamptz NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (device_id, metric, minute)
);
