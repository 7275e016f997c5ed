-- Drift events (cloud.drift): a device's recent feature distribution moved away from the
-- training reference of the model that scores it, and the retraining it started.

CREATE TABLE drift_events (
    event_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id      text NOT NULL,
    profile        text NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    bundle_version text NOT NULL,
    window_since   timestamptz NOT NULL,
    window_until   timestamptz NOT NULL,
    windows        integer NOT NULL,
    method         text NOT NULL DEFAULT 'psi',
    threshold      double precision NOT NULL,
    scores         jsonb NOT NULL,
    moved          text[] NOT NULL,
    retrain_job_id bigint,
    retrain_run_id text,
    retrain_version text,
    gate_outcome   text,
    gate_reason    text,
    retrained_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX drift_events_episode ON drift_events (device_id, profile, model_version, created_at);
CREATE INDEX drift_events_job ON drift_events (retrain_job_id) WHERE retrain_job_id IS NOT NULL;
