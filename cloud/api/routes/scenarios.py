"""SIMULATION ONLY: ask a simulated device (through its gateway) to play a scenario.

Allowed only when the cloud's fleet is simulated (``SMAINT_CLOUD_SIMULATION__ENABLED``);
otherwise 409. The request travels down in the gateway's next sync answer
(DesiredState.scenarios), is published once on ``smaint/v1/dev/<device>/simulate`` and is
reported back done in a later batch.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from cloud.api.deps import Operator, Pool, State, Viewer
from cloud.api.routes.alerts import DENIED
from cloud.operations import scenarios
from cloud.operations.scenarios import Scenario, SimulationOffError
from shared.schemas import MAX_SCENARIO_SECONDS, ScenarioKind
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["simulation"])

DeviceId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", description="device id")]


class ScenarioCreate(BaseModel):
    """Which scenario to play, and for how long."""

    kind: ScenarioKind = Field(description="spike, drift, stuck sensor or noise burst")
    seconds: float = Field(default=10.0, gt=0, le=MAX_SCENARIO_SECONDS, allow_inf_nan=False,
                           description="how long the scenario lasts")


class DeviceScenarios(BaseModel):
    """Whether scenarios may be requested here, and the device's latest requests."""

    simulation: bool = Field(description="false: this cloud's fleet is real; requests get 409")
    scenarios: list[Scenario] = Field(description="newest first")


@router.get("/devices/{device}/scenarios", response_model=DeviceScenarios,
            summary="SIMULATED scenarios of a device", responses=DENIED)
def get_scenarios(pool: Pool, state: State, _: Viewer, device: DeviceId) -> DeviceScenarios:
    """The device's latest scenario requests and whether new ones are allowed."""
    with pool.connection() as conn:
        return DeviceScenarios(simulation=state.settings.simulation.enabled,
                               scenarios=scenarios.recent(conn, device))


@router.post(
    "/devices/{device}/scenarios", response_model=Scenario, status_code=202,
    summary="Ask a simulated device to play a SIMULATED scenario",
    responses={**DENIED, 404: {"description": "no such device"},
               409: {"description": "simulation is off on this cloud"}},
)
def post_scenario(pool: Pool, state: State, who: Operator, device: DeviceId,
                  body: ScenarioCreate) -> Scenario:
    """Queue the scenario for the device's gateway (operator or admin); audited."""
    if not state.settings.simulation.enabled:
        raise SimulationOffError
    with pool.connection() as conn:
        return scenarios.request_scenario(conn, who.name, device, body.kind, body.seconds)
