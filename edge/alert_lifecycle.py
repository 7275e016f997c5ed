"""Alert lifecycle per device: open after k anomalous readings in a row, resolve after m normal.

The detector is built to fire early and once per episode (shared.anomaly: novelty against
each device's own history), so by default one anomalous reading opens an alert and 20 normal
readings in a row resolve it and re-arm the device: the resolve side is the hysteresis that
keeps a flapping signal from opening an alert on every sample (an alert storm). An operator
acknowledges an open alert locally (the panel or the gateway's HTTP API: who, when, comment go
up with the alert as its ``ack``) or in the cloud (edge.alert_decisions applies it here);
every version of an alert is stored, queued for sync and published on the gateway's local
MQTT alert topic.

A resolve decided in the cloud ends the episode here too (``AlertTracker.adopt``): the
tracker stops tracking the alert, so it is neither escalated nor resolved again, and the
device is re-armed only as after a resolve of its own, by ``resolve_after`` normal readings in
a row; until then it opens no new alert for the same episode.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt

from edge.exceptions import GatewayError
from edge.mqtt_session import keep_connected
from edge.score import Score
from edge.store import Store
from shared import topics
from shared.schemas import MAX_ACTOR, MAX_ALERT_COMMENT, Alert, AlertAck, Severity

log = logging.getLogger(__name__)

SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
# An open alert is escalated (a new version) when its severity rises or its score grows by
# this factor over the peak it reports.
ESCALATE_BY = 1.25


def severity_for(score: float, threshold: float) -> Severity:
    """Severity by how far the score overshoots the threshold: <2x low, <4x medium, else high."""
    if score < 2 * threshold:
        return "low"
    if score < 4 * threshold:
        return "medium"
    return "high"


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert's new version and what happened to it."""

    kind: Literal["opened", "escalated", "resolved"]
    alert: Alert


@dataclass
class _DeviceState:
    anomalous_run: int = 0
    normal_run: int = 0
    open: Alert | None = None
    held: bool = False  # its alert was resolved in the cloud; re-armed by a normal run


class AlertTracker:
    """Turns a stream of scores into alert openings, escalations and resolutions."""

    def __init__(self, open_after: int = 1, resolve_after: int = 20,
                 threshold: float = 1.0) -> None:
        self.open_after = open_after
        self.resolve_after = resolve_after
        self.threshold = threshold
        self._devices: dict[str, _DeviceState] = {}

    def load(self, open_alerts: Iterable[Alert]) -> None:
        """Resume alerts that were open when the gateway stopped, so none is opened twice."""
        for alert in open_alerts:
            self._state(alert.device).open = alert

    @property
    def open_count(self) -> int:
        """Alerts open right now."""
        return sum(1 for s in self._devices.values() if s.open is not None)

    def _state(self, device: str) -> _DeviceState:
        st = self._devices.get(device)
        if st is None:
            st = self._devices[device] = _DeviceState()
        return st

    def observe(self, device: str, ts_ms: int, score: Score, now_ms: int, *,
                simulated: bool = False) -> AlertChange | None:
        """Feed one scored reading; returns the change if an alert opened, escalated or resolved.

        ``simulated``: the reading carries an injected SIMULATED fault; an alert it opens says
        so (its later versions keep the mark).
        """
        if score.value is None:
            return None  # warming up: neither evidence for nor against a fault
        st = self._state(device)
        if score.anomalous:
            st.anomalous_run += 1
            st.normal_run = 0
            return self._anomalous(st, device, ts_ms=ts_ms, value=score.value, score=score,
                                   now_ms=now_ms, simulated=simulated)
        st.normal_run += 1
        st.anomalous_run = 0
        if st.held and st.normal_run >= self.resolve_after:
            st.held = False  # the episode the cloud resolved is over: re-armed
        if st.open is not None and st.normal_run >= self.resolve_after:
            resolved = st.open.model_copy(update={
                "state": "resolved", "resolved_ms": ts_ms,
                "updated_ms": max(now_ms, st.open.updated_ms + 1),
            })
            st.open = None
            return AlertChange("resolved", resolved)
        return None

    def _anomalous(self, st: _DeviceState, device: str, *, ts_ms: int, value: float,
                   score: Score, now_ms: int, simulated: bool) -> AlertChange | None:
        if st.open is None:
            if st.held or st.anomalous_run < self.open_after:
                return None
            st.open = Alert(
                alert_id=str(uuid.uuid4()), device=device, opened_ms=ts_ms,
                severity=severity_for(value, score.threshold or self.threshold), state="open",
                score=value,
                scorer=score.scorer, model_version=score.model_version,
                explanation=score.explanation(), updated_ms=now_ms, simulated=simulated,
            )
            return AlertChange("opened", st.open)
        severity = severity_for(value, score.threshold or self.threshold)
        if value < st.open.score * ESCALATE_BY and (
                SEVERITY_RANK[severity] <= SEVERITY_RANK[st.open.severity]):
            # A degrading machine raises its score on almost every reading: a new alert
            # version (stored, published, synced) for each would be a storm of its own.
            return None
        # Escalate: the alert reports its peak, and what drove the peak.
        st.open = st.open.model_copy(update={
            "score": value, "severity": severity,
            "explanation": score.explanation(),
            "updated_ms": max(now_ms, st.open.updated_ms + 1),
        })
        return AlertChange("escalated", st.open)

    def find(self, alert_id: str) -> Alert | None:
        """The open (or acknowledged) alert with this id, if it is still being tracked."""
        for st in self._devices.values():
            if st.open is not None and st.open.alert_id == alert_id:
                return st.open
        return None

    def acknowledge(self, alert: Alert, now_ms: int, ack: AlertAck | None = None) -> Alert:
        """The acknowledged version of an open alert (with ``ack`` if made here); tracked."""
        update: dict[str, object] = {
            "state": "acknowledged", "updated_ms": max(now_ms, alert.updated_ms + 1)}
        if ack is not None:
            update["ack"] = ack
        acked = alert.model_copy(update=update)
        self.adopt(acked)
        return acked

    def adopt(self, version: Alert) -> None:
        """Track a version made outside the tracker (an acknowledgement, a cloud decision).

        Escalation and resolution build on an acknowledged version, so they keep its state
        and ack; a resolved one ends tracking and holds the device until it is re-armed.
        """
        st = self._devices.get(version.device)
        if st is None or st.open is None or st.open.alert_id != version.alert_id:
            return
        if version.state == "resolved":
            st.open = None
            st.held = True
            st.anomalous_run = st.normal_run = 0
        else:
            st.open = version


