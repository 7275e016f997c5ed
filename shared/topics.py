"""The MQTT topic tree: one subtree per device so Mosquitto ACLs can pin a device to its own id.

    smaint/v1/dev/<device>/telemetry   device -> gateway, QoS 1
    smaint/v1/dev/<device>/status      device -> gateway, QoS 1, retained, also the last will
    smaint/v1/dev/<device>/config      gateway -> device, QoS 1, retained
    smaint/v1/dev/<device>/simulate    gateway -> simulated device only, QoS 1 (SIMULATION)
    smaint/v1/gw/<gateway>/alerts      gateway -> local consumers, QoS 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.exceptions import TopicError

ROOT = "smaint/v1"
ID_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
_ID = re.compile(ID_PATTERN)
_DEVICE_TOPIC = re.compile(rf"{ROOT}/dev/({ID_PATTERN})/(telemetry|status)")

DeviceChannel = Literal["telemetry", "status"]



@dataclass(frozen=True, slots=True)
class Channel:
    """One branch of the tree: its address, who publishes what on it, and how."""

    name: str
    address: str  # the id appears as an {parameter} template field
    parameter: Literal["device", "gateway"]
    sender: str
    receivers: tuple[str, ...]
    payload: str  # the model's name in shared.schemas
    qos: int
    retain: bool
    description: str


# The tree as data: docs/contract/asyncapi.json and the firmware check are built from it.
CHANNELS: tuple[Channel, ...] = (
    Channel("telemetry", f"{ROOT}/dev/{{device}}/telemetry", "device", "device", ("gateway",),
            "Telemetry", qos=1, retain=False, description="one reading per message"),
    Channel("status", f"{ROOT}/dev/{{device}}/status", "device", "device", ("gateway",),
            "DeviceStatus", qos=1, retain=True,
            description="online on connect; offline is also the device's MQTT last will"),
    Channel("config", f"{ROOT}/dev/{{device}}/config", "device", "gateway", ("device",),
            "DeviceConfig", qos=1, retain=True,
            description="desired configuration; an empty retained message clears it"),
    # Only the simulator subscribes: real firmware never does, so a request reaches no plant.
    Channel("simulate", f"{ROOT}/dev/{{device}}/simulate", "device", "gateway", ("simulator",),
            "ScenarioRequest", qos=1, retain=False,
            description="SIMULATION ONLY: inject a scenario (spike, drift, stuck, noise) into a "
                        "simulated device; real firmware never subscribes"),
    Channel("alerts", f"{ROOT}/gw/{{gateway}}/alerts", "gateway", "gateway", ("consumer",),
            "Alert", qos=1, retain=False,
            description="every new version of an alert, for local consumers"),
)

TELEMETRY_SUBSCRIPTION = f"{ROOT}/dev/+/telemetry"
STATUS_SUBSCRIPTION = f"{ROOT}/dev/+/status"


def _checked(kind: str, ident: str) -> str:
    if not _ID.fullmatch(ident):
        raise ValueError(f"{kind} id {ident!r} must match {ID_PATTERN}")
    return ident


def telemetry(device: str) -> str:
    """Topic a device publishes readings on."""
    return f"{ROOT}/dev/{_checked('device', device)}/telemetry"


def status(device: str) -> str:
    """Topic a device publishes its online/offline status (and last will) on."""
    return f"{ROOT}/dev/{_checked('device', device)}/status"


def config(device: str) -> str:
    """Retained topic the gateway publishes a device's desired configuration on."""
    return f"{ROOT}/dev/{_checked('device', device)}/config"


def simulate(device: str) -> str:
    """Topic the gateway publishes SIMULATED scenario requests for a simulated device on."""
    return f"{ROOT}/dev/{_checked('device', device)}/simulate"


def alerts(gateway: str) -> str:
    """Topic a gateway publishes alert changes on for local consumers."""
    return f"{ROOT}/gw/{_checked('gateway', gateway)}/alerts"


def parse_device_topic(topic: str) -> tuple[str, DeviceChannel]:
    """Split a device topic into (device id, channel); TopicError if it is not one."""
    m = _DEVICE_TOPIC.fullmatch(topic)
    if m is None:
        raise TopicError(f"topic {topic!r} is not {ROOT}/dev/<device>/(telemetry|status)")
    channel: DeviceChannel = "telemetry" if m.group(2) == "telemetry" else "status"
    return m.group(1), channel
