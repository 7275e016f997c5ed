"""Read a device's provisioning file (the firmware's JSON, written by ``smaint provision``).

The simulator logs each device in the way a real node does: account and CA certificate from
``<dir>/<device id>.json`` (firmware/esp32/src/hw/provisioning.cpp reads the same fields).
"""

from __future__ import annotations

import json
from pathlib import Path

from simulator.device import BrokerLogin
from simulator.exceptions import SimulatorError


def read_login(directory: Path, device: str) -> BrokerLogin:
    """The broker login in ``directory/<device>.json``; SimulatorError if missing or malformed."""
    path = directory / f"{device}.json"
    try:
        data = json.loads(path.read_text())
        username, password = str(data["mqtt_username"]), str(data["mqtt_password"])
        ca_pem = str(data.get("ca_pem", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimulatorError(
            f"no usable provisioning for {device} at {path} ({exc}); create it on the gateway "
            f"with: smaint provision device {device} --out {path}") from exc
    ca_file: str | None = None
    if ca_pem:
        # paho reads the CA from a file: keep the certificate beside the provisioning file.
        ca_path = directory / f"{device}.ca.pem"
        ca_path.write_text(ca_pem)
        ca_file = str(ca_path)
    return BrokerLogin(username, password, ca_file)
