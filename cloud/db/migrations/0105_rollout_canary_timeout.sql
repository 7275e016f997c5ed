-- A canary stage that does not end (a canary gateway never reports the version) halts after
-- canary_timeout_s; an operator may halt (cancel) a rollout too. A halted rollout orders
-- nothing: its gateways keep the model they run.

ALTER TABLE model_rollouts
    ADD COLUMN canary_timeout_s integer NOT NULL DEFAULT 3600 CHECK (canary_timeout_s >= 1);

ALTER TABLE model_rollouts DROP CONSTRAINT model_rollouts_state_check;
ALTER TABLE model_rollouts ADD CONSTRAINT model_rollouts_state_check
    CHECK (state IN ('canary', 'fleet', 'done', 'failed', 'rolled_back', 'superseded', 'halted'));
