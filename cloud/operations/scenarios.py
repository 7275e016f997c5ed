"""SIMULATION ONLY: scenario requests for simulated devices, queued for the owning gateway.

A request waits in ``scenario_requests`` until the device's gateway reports it done (published
to the device over MQTT, or refused because simulation is off there). Meanwhile every sync
answer to that gateway lists it in DesiredState.scenarios (oldest first, at most
MAX_SCENARIOS, only those younger than PENDING_FOR); the gateway plays each id once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from cloud.db.pool import Conn
from cloud.exceptions import ConflictError, NotFoundError
from cloud.operations import audit
from shared.schemas import MAX_SCENARIOS, ScenarioDone, ScenarioKind, ScenarioRequest

log = logging.getLogger(__name__)

# A request the gateway has not picked up by then is not sent any more: a scenario played
# an hour late would only confuse whoever asked for it.
PENDING_FOR = timedelta(minutes=10)


class SimulationOffError(ConflictError):
    """Scenario requests on a cloud whose fleet is not simulated (HTTP 409)."""

    def __init__(self) -> None:
        super().__init__(
            "simulation is off on this cloud: scenarios can only be requested where the "
            "devices are simulated (SMAINT_CLOUD_SIMULATION__ENABLED=true, as in `smaint demo`)")


class Scenario(BaseModel):
    """One SIMULATED scenario request and what became of it."""

    id: str = Field(description="request id (32 hex digits), as the device sees it")
    device: str
    gateway: str = Field(description="the gateway that owns the device")
    kind: ScenarioKind
    seconds: float
    requested_by: str
    requested_at: datetime
    state: Literal["queued", "published", "refused", "expired"] = Field(
        description="queued: waiting for the gateway's next sync; expired: not picked up in "
                    "time, never sent")
    done_at: datetime | None = None
    reason: str = ""
    simulated: Literal[True] = Field(default=True, description="always: this is a simulation")


_COLUMNS = ("replace(request_id::text, '-', ''), device_id, gateway_id, kind, seconds, "
            "requested_by, requested_at, outcome, done_at, reason, "
            "done_at IS NULL AND requested_at <= now() - %(ttl)s")


def _scenario(row: Sequence[object]) -> Scenario:
    rid, device, gateway, kind, seconds, by, at, outcome, done_at, reason, expired = row
    state = outcome or ("expired" if expired else "queued")
    return Scenario.model_validate({
        "id": rid, "device": device, "gateway": gateway, "kind": kind, "seconds": seconds,
        "requested_by": by, "requested_at": at, "state": state, "done_at": done_at,
        "reason": reason})


def request_scenario(conn: Conn, actor: str, device: str, kind: ScenarioKind,
                     seconds: float) -> Scenario:
    """Queue a scenario for ``device``'s gateway and audit it; NotFoundError if unknown."""
    with conn.transaction():
        owner = conn.execute("SELECT gateway_id FROM devices WHERE device_id = %s",
                             (device,)).fetchone()
        if owner is None:
            raise NotFoundError(f"no device {device!r} has synced readings to this cloud")
        row = conn.execute(
            "INSERT INTO scenario_requests (gateway_id, device_id, kind, seconds, requested_by)"
            " VALUES (%(gw)s, %(dev)s, %(kind)s, %(s)s, %(by)s) RETURNING " + _COLUMNS,
            {"gw": owner[0], "dev": device, "kind": kind, "s": seconds, "by": actor,
             "ttl": PENDING_FOR}).fetchone()
        assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
        scenario = _scenario(row)
        audit.record(conn, actor, "scenario.request", "scenario", scenario.id, device=device,
                     before=None, after={"kind": kind, "seconds": seconds,
                                         "gateway": scenario.gateway, "simulated": True})
    log.warning("SIMULATED scenario %s for %gs requested by %s for device=%s via gateway %s "
                "(request %s)", kind, seconds, actor, device, scenario.gateway, scenario.id)
    return scenario


def recent(conn: Conn, device: str, limit: int = 20) -> list[Scenario]:
    """The newest requests for ``device``, newest first."""
    return [_scenario(r) for r in conn.execute(
        "SELECT " + _COLUMNS + " FROM scenario_requests WHERE device_id = %(dev)s "
        "ORDER BY requested_at DESC LIMIT %(n)s",
        {"dev": device, "n": limit, "ttl": PENDING_FOR})]


def pending(conn: Conn, gateway_id: str) -> list[ScenarioRequest]:
    """What the gateway's next sync answer carries (DesiredState.scenarios)."""
    return [ScenarioRequest(v=1, id=rid, device=dev, kind=kind, seconds=s, requested_by=by)
            for rid, dev, kind, s, by in conn.execute(
                "SELECT replace(request_id::text, '-', ''), device_id, kind, seconds,"
                " requested_by FROM scenario_requests WHERE gateway_id = %s AND done_at IS NULL"
                " AND requested_at > now() - %s ORDER BY requested_at LIMIT %s",
                (gateway_id, PENDING_FOR, MAX_SCENARIOS))]


def record_done(conn: Conn, gateway_id: str, done: Sequence[ScenarioDone]) -> None:
    """The gateway's reports (inside the batch's transaction); a repeated report changes nothing."""
    for d in done:
        conn.execute(
            "UPDATE scenario_requests SET done_at = timestamptz 'epoch' + %s * interval '1 ms',"
            " outcome = %s, reason = %s WHERE request_id = %s::uuid AND gateway_id = %s"
            " AND done_at IS NULL", (d.at_ms, d.outcome, d.reason, d.id, gateway_id))