class AlertNotFoundError(GatewayError):
    """No alert with this id on this gateway."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no alert {alert_id!r}")
        self.alert_id = alert_id


class AlertResolvedError(GatewayError):
    """The alert is resolved already: there is nothing left to acknowledge."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id!r} is resolved")
        self.alert_id = alert_id


def acknowledge_alert(tracker: AlertTracker, store: Store, alert_id: str, now_ms: int, *,
                      by: str = "api", comment: str = "") -> tuple[Alert, bool]:
    """Acknowledge an alert, store the new version (queued for sync): (alert, whether changed).

    ``by`` and ``comment`` go up with it (Alert.ack), cut to the wire's lengths. Acknowledging
    twice is not an error and changes nothing; a resolved alert cannot be acknowledged any
    more (AlertResolvedError), an unknown one raises AlertNotFoundError.
    """
    current = tracker.find(alert_id) or store.alert(alert_id)
    if current is None:
        raise AlertNotFoundError(alert_id)
    if current.state == "resolved":
        raise AlertResolvedError(alert_id)
    if current.state == "acknowledged":
        return current, False
    ack = AlertAck(by=_clean(by, MAX_ACTOR) or "api", at_ms=now_ms,
                   comment=_clean(comment, MAX_ALERT_COMMENT))
    acked = tracker.acknowledge(current, now_ms, ack)
    with store.transaction():
        # dirty = 1: the outbox sends this version, and updated_ms wins the cloud's upsert.
        store.upsert_alerts([acked])
        store.bump("alerts_acknowledged")
    log.info("alert=%s acknowledged", acked.alert_id, extra={"device": acked.device})
    return acked, True


def _clean(text: str, most: int) -> str:
    """Free text as the wire takes it: no NUL, trimmed, at most ``most`` characters."""
    return text.replace("\x00", "").strip()[:most]


class AlertPublisher:
    """Publishes alert versions on ``smaint/v1/gw/<gateway>/alerts`` (QoS 1, JSON of Alert).

    Its own MQTT connection (client id ``<gateway>-alerts``), so a slow consumer or a
    reconnect never holds up ingest. Versions wait in a bounded queue while the broker is
    away; past ``max_pending`` the oldest are dropped, counted and logged (every version is
    in SQLite and goes to the cloud regardless).
    """

    def __init__(self, host: str, port: int, gateway_id: str, *, keepalive_s: int = 30,
                 max_pending: int = 10_000, login: Mapping[str, Any] | None = None) -> None:
        self.login = dict(login or {})
        self.host = host
        self.port = port
        self.gateway_id = gateway_id
        self.topic = topics.alerts(gateway_id)
        self.keepalive_s = keepalive_s
        self._pending: deque[Alert] = deque()
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    def submit(self, alerts: Iterable[Alert]) -> None:
        """Queue alert versions for publishing; never blocks (call from the event loop)."""
        for alert in alerts:
            if len(self._pending) >= self._max_pending:
                old = self._pending.popleft()
                self.dropped += 1
                log.warning("alert publish queue full; dropped version of alert=%s",
                            old.alert_id)
            self._pending.append(alert)
        if self._pending:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and publish queued versions until ``stop``; reconnects with back-off."""
        await keep_connected(
            lambda: self._session(stop), stop, retry_on=(aiomqtt.MqttError,),
            name=f"alert publisher {self.host}:{self.port}")

    async def _session(self, stop: asyncio.Event) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier=f"{self.gateway_id}-alerts",
                                  keepalive=self.keepalive_s, **self.login) as client:
            await self._publish_loop(client, stop)

    async def _publish_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._pending:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopping = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopping.cancel()
                continue
            alert = self._pending[0]
            # Returns once the broker's PUBACK is in; only then is the version off the queue,
            # so one lost with the connection is published again after the reconnect.
            await client.publish(self.topic, alert.model_dump_json(), qos=1)
            if self._pending and self._pending[0] is alert:  # not shed meanwhile by submit()
                self._pending.popleft()
            self.published += 1
