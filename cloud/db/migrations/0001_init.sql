-- Walking-skeleton schema: gateways and their tokens, the device registry, applied sync
-- batches (exactly-once per gateway and batch_seq), raw readings and alerts.

CREATE TABLE gateways (
    gateway_id   text PRIMARY KEY,
    -- Only the SHA-256 of the token is kept: a database leak does not leak usable tokens.
    token_sha256 bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_seen_at timestamptz
);

CREATE TABLE devices (
    device_id     text PRIMARY KEY,
    type          text NOT NULL,
    -- The gateway that last synced this device's readings (devices may move).
    gateway_id    text NOT NULL REFERENCES gateways (gateway_id),
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);

CREATE TABLE sync_batches (
    gateway_id  text NOT NULL REFERENCES gateways (gateway_id),
    batch_seq   bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    n_readings  integer NOT NULL,
    -- Readings new to the cloud; n_readings - n_inserted were duplicates.
    n_inserted  integer NOT NULL DEFAULT 0,
    -- Alerts inserted or changed by this batch (what its ack reported).
    n_alerts    integer NOT NULL,
    PRIMARY KEY (gateway_id, batch_seq)
);

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
    metrics       jsonb NOT NULL,
    score         double precision,
    scorer        text NOT NULL,
    model_version text,
    anomalous     boolean NOT NULL,
    replay        boolean NOT NULL DEFAULT false,
    -- A reading's identity: a device's boot and its counter; re-sent rows are dropped on it.
    CONSTRAINT readings_identity UNIQUE (device_id, boot_id, seq)
);

-- Serves time-range queries and the keyset order (ts, boot_id, seq) of /api/v1/readings.
CREATE INDEX readings_device_ts ON readings (device_id, ts, boot_id, seq);

CREATE TABLE alerts (
    gateway_id    text NOT NULL REFERENCES gateways (gateway_id),
    alert_id      text NOT NULL,
    device_id     text NOT NULL,
    opened_at     timestamptz NOT NULL,
    resolved_at   timestamptz,
    severity      text NOT NULL,
    state         text NOT NULL,
    score         double precision NOT NULL,
    scorer        text NOT NULL,
    model_version text,
    explanation   jsonb NOT NULL,
    updated_ms    bigint NOT NULL,
    PRIMARY KEY (gateway_id, alert_id)
);

CREATE INDEX alerts_device ON alerts (device_id, opened_at);
