"""Rollouts as operators see them: create, list, roll back; each change an audit row.

A rollout deploys one model version of one sensor profile to canary gateways first and to the
rest (the fleet) once every canary reports the version running with ``min_scored`` readings
scored by it and no rollback (cloud.rollout.progress advances it). A newer rollout of the same
profile supersedes the older one; a manual rollback orders every target back to the version it
ran before, as an explicit rollback the gateway accepts although that bundle is older. A canary
stage still running ``canary_timeout_s`` after the rollout began (a canary never reported the
version) is halted when rollouts are read; an operator may halt (cancel) one too. A halted
rollout orders nothing more: its gateways keep the model they run.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from cloud.artifacts import ArtifactStore, InvalidArtifactKeyError, validate_key
from cloud.db.pool import Conn
from cloud.exceptions import CloudError, ConflictError, GatewayNotFoundError, NotFoundError
from cloud.operations import audit
from shared.schemas import MAX_MODEL_VERSION, MAX_PROFILE_NAME, anchored
from shared.sensors import PROFILES
from shared.topics import ID_PATTERN

log = logging.getLogger(__name__)

ACTIVE = ("canary", "fleet")
VERSION_PATTERN = "[A-Za-z0-9._\\-=+@,]{1,64}"  # also a safe artifact-key segment


class BundleNotForGatewayError(CloudError):
    """A gateway asked for a bundle no rollout meant for it (HTTP 403)."""

    http_status = 403

    def __init__(self, gateway_id: str, profile: str, version: str) -> None:
        super().__init__(
            f"gateway {gateway_id!r} may not download {profile} {version}: no rollout wants it "
            "there and it is not the version it ran before one; create a rollout that targets "
            "this gateway")


def bundle_key(profile: str, version: str) -> str:
    """Where training stores a bundle (cloud.training.pipeline): the default artifact key."""
    return validate_key(f"models/{profile}/{version}/bundle.smb")


class RolloutCreate(BaseModel):
    """What to deploy, where, and when the canaries count as healthy."""

    profile: str = Field(max_length=MAX_PROFILE_NAME, examples=["motor"])
    version: str = Field(max_length=MAX_MODEL_VERSION, pattern=anchored(VERSION_PATTERN),
                         description="bundle version (its manifest's), e.g. motor-1764620000000")
    canaries: list[str] = Field(min_length=1, max_length=100,
                                description="gateways that get the version first")
    fleet: list[str] = Field(default_factory=list, max_length=10_000,
                             description="gateways that get it once the canaries are healthy")
    min_scored: int = Field(default=100, ge=1, le=10_000_000,
                            description="readings each canary must score with it, healthily")
    canary_timeout_s: int = Field(
        default=3600, ge=1, le=30 * 86400,
        description="seconds the canaries have to run the version healthily before the "
                    "rollout is halted")
    artifact_key: str | None = Field(
        default=None, description="bundle's key in the artifact store; default "
                                  "models/<profile>/<version>/bundle.smb")

    @model_validator(mode="after")
    def _check(self) -> RolloutCreate:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown sensor profile {self.profile!r}; one of {sorted(PROFILES)}")
        ids = self.canaries + self.fleet
        bad = [g for g in ids if not re.fullmatch(ID_PATTERN, g)]
        if bad:
            raise ValueError(f"gateway ids {bad[:5]} do not match {ID_PATTERN}")
        if len(set(ids)) != len(ids):
            raise ValueError("a gateway is listed twice (canaries and fleet are disjoint)")
        return self


class TargetState(BaseModel):
    """One gateway in a rollout: its stage and what it reported last."""

    gateway: str
    stage: str = Field(examples=["canary", "fleet"])
    previous_version: str | None
    status: str = Field(examples=["pending", "shadow", "running", "rolled_back"])
    scored: int = Field(description="readings it scored with the version (its report)")
    reason: str
    updated_at: datetime | None


class Rollout(BaseModel):
    """A rollout and its targets."""

    rollout_id: int
    profile: str
    version: str
    artifact_key: str
    min_scored: int
    canary_timeout_s: int
    state: str = Field(examples=["canary", "fleet", "done", "failed", "rolled_back", "halted"])
    reason: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    targets: list[TargetState]


def create_rollout(conn: Conn, who: str, body: RolloutCreate,
                   artifacts: ArtifactStore) -> Rollout:
    """Start a rollout (canary stage); supersedes the profile's active one; audited."""
    try:
        key = validate_key(body.artifact_key) if body.artifact_key else \
            bundle_key(body.profile, body.version)
    except InvalidArtifactKeyError as exc:
        raise ConflictError(f"artifact key refused: {exc}") from exc
    if not artifacts.exists(key):
        raise NotFoundError(f"no bundle at {key!r} in the artifact store: train the model "
                            "(smaint train) or give artifact_key")
    with conn.transaction():
        known = {r[0]: r[1] for r in conn.execute(
            "SELECT gateway_id, reported_state -> 'models' ->> %s FROM gateways"
            " WHERE gateway_id = ANY(%s)", (body.profile, body.canaries + body.fleet))}
        missing = [g for g in body.canaries + body.fleet if g not in known]
        if missing:
            raise GatewayNotFoundError(", ".join(missing[:5]))
        superseded = [r[0] for r in conn.execute(
            "UPDATE model_rollouts SET state = 'superseded', updated_at = now(),"
            " reason = 'a newer rollout of the profile took over'"
            " WHERE profile = %s AND state = ANY(%s) RETURNING rollout_id",
            (body.profile, list(ACTIVE)))]
        row = conn.execute(
            "INSERT INTO model_rollouts (profile, version, artifact_key, min_scored,"
            " canary_timeout_s, created_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING rollout_id",
            (body.profile, body.version, key, body.min_scored, body.canary_timeout_s,
             who)).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING
        rid = int(row[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rollout_targets (rollout_id, gateway_id, stage, previous_version)"
                " VALUES (%s, %s, %s, %s)",
                [(rid, g, "canary" if g in body.canaries else "fleet", known[g])
                 for g in body.canaries + body.fleet])
        audit.record(conn, who, "rollout.create", "rollout", str(rid), before=None, after={
            "profile": body.profile, "version": body.version, "canaries": body.canaries,
            "fleet": body.fleet, "min_scored": body.min_scored,
            "canary_timeout_s": body.canary_timeout_s, "superseded": superseded})
    log.info("rollout %d: %s %s to canaries %s, then %d gateways", rid, body.profile,
             body.version, body.canaries, len(body.fleet))
    return get_rollout(conn, rid)


def _lock_rollout(conn: Conn, rollout_id: int) -> tuple[str, str, str]:
    """(state, profile, version) of a rollout, its row locked for the transaction."""
    row = conn.execute(
        "SELECT state, profile, version FROM model_rollouts WHERE rollout_id = %s"
        " FOR UPDATE", (rollout_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return str(row[0]), str(row[1]), str(row[2])


def rollback_rollout(conn: Conn, who: str, rollout_id: int, reason: str) -> Rollout:
    """Order every target back to the version it ran before; audited."""
    with conn.transaction():
        state, profile, version = _lock_rollout(conn, rollout_id)
        if state in ("rolled_back", "superseded"):
            raise ConflictError(f"rollout {rollout_id} is {state}; nothing to roll back")
        conn.execute(
            "UPDATE model_rollouts SET state = 'rolled_back', reason = %s, updated_at = now()"
            " WHERE rollout_id = %s", (f"rolled back by {who}: {reason}", rollout_id))
        targets: dict[str, str | None] = dict(conn.execute(
            "UPDATE rollout_targets SET status = 'rolled_back', updated_at = now(),"
            " reason = %s WHERE rollout_id = %s RETURNING gateway_id, previous_version",
            (f"ordered back by {who}: {reason}", rollout_id)))
        audit.record(conn, who, "rollout.rollback", "rollout", str(rollout_id),
                     before={"state": state, "profile": profile, "version": version},
                     after={"state": "rolled_back", "reason": reason, "to": targets})
    log.warning("rollout %d (%s %s) rolled back by %s: %s", rollout_id, profile, version, who,
                reason)
    return get_rollout(conn, rollout_id)


def cancel_rollout(conn: Conn, who: str, rollout_id: int, reason: str) -> Rollout:
    """Halt an active rollout where it stands (gateways keep what they run); audited."""
    with conn.transaction():
        state, profile, version = _lock_rollout(conn, rollout_id)
        if state not in ACTIVE:
            raise ConflictError(f"rollout {rollout_id} is {state}; only a rollout in "
                                f"{list(ACTIVE)} can be cancelled")
        why = f"cancelled by {who}: {reason}"
        conn.execute("UPDATE model_rollouts SET state = 'halted', reason = %s,"
                     " updated_at = now() WHERE rollout_id = %s", (why, rollout_id))
        audit.record(conn, who, "rollout.cancel", "rollout", str(rollout_id),
                     before={"state": state, "profile": profile, "version": version},
                     after={"state": "halted", "reason": why})
    log.warning("rollout %d (%s %s) %s", rollout_id, profile, version, why)
    return get_rollout(conn, rollout_id)


def halt_overdue_canaries(conn: Conn) -> list[int]:
    """Halt canary stages older than their ``canary_timeout_s``; audited, returns their ids."""
    halted = []
    with conn.transaction():
        overdue = conn.execute(
            "SELECT rollout_id, profile, version, min_scored, canary_timeout_s"
            " FROM model_rollouts WHERE state = 'canary'"
            " AND created_at + canary_timeout_s * interval '1 second' < now()"
            " FOR UPDATE SKIP LOCKED").fetchall()
        for rid, profile, version, min_scored, timeout_s in overdue:
            late = conn.execute(
                "SELECT gateway_id, status, scored FROM rollout_targets WHERE rollout_id = %s"
                " AND stage = 'canary' AND NOT (status = 'running' AND scored >= %s)"
                " ORDER BY gateway_id LIMIT 1", (rid, min_scored)).fetchone()
            gateway, status, scored = late if late else ("?", "unknown", 0)
            why = (f"canary {gateway} did not report the version within {timeout_s} s "
                   f"(its last step: {status}, {scored} readings scored)")
            conn.execute("UPDATE model_rollouts SET state = 'halted', reason = %s,"
                         " updated_at = now() WHERE rollout_id = %s", (why, rid))
            audit.record(conn, "system", "rollout.halt", "rollout", str(rid),
                         before={"state": "canary", "profile": profile, "version": version},
                         after={"state": "halted", "reason": why})
            log.warning("rollout %d (%s %s) halted: %s", rid, profile, version, why)
            halted.append(int(rid))
    return halted


_SELECT = (
    "SELECT rollout_id, profile, version, artifact_key, min_scored, canary_timeout_s, state,"
    " reason, created_by, created_at, updated_at FROM model_rollouts")


def _targets(conn: Conn, rollout_id: int) -> list[TargetState]:
    return [TargetState(gateway=g, stage=s, previous_version=p, status=st, scored=n, reason=r,
                        updated_at=u)
            for g, s, p, st, n, r, u in conn.execute(
                "SELECT gateway_id, stage, previous_version, status, scored, reason, updated_at"
                " FROM rollout_targets WHERE rollout_id = %s"
                " ORDER BY stage, gateway_id", (rollout_id,))]


def _rollout(conn: Conn, row: tuple[object, ...]) -> Rollout:
    rid = int(str(row[0]))
    return Rollout.model_validate({
        "rollout_id": rid, "profile": row[1], "version": row[2], "artifact_key": row[3],
        "min_scored": row[4], "canary_timeout_s": row[5], "state": row[6], "reason": row[7],
        "created_by": row[8], "created_at": row[9], "updated_at": row[10],
        "targets": _targets(conn, rid)})


def get_rollout(conn: Conn, rollout_id: int) -> Rollout:
    """One rollout with its targets (overdue canary stages halted first); NotFoundError."""
    halt_overdue_canaries(conn)
    row = conn.execute(_SELECT + " WHERE rollout_id = %s", (rollout_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return _rollout(conn, row)


def list_rollouts(conn: Conn, profile: str | None = None, limit: int = 50) -> list[Rollout]:
    """The newest rollouts first, optionally of one profile (overdue canaries halted first)."""
    halt_overdue_canaries(conn)
    rows = conn.execute(
        _SELECT + " WHERE (%(p)s::text IS NULL OR profile = %(p)s)"
        " ORDER BY rollout_id DESC LIMIT %(n)s", {"p": profile, "n": min(limit, 500)}).fetchall()
    return [_rollout(conn, r) for r in rows]


def artifact_for(conn: Conn, profile: str, version: str) -> str:
    """The artifact key of a bundle a gateway may download: a rollout's, else the default."""
    row = conn.execute(
        "SELECT artifact_key FROM model_rollouts WHERE profile = %s AND version = %s"
        " ORDER BY rollout_id DESC LIMIT 1", (profile, version)).fetchone()
    return str(row[0]) if row else bundle_key(profile, version)
