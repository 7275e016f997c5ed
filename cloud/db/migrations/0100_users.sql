-- People and programs that use the API: users with one role each, and their API keys.
-- Rate-limit counters live here too, so every replica of the cloud shares them.

CREATE TABLE users (
    user_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    -- Only the SHA-256 of a key is kept, as for gateway tokens.
    key_sha256   bytea NOT NULL UNIQUE,
    -- The key's first characters, so people can tell their keys apart in a listing.
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_user ON api_keys (user_id);

-- Fixed-window request counters per principal. UNLOGGED: a crash may reset the current
-- minute's counts, which is harmless, and the table costs no WAL on every request.
CREATE UNLOGGED TABLE rate_limit_windows (
    principal    text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (principal, window_start)
);
