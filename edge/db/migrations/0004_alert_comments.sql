-- Comments operators write on the gateway's panel when they acknowledge an alert (ui/panel).
-- Kept beside `alerts`, whose rows the alert tracker rewrites with every new version. Local
-- only for now: the wire Alert has no comment field, so these do not reach the cloud.
CREATE TABLE alert_comments (
    id        INTEGER PRIMARY KEY,
    alert_id  TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    author    TEXT NOT NULL,
    comment   TEXT NOT NULL
);
CREATE INDEX idx_alert_comments_alert ON alert_comments (alert_id, id);
