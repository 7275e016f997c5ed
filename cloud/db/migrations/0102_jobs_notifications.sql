-- Background work shared by every cloud process: a job table claimed with
-- FOR UPDATE SKIP LOCKED, notification jobs enqueued by a trigger on `alerts`, and the log of
-- every delivery attempt.

CREATE TABLE jobs (
    job_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL,
    -- Enqueueing the same work twice (a trigger firing again, a fan-out re-run after a crash)
    -- is a no-op when the producer names it.
    dedupe_key   text UNIQUE,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    -- A claim is a lease: a worker that dies leaves the job to be claimed again after it ends.
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('queued', 'running');

CREATE TABLE notification_deliveries (
    delivery_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL,
    gateway_id  text NOT NULL,
    alert_id    text NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'webhook')),
    target      text NOT NULL,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    ok          boolean NOT NULL,
    detail      text NOT NULL,
    duration_ms double precision NOT NULL,
    worker      text NOT NULL
);

CREATE INDEX notification_deliveries_alert
    ON notification_deliveries (gateway_id, alert_id, delivery_id);

-- New high-severity alerts (or alerts raised to high) get a notification job in the same
-- transaction that stores them, whatever code path stores them: the ingest needs no hook.
CREATE FUNCTION alerts_enqueue_notification() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.severity = 'high'
       AND (TG_OP = 'INSERT' OR OLD.severity IS DISTINCT FROM 'high') THEN
        INSERT INTO jobs (kind, payload, dedupe_key)
        VALUES ('notify_alert',
                jsonb_build_object('gateway', NEW.gateway_id, 'alert_id', NEW.alert_id),
                'notify_alert:' || NEW.gateway_id || ':' || NEW.alert_id)
        ON CONFLICT (dedupe_key) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER alerts_notify AFTER INSERT OR UPDATE OF severity ON alerts
    FOR EACH ROW EXECUTE FUNCTION alerts_enqueue_notification();
