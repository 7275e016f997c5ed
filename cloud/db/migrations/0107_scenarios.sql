-- SIMULATION ONLY: scenario requests (spike, drift, stuck, noise) for simulated devices, asked
-- for on the console or the API (operator or admin) and carried to the device's gateway in
-- DesiredState.scenarios until the gateway reports them done (SyncBatch.scenarios_done).

CREATE TABLE scenario_requests (
    request_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    gateway_id   text NOT NULL REFERENCES gateways (gateway_id),
    device_id    text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('spike', 'drift', 'stuck', 'noise')),
    seconds      double precision NOT NULL CHECK (seconds > 0),
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- Set once the gateway reports it: published to the device, or refused (simulation off).
    done_at      timestamptz,
    outcome      text CHECK (outcome IN ('published', 'refused')),
    reason       text NOT NULL DEFAULT ''
);
CREATE INDEX scenario_requests_pending ON scenario_requests (gateway_id, requested_at)
    WHERE done_at IS NULL;
CREATE INDEX scenario_requests_device ON scenario_requests (device_id, requested_at DESC);
