-- Security hardening (issue 13).
--
-- Readings whose timestamp lies outside the plausible window (cloud settings ingest.*) are not
-- stored in readings (each day would need a partition) but here, with the reason: counted on
-- /metrics, listed by GET /api/v1/dead-letters.
CREATE TABLE ingest_dead_letters (
    dead_letter_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    gateway_id     text NOT NULL REFERENCES gateways (gateway_id),
    batch_seq      bigint NOT NULL,
    device_id      text NOT NULL,
    ts_ms          bigint NOT NULL,
    reason         text NOT NULL,
    reading        jsonb NOT NULL
);
CREATE INDEX ingest_dead_letters_gateway ON ingest_dead_letters (gateway_id, dead_letter_id);

-- How many of a batch's readings went to ingest_dead_letters (so its re-sent ack adds up).
ALTER TABLE sync_batches ADD COLUMN n_dead_lettered integer NOT NULL DEFAULT 0;

-- Console passwords (argon2id, cloud/access/passwords.py); NULL: this user signs in with an
-- API key only.
ALTER TABLE users ADD COLUMN password_hash text;
-- Keys made by a password sign-in end by themselves; other keys have no expiry.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
