-- Model rollouts over the air (cloud.rollout): a model version deployed to canary gateways
-- first, then to the rest once the canaries run it healthily; per-gateway progress as the
-- gateways report it; and what each gateway runs per profile, since when and why.

CREATE TABLE model_rollouts (
    rollout_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile       text NOT NULL,
    version       text NOT NULL,
    artifact_key  text NOT NULL,
    min_scored    integer NOT NULL CHECK (min_scored >= 1),
    state         text NOT NULL DEFAULT 'canary'
                  CHECK (state IN ('canary', 'fleet', 'done', 'failed', 'rolled_back',
                                   'superseded')),
    reason        text NOT NULL DEFAULT '',
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX model_rollouts_profile ON model_rollouts (profile, rollout_id);

CREATE TABLE rollout_targets (
    rollout_id       bigint NOT NULL REFERENCES model_rollouts (rollout_id),
    gateway_id       text NOT NULL REFERENCES gateways (gateway_id),
    stage            text NOT NULL CHECK (stage IN ('canary', 'fleet')),
    previous_version text,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'downloading', 'verifying', 'shadow',
                                       'running', 'rolled_back', 'refused')),
    scored           bigint NOT NULL DEFAULT 0,
    reason           text NOT NULL DEFAULT '',
    updated_at       timestamptz,
    PRIMARY KEY (rollout_id, gateway_id)
);

CREATE INDEX rollout_targets_gateway ON rollout_targets (gateway_id, rollout_id);

CREATE TABLE gateway_models (
    gateway_id  text NOT NULL REFERENCES gateways (gateway_id),
    profile     text NOT NULL,
    version     text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL DEFAULT '',
    PRIMARY KEY (gateway_id, profile)
);
