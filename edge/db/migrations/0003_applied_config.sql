-- The desired config (sync answers) as applied here: version, values applied and values
-- refused with the reason, so a restart runs the same settings before the first sync.
CREATE TABLE IF NOT EXISTS applied_config (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    config_version INTEGER NOT NULL,
    applied        TEXT NOT NULL,
    refused        TEXT NOT NULL,
    applied_ms     INTEGER NOT NULL
);
