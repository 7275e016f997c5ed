-- Alert reviews flow both ways between a gateway and the cloud (cloud/operations/alert_sync.py).
--
-- Up: an acknowledgement made on a gateway arrives with the alert (wire Alert.ack). Its first
-- arrival is kept here, once per alert; the primary key makes a retried or re-sent batch a
-- no-op, so the audit entry it writes exists exactly once.
CREATE TABLE alert_gateway_acks (
    gateway_id  text NOT NULL,
    alert_id    text NOT NULL,
    acked_by    text NOT NULL,
    acked_at    timestamptz NOT NULL,
    comment     text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, alert_id)
);

-- Down: every review taken in the cloud (acknowledge, resolve with a decision), numbered per
-- gateway 1, 2, ... in commit order (the numbering is serialised per gateway). Sync answers
-- carry those after the number the gateway reports applied; confirmed_at records that report.
CREATE TABLE alert_decisions (
    gateway_id   text NOT NULL,
    decision_id  bigint NOT NULL CHECK (decision_id >= 1),
    alert_id     text NOT NULL,
    action       text NOT NULL CHECK (action IN ('acknowledge', 'resolve')),
    actor        text NOT NULL,
    decision     text CHECK (decision IN ('confirmed_failure', 'false_positive',
                                          'needs_inspection')),
    comment      text NOT NULL DEFAULT '',
    decided_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    PRIMARY KEY (gateway_id, decision_id),
    CHECK ((action = 'resolve') = (decision IS NOT NULL))
);

CREATE INDEX alert_decisions_alert ON alert_decisions (gateway_id, alert_id);
