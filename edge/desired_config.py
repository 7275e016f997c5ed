"""Apply the cloud's desired config (carried by every sync answer) at run time.

Each known setting (shared.schemas.GATEWAY_CONFIG_KEYS) has a setter here that changes the
running part in place: the statistical scorer's threshold, the alert tracker's open/resolve
counts, the sync interval, the devices' sample interval (published as each known device's
retained config by :class:`DeviceConfigPublisher`). A newer ``config_version`` is checked
against the shared list again; a value that fails the check or its setter is refused with the
reason and the others are still applied. A setting the cloud no longer names goes back to the
local settings' value. What was applied is stored (table applied_config) and applied again
when the gateway starts, and reported with every upload (GatewayState.config_version / config
/ config_refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from edge.mqtt_session import keep_connected
from edge.store import Store, now_ms
from shared import topics
from shared.codec import encode
from shared.schemas import ConfigValue, DesiredState, DeviceConfig, check_gateway_config

log = logging.getLogger(__name__)

Setter = Callable[[ConfigValue], None]

_REASON_MAX = 500  # GatewayState.config_refused values are bounded


@dataclass(frozen=True, slots=True)
class Knob:
    """One setting the cloud may change: its local (settings) value and how to change it."""

    default: ConfigValue
    setter: Setter


@dataclass(slots=True)
class AppliedConfig:
    """The desired config as applied: its version, the values applied, the values refused."""

    version: int | None = None
    applied: dict[str, ConfigValue] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


class ConfigApplier:
    """Applies desired config versions to the running gateway and remembers what it applied."""

    def __init__(self, store: Store, knobs: Mapping[str, Knob]) -> None:
        self.store = store
        self.knobs = dict(knobs)
        self.current = AppliedConfig()

    def load(self) -> AppliedConfig:
        """Apply again what was applied before a restart (nothing if no config came yet)."""
        row = self.store.conn.execute(
            "SELECT config_version, applied, refused FROM applied_config WHERE id = 1"
        ).fetchone()
        if row is not None:
            applied, refused = self._apply(json.loads(row[1]))
            self.current = AppliedConfig(row[0], applied, {**json.loads(row[2]), **refused})
            log.info("desired config %d applied again after start: %s", row[0], applied)
        return self.current

    def on_desired(self, desired: DesiredState) -> None:
        """Apply the desired config if its version is newer than the one applied."""
        if self.current.version is not None and desired.config_version <= self.current.version:
            return
        applied, refused = self._apply(desired.config)
        self.current = AppliedConfig(desired.config_version, applied, refused)
        with self.store.transaction():
            self.store.conn.execute(
                "INSERT INTO applied_config (id, config_version, applied, refused, applied_ms)"
                " VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " config_version = excluded.config_version, applied = excluded.applied,"
                " refused = excluded.refused, applied_ms = excluded.applied_ms",
                (desired.config_version, json.dumps(applied), json.dumps(refused), now_ms()))
        if refused:
            log.warning("desired config %d: refused %s; applied %s", desired.config_version,
                        refused, applied)
        else:
            log.info("desired config %d applied: %s", desired.config_version, applied)

    def _apply(self, config: Mapping[str, object]) -> tuple[dict[str, ConfigValue],
                                                            dict[str, str]]:
        good, refused = check_gateway_config(dict(config))
        applied: dict[str, ConfigValue] = {}
        for name, knob in self.knobs.items():
            value = good.get(name, knob.default)
            try:
                knob.setter(value)
            except ValueError as exc:
                # This part cannot run the value: it keeps what it had, the others go on.
                refused[name] = f"not applied: {exc}"
                continue
            if name in good:
                applied[name] = value
        for name in good.keys() - self.knobs.keys():
            refused[name] = "this gateway version cannot apply it"
        return applied, {k[:200]: v[:_REASON_MAX] for k, v in refused.items()}


class DeviceConfigPublisher:
    """Publishes the desired sample interval as every known device's retained config.

    ``smaint/v1/dev/<device>/config`` gets ``DeviceConfig(v=1, interval_ms=...)``, QoS 1,
    retained; when the setting is removed, an empty retained message (the firmware's "profile
    defaults"). Devices that appear later get it within ``refresh_s`` (the known devices are
    looked up again then). Its own MQTT connection (client id ``<gateway>-config``).
    """

    def __init__(self, host: str, port: int, gateway_id: str,
                 known: Callable[[], Iterable[str]], *, keepalive_s: int = 30,
                 refresh_s: float = 10.0, login: Mapping[str, Any] | None = None) -> None:
        self.login = dict(login or {})
        self.host = host
        self.port = port
        self.gateway_id = gateway_id
        self.keepalive_s = keepalive_s
        self.refresh_s = refresh_s
        self._known = known
        self._payload: bytes | None = None  # None: never set here, device configs left alone
        self._sent: dict[str, bytes] = {}  # device -> payload the broker acknowledged
        self._wake = asyncio.Event()
        self.published = 0

    def set_interval(self, value: ConfigValue) -> None:
        """Setter of ``devices.interval_ms``; 0 (the local default) means profile defaults."""
        interval = int(value)
        if interval == 0:
            if self._payload is None:
                return  # nothing was set by this gateway: other configs stay as they are
            self._payload = b""
        else:
            # Validated like the wire message: a bad value is refused by the applier.
            try:
                self._payload = encode(DeviceConfig(v=1, interval_ms=interval))
            except ValueError as exc:
                raise ValueError(f"interval_ms {interval}: {exc}") from exc
        self._wake.set()

    def pending(self) -> list[str]:
        """Known devices whose retained config is not yet the desired one."""
        payload = self._payload
        if payload is None:
            return []
        return [d for d in self._known() if self._sent.get(d) != payload]

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and keep device configs as desired until ``stop``; reconnects with back-off."""
        await keep_connected(
            lambda: self._session(stop), stop, retry_on=(aiomqtt.MqttError,),
            name=f"device config publisher {self.host}:{self.port}")

    async def _session(self, stop: asyncio.Event) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier=f"{self.gateway_id}-config",
                                  keepalive=self.keepalive_s, **self.login) as client:
            while not stop.is_set():
                self._wake.clear()
                payload = self._payload
                for device in self.pending():
                    assert payload is not None  # noqa: S101 - pending() is empty otherwise
                    # Returns once the broker's PUBACK is in: only then is it counted as sent.
                    await client.publish(topics.config(device), payload, qos=1, retain=True)
                    self._sent[device] = payload
                    self.published += 1
                    log.info("device=%s config %s", device,
                             payload.decode() if payload else "cleared (profile defaults)")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._wake, stop), timeout=self.refresh_s)


async def _first(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
