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

-- Gateway token rotation without downtime: the token before the current one stays valid
-- until previous_valid_until; rotate_requested is carried to the gateway in its sync answer.
ALTER TABLE gateways
    ADD COLUMN previous_token_sha256 bytea UNIQUE,
    ADD COLUMN previous_valid_until timestamptz,
    ADD COLUMN rotate_requested boolean NOT NULL DEFAULT false;

-- One-time enrolment codes: an admin issues one for a gateway id; the gateway's first
-- contact exchanges it for its token. Only the code's SHA-256 is kept.
CREATE TABLE gateway_enrolments (
    code_sha256 bytea PRIMARY KEY,
    gateway_id  text NOT NULL CHECK (gateway_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
