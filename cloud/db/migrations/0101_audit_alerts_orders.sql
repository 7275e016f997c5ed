-- Operator work on alerts (acknowledge, resolve with a decision), maintenance orders, and the
-- append-only audit log every change to them is written to.
--
-- No foreign keys to `alerts`: that table belongs to the ingest path and may be reshaped
-- (partitioned, say); the code checks that an alert exists before working on it.

CREATE TABLE audit_log (
    audit_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text NOT NULL,
    action         text NOT NULL,
    entity         text NOT NULL,
    entity_id      text NOT NULL,
    device_id      text,
    before         jsonb,
    after          jsonb,
    correlation_id text
);

CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, audit_id);
CREATE INDEX audit_log_device ON audit_log (device_id, audit_id) WHERE device_id IS NOT NULL;

-- Append-only is enforced by the database, not by code paths: any UPDATE, DELETE or TRUNCATE
-- fails, whoever runs it.
CREATE FUNCTION audit_log_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();

-- The cloud-side workflow of an alert; no row means nobody has touched it yet ("open").
-- Kept apart from `alerts`, whose columns the gateways' uploads overwrite.
CREATE TABLE alert_reviews (
    gateway_id      text NOT NULL,
    alert_id        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('acknowledged', 'resolved')),
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_by     text,
    resolved_at     timestamptz,
    decision        text CHECK (decision IN ('confirmed_failure', 'false_positive',
                                             'needs_inspection')),
    comment         text NOT NULL DEFAULT '',
    PRIMARY KEY (gateway_id, alert_id),
    CHECK ((status = 'resolved') = (decision IS NOT NULL))
);

CREATE INDEX alert_reviews_resolved ON alert_reviews (resolved_at) WHERE status = 'resolved';

CREATE TABLE maintenance_orders (
    order_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id   text NOT NULL,
    alert_id     text NOT NULL,
    device_id    text NOT NULL,
    title        text NOT NULL,
    priority     text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    due_date     date,
    assignee     text,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'scheduled', 'done')),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX maintenance_orders_device ON maintenance_orders (device_id, order_id);
CREATE INDEX maintenance_orders_alert ON maintenance_orders (gateway_id, alert_id);
