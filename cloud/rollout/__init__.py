"""Model rollouts over the air: canaries first, the fleet once they are healthy, rollback.

``rollouts``: what operators create, list and roll back (audited). ``progress``: what the
gateways report with their uploads, the promotion it triggers and the desired models that
follow, all inside the sync batch's transaction.
"""

from cloud.rollout.progress import (
    desired_models,
    gateway_models,
    may_download,
    record_report,
)
from cloud.rollout.rollouts import (
    Rollout,
    RolloutCreate,
    TargetState,
    artifact_for,
    cancel_rollout,
    create_rollout,
    get_rollout,
    list_rollouts,
    rollback_rollout,
)

__all__ = [
    "Rollout",
    "RolloutCreate",
    "TargetState",
    "artifact_for",
    "cancel_rollout",
    "create_rollout",
    "desired_models",
    "gateway_models",
    "get_rollout",
    "list_rollouts",
    "may_download",
    "record_report",
    "rollback_rollout",
]
