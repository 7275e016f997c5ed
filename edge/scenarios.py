"""SIMULATION ONLY: scenario requests for simulated devices, each published once over MQTT.

A site that runs simulated devices (``SMAINT_GATEWAY_SIMULATION__ENABLED=true``, the demo) can
ask one of them to play a spike, drift, stuck sensor or noise burst: from the panel (an action
of a signed-in user) or from the cloud console (DesiredState.scenarios in a sync answer). Each
request is stored here first, then published as a ScenarioRequest on
``smaint/v1/dev/<device>/simulate`` at QoS 1, not retained; only the simulator subscribes
there, real firmware never does. A request id is stored once, so a sync answer seen again
(a retried upload, a restart) never plays it twice; a cloud request's outcome goes up once in
the next batch (edge/outbox.py, SyncBatch.scenarios_done). With simulation off the panel offers
nothing and cloud requests are refused (and reported so), never published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aiomqtt

from edge.desired_config import _first
from edge.exceptions import GatewayError
from edge.mqtt_session import keep_connected
from edge.store import Store, now_ms
from shared import topics
from shared.codec import encode
from shared.schemas import DesiredState, ScenarioRequest

log = logging.getLogger(__name__)

PANEL = "panel"  # requested_by of a request made on the gateway's own panel


class SimulationOffError(GatewayError):
    """A scenario was requested on a gateway whose site runs no simulated devices."""

    def __init__(self, gateway_id: str) -> None:
        super().__init__(
            f"gateway {gateway_id} does not run simulated devices: scenarios are refused "
            "(set SMAINT_GATEWAY_SIMULATION__ENABLED=true only where the devices are simulated)")


@dataclass(frozen=True, slots=True)
class ScenarioRow:
    """One stored request and what became of it, for the panel."""

    request: ScenarioRequest
    source: str
    requested_ms: int
    outcome: str | None
    reason: str
    done_ms: int | None


class ScenarioDesk:
    """Stores scenario requests and publishes each once (its own MQTT connection)."""

    def __init__(self, store: Store, gateway_id: str, *, enabled: bool, host: str, port: int,
                 keepalive_s: int = 30, login: dict[str, Any] | None = None) -> None:
        self.store = store
        self.login = login or {}  # the gateway's broker account (edge.mqtt_session)
        self.gateway_id = gateway_id
        self.enabled = enabled
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self._wake = asyncio.Event()

    def request(self, device: str, kind: str, seconds: float,
                requested_by: str = PANEL) -> ScenarioRequest:
        """Queue a scenario asked for on this gateway; SimulationOffError unless enabled.

        ValueError (pydantic's) if the device id, kind or duration is not a valid request.
        """
        if not self.enabled:
            raise SimulationOffError(self.gateway_id)
        req = ScenarioRequest.model_validate({
            "v": 1, "id": uuid.uuid4().hex, "device": device, "kind": kind,
            "seconds": float(seconds), "requested_by": requested_by})
        with self.store.transaction():
            self._insert(req, "panel", None, "")
        log.warning("SIMULATED scenario %s for %gs requested by %s for device=%s (request %s)",
                    req.kind, req.seconds, req.requested_by, req.device, req.id)
        self._wake.set()
        return req

    def on_desired(self, desired: DesiredState) -> None:
        """Store the cloud's scenario requests not seen before (each id once, ever)."""
        if not desired.scenarios:
            return
        refused = "" if self.enabled else (
            f"simulation is off on gateway {self.gateway_id} "
            "(SMAINT_GATEWAY_SIMULATION__ENABLED is false)")
        with self.store.transaction():
            new = [req for req in desired.scenarios if self._insert(
                req, "cloud", "refused" if refused else None, refused)]
            if refused:
                self.store.bump("scenarios_refused", len(new))
        for req in new:
            if refused:
                log.warning("SIMULATED scenario %s for device=%s (request %s by %s) refused: %s",
                            req.kind, req.device, req.id, req.requested_by, refused)
            else:
                log.warning("SIMULATED scenario %s for %gs requested by %s from the cloud for "
                            "device=%s (request %s)", req.kind, req.seconds, req.requested_by,
                            req.device, req.id)
        if new:
            self._wake.set()

    def _insert(self, req: ScenarioRequest, source: str, outcome: str | None,
                reason: str) -> bool:
        now = now_ms()
        cur = self.store.conn.execute(
            "INSERT OR IGNORE INTO scenarios (id, device, kind, seconds, requested_by, source,"
            " requested_ms, outcome, reason, done_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (req.id, req.device, req.kind, req.seconds, req.requested_by, source, now, outcome,
             reason, now if outcome else None))
        return cur.rowcount == 1

    def waiting(self) -> list[ScenarioRequest]:
        """Requests not yet published, oldest first."""
        return [_request(row) for row in self.store.conn.execute(
            "SELECT id, device, kind, seconds, requested_by FROM scenarios "
            "WHERE outcome IS NULL ORDER BY requested_ms, id")]

    def recent(self, device: str, limit: int = 10) -> list[ScenarioRow]:
        """The newest requests for ``device``, newest first."""
        return [ScenarioRow(_request(row[:5]), *row[5:]) for row in self.store.conn.execute(
            "SELECT id, device, kind, seconds, requested_by, source, requested_ms, outcome,"
            " reason, done_ms FROM scenarios WHERE device = ? "
            "ORDER BY requested_ms DESC, id LIMIT ?", (device, limit))]

    def _published(self, req: ScenarioRequest) -> None:
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE scenarios SET outcome = 'published', done_ms = ? WHERE id = ?",
                (now_ms(), req.id))
            self.store.bump("scenarios_published")
        log.warning("SIMULATED scenario %s for %gs published to device=%s (request %s by %s)",
                    req.kind, req.seconds, req.device, req.id, req.requested_by)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish waiting requests until ``stop``; reconnects with back-off."""
        await keep_connected(
            lambda: self._session(stop), stop, retry_on=(aiomqtt.MqttError,),
            name=f"scenario publisher {self.host}:{self.port}")

    async def _session(self, stop: asyncio.Event) -> None:
        async with aiomqtt.Client(self.host, self.port,
                                  identifier=f"{self.gateway_id}-simulate",
                                  keepalive=self.keepalive_s, **self.login) as client:
            while not stop.is_set():
                self._wake.clear()
                for req in self.waiting():
                    # Returns once the broker's PUBACK is in; only then is it marked published.
                    await client.publish(topics.simulate(req.device), encode(req), qos=1,
                                         retain=False)
                    self._published(req)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._wake, stop), timeout=5.0)


def _request(row: tuple[str, str, str, float, str]) -> ScenarioRequest:
    return ScenarioRequest(v=1, id=row[0], device=row[1], kind=row[2],  # type: ignore[arg-type]
                           seconds=row[3], requested_by=row[4])

