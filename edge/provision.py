"""Local-first provisioning: broker accounts, the site CA, and each device's provisioning file.

Everything happens on the gateway, no cloud round-trip: ``smaint provision`` (smaint/provision.py)
and the demo (devstack/demo.py) call the same :class:`Provisioner`.

* ``setup_broker`` makes the site CA (first start), the broker's TLS certificate, the gateway's
  own account (password saved for the gateway to read) and the ACL files.
* ``provision_device`` adds a device account, reloads the broker (SIGHUP: nobody is dropped),
  records the device, and returns the provisioning JSON the firmware reads
  (firmware/esp32/src/hw/provisioning.cpp: broker URI, credentials, CA certificate).
* ``revoke`` removes the account and reloads: the broker disconnects the device and refuses it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.broker_accounts import PasswordFile, new_password, reload_broker
from edge.broker_config import (
    DEVICE_ACL,
    DEVICES_ACL,
    DEVICES_PASSWD,
    GATEWAY_ACL,
    GATEWAY_PASSWD,
    gateway_acl,
)
from edge.settings import ConfigFileError, GatewaySettings
from edge.site_ca import SiteCa, ensure_site_ca, issue_server_cert
from edge.store import Store
from shared import topics


class ProvisioningError(ValueError):
    """A device cannot be provisioned or revoked as asked."""


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What a device needs to reach the broker: address, account, the CA to trust."""

    device: str
    host: str
    port: int
    username: str
    password: str
    ca_pem: str

    def provisioning(self, sensor_type: str = "motor", wifi_ssid: str = "",
                     wifi_password: str = "") -> dict[str, Any]:
        """The firmware's provisioning JSON (firmware/esp32/data/provision.example.json)."""
        return {
            "device": self.device, "type": sensor_type,
            "wifi_ssid": wifi_ssid, "wifi_password": wifi_password,
            "mqtt_uri": f"mqtts://{self.host}:{self.port}",
            "mqtt_username": self.username, "mqtt_password": self.password,
            "ca_pem": self.ca_pem,
        }


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read (passwords, provisioning files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Provisioner:
    """The broker's accounts and the gateway's record of provisioned devices."""

    def __init__(self, settings: GatewaySettings, *, reload: bool = True) -> None:
        self.settings = settings
        self.broker_dir = settings.broker_dir
        self.gateway_accounts = PasswordFile(self.broker_dir / GATEWAY_PASSWD)
        self.device_accounts = PasswordFile(self.broker_dir / DEVICES_PASSWD)
        # False while the broker is not running yet (it reads the files when it starts).
        self.reload = reload

    @property
    def device_host(self) -> str:
        """The address written into provisioning files and the broker certificate."""
        return self.settings.broker.device_host or socket.gethostname()

    @property
    def gateway_username(self) -> str:
        """The gateway's broker account (mqtt.username, or the gateway id)."""
        return self.settings.mqtt.username or self.settings.gateway_id

    @property
    def gateway_password_path(self) -> Path:
        """Where the gateway's broker password is saved (mqtt.password_file or the default)."""
        if self.settings.mqtt.password_file:
            return Path(self.settings.mqtt.password_file)
        return self.broker_dir.parent / "mqtt-password"

    def site_ca(self) -> SiteCa:
        """The site CA, created at first use."""
        return ensure_site_ca(self.settings.ca_dir, self.settings.gateway_id)

    def setup_broker(self) -> str:
        """Make the CA, broker certificate, ACLs and the gateway's account; its password.

        Idempotent: an existing gateway password (file) is kept, the certificate re-issued.
        """
        ca = self.site_ca()
        names = [self.device_host, "localhost", "127.0.0.1", *self.settings.broker.cert_names]
        issue_server_cert(ca, list(dict.fromkeys(names)), self.broker_dir)
        (self.broker_dir / GATEWAY_ACL).write_text(gateway_acl(self.gateway_username))
        (self.broker_dir / DEVICES_ACL).write_text(DEVICE_ACL)
        self.device_accounts.ensure()
        try:
            password = self.settings.mqtt.secret()
        except ConfigFileError:
            password = None  # first setup: the password file is written below
        if not password:
            password = new_password()
            write_secret(self.gateway_password_path, password + "\n")
        self.gateway_accounts.set(self.gateway_username, password)
        self._reload()
        return password

    def _reload(self) -> None:
        # In a container fleet the broker runs in a pid namespace of its own and reloads when
        # the account files change (deploy/mosquitto/run.sh): nothing to signal from here.
        if self.reload and self.settings.broker.reload == "signal":
            reload_broker(self.settings.broker_pid_file)

    def _store(self) -> Store:
        return Store.open(self.settings.storage.path, self.settings.storage.synchronous)

    def provision_device(self, device: str) -> DeviceCredentials:
        """Create (or replace) ``device``'s account, reload the broker, record the device."""
        topics.telemetry(device)  # validates the id against the topic tree's pattern
        gateway = self.settings.gateway_id
        if device == self.gateway_username or device.startswith(f"{gateway}-") or \
                device == gateway:
            raise ProvisioningError(f"device id {device!r} collides with the gateway's own "
                                    f"MQTT ids ({gateway}, {gateway}-*): choose another")
        password = new_password()
        self.device_accounts.set(device, password)
        self._reload()
        store = self._store()
        try:
            with store.transaction():
                store.conn.execute(
                    "INSERT INTO provisioned_devices (device_id, provisioned_ms, revoked_ms) "
                    "VALUES (?, ?, NULL) ON CONFLICT (device_id) DO UPDATE SET "
                    "provisioned_ms = excluded.provisioned_ms, revoked_ms = NULL",
                    (device, time.time_ns() // 1_000_000))
        finally:
            store.close()
        return DeviceCredentials(device, self.device_host, self.settings.broker.device_port,
                                 device, password, self.site_ca().cert_pem())

    def revoke(self, device: str) -> None:
        """Remove ``device``'s account and reload: the broker disconnects and refuses it."""
        if not self.device_accounts.remove(device):
            raise ProvisioningError(f"device {device!r} has no broker account here "
                                    "(`smaint provision list` shows the provisioned ones)")
        self._reload()
        store = self._store()
        try:
            with store.transaction():
                store.conn.execute(
                    "UPDATE provisioned_devices SET revoked_ms = ? WHERE device_id = ?",
                    (time.time_ns() // 1_000_000, device))
        finally:
            store.close()

    def devices(self) -> list[dict[str, Any]]:
        """Provisioned devices (revoked ones too), oldest first."""
        store = self._store()
        try:
            rows = store.conn.execute(
                "SELECT device_id, provisioned_ms, revoked_ms FROM provisioned_devices "
                "ORDER BY provisioned_ms, device_id").fetchall()
        finally:
            store.close()
        return [{"device": d, "provisioned_ms": p, "revoked_ms": r} for d, p, r in rows]


def write_provisioning(path: Path, creds: DeviceCredentials, **extra: str) -> None:
    """Write a device's provisioning JSON, owner-readable only (it holds the password)."""
    write_secret(path, json.dumps(creds.provisioning(**extra), indent=2) + "\n")
