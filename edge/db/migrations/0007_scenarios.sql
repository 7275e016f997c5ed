-- SIMULATION ONLY: scenario requests (spike, drift, stuck, noise) for simulated devices, from
-- the panel or the cloud (DesiredState.scenarios), each published once on .../simulate
-- (edge/scenarios.py). A cloud request's outcome goes up once in a batch's scenarios_done.
CREATE TABLE scenarios (
    id            TEXT PRIMARY KEY,       -- ScenarioRequest.id (32 hex digits)
    device        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    seconds       REAL NOT NULL,
    requested_by  TEXT NOT NULL,
    source        TEXT NOT NULL,          -- 'panel' or 'cloud'
    requested_ms  INTEGER NOT NULL,       -- gateway clock when it arrived here
    outcome       TEXT,                   -- NULL: waiting to be published; 'published', 'refused'
    reason        TEXT NOT NULL DEFAULT '',
    done_ms       INTEGER,
    reported      INTEGER NOT NULL DEFAULT 0  -- cloud requests: reported in an acked batch
);
CREATE INDEX idx_scenarios_waiting ON scenarios (outcome, requested_ms);
ALTER TABLE sync_batches ADD COLUMN scenarios_done TEXT;
