-- Alert reviews flow both ways with the cloud (edge/alert_decisions.py).
-- Up: the acknowledgement made here (panel or HTTP API) travels with every later version of
-- the alert (wire Alert.ack), so these columns live on the alert row.
ALTER TABLE alerts ADD COLUMN ack_by TEXT;
ALTER TABLE alerts ADD COLUMN ack_ms INTEGER;
ALTER TABLE alerts ADD COLUMN ack_comment TEXT;

-- Down: the cloud's decisions on this gateway's alerts, each kept once under the cloud's
-- number; the newest number is reported back with every upload (GatewayState.alert_decision).
-- outcome: what applying it did here (applied, unchanged, unknown_alert).
CREATE TABLE alert_decisions (
    id         INTEGER PRIMARY KEY,
    alert_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    by         TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    decision   TEXT,
    comment    TEXT NOT NULL,
    applied_ms INTEGER NOT NULL,
    outcome    TEXT NOT NULL
);
CREATE INDEX idx_alert_decisions_alert ON alert_decisions (alert_id, id);
