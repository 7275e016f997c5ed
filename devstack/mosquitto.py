"""A private Mosquitto broker using the repository's ``mosquitto/mosquitto.conf``, with
authentication and TLS on as in production (edge/broker_config.py, edge/provision.py).

Two listeners on 127.0.0.1: ``port`` (plain TCP, the gateway's account) and ``tls_port``
(TLS with a site CA of its own, one account per device, provisioned by the same
:class:`edge.provision.Provisioner` as ``smaint provision``). For tests and benchmarks the
loopback listener also has a fixture account (``FIXTURE_USER``, read/write on the whole
``smaint/`` tree) standing in for many devices at once; production has no such account.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.ports import free_port, wait_for_port
from edge.broker_accounts import PasswordFile, new_password
from edge.broker_config import GATEWAY_ACL, GATEWAY_PASSWD, Listeners, listener_config
from edge.provision import DeviceCredentials, Provisioner
from edge.settings import GatewaySettings
from simulator.device import BrokerLogin

REPO_CONF = Path(__file__).resolve().parents[1] / "mosquitto" / "mosquitto.conf"
GATEWAY_USER = "gateway"
FIXTURE_USER = "devstack-fixture"
FIXTURE_ACL = f"""
# devstack only: one account standing in for many devices and consumers in tests/benchmarks.
user {FIXTURE_USER}
topic readwrite smaint/#
topic read $SYS/#
"""


class MosquittoNotFoundError(RuntimeError):
    """The mosquitto binary is missing: install Debian's ``mosquitto`` package."""


class PrivateMosquitto:
    """Mosquitto on a free 127.0.0.1 port with persistence in a temp dir.

    Use as a context manager, or call ``start()`` / ``stop()``. ``restart()`` keeps the
    persistence directory, so queued QoS 1 messages and sessions survive it.
    """

    def __init__(self, workdir: Path | None = None, port: int | None = None,
                 settings: GatewaySettings | None = None) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            raise MosquittoNotFoundError("mosquitto not found; run: apt-get install mosquitto")
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="smaint-mqtt-"))
        self.port = port or free_port()
        self.tls_port = free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"
        # Where accounts, CA and device records live: the demo passes its gateway's settings
        # (records land in the gateway's database); tests get a scratch set in the workdir.
        base = settings or GatewaySettings(storage={"path": str(self.workdir / "records.db")})
        self.settings = base.model_copy(update={
            "mqtt": base.mqtt.model_copy(update={
                "username": GATEWAY_USER, "password": "",
                "password_file": str(self.workdir / "gateway-password")}),
            "broker": base.broker.model_copy(update={
                "dir": str(self.workdir / "broker"), "ca_dir": str(self.workdir / "site-ca"),
                "pid_file": str(self.workdir / "broker" / "mosquitto.pid"),
                "device_host": self.host, "device_port": self.tls_port}),
        })
        self.provisioner = Provisioner(self.settings, reload=False)
        self.gateway_password = ""
        self.fixture_password = ""

    @property
    def ca_file(self) -> Path:
        """The site CA certificate devices verify the broker with."""
        return self.provisioner.site_ca().cert_path

    def gateway_mqtt(self) -> dict[str, Any]:
        """The gateway settings' ``mqtt`` section for this broker (loopback, gateway account)."""
        return {"host": self.host, "port": self.port, "username": GATEWAY_USER,
                "password": self.gateway_password}

    def gateway_login(self) -> dict[str, str]:
        """aiomqtt login of the gateway account (loopback ``port``)."""
        return {"username": GATEWAY_USER, "password": self.gateway_password}

    def gateway_env(self) -> dict[str, str]:
        """``SMAINT_GATEWAY_MQTT__*`` and ``BROKER__*`` variables for a gateway process (or
        ``smaint provision``) on this broker."""
        b = self.settings.broker
        broker = {"dir": b.dir, "ca_dir": b.ca_dir, "pid_file": b.pid_file,
                  "device_host": b.device_host, "device_port": b.device_port}
        return {**{f"SMAINT_GATEWAY_MQTT__{k.upper()}": str(v)
                   for k, v in self.gateway_mqtt().items()},
                **{f"SMAINT_GATEWAY_BROKER__{k.upper()}": str(v) for k, v in broker.items()}}

    def fixture_login(self) -> tuple[str, str]:
        """(username, password) of the fixture account (loopback listener)."""
        return FIXTURE_USER, self.fixture_password

    def fixture_device_login(self, device: str) -> BrokerLogin:
        """A simulated device's login as the fixture account (loopback ``port``, no TLS)."""
        del device  # one account for every device: tests run many ids at once
        return BrokerLogin(FIXTURE_USER, self.fixture_password)

    def device_login(self, device: str) -> BrokerLogin:
        """Provision ``device`` and return its own TLS login (for ``tls_port``)."""
        creds = self.provision(device)
        return BrokerLogin(creds.username, creds.password, str(self.ca_file))

    def provision(self, device: str) -> DeviceCredentials:
        """Give ``device`` an account on the TLS listener (the broker reloads, nobody drops)."""
        return self.provisioner.provision_device(device)

    def revoke(self, device: str) -> None:
        """Remove ``device``'s account: the broker disconnects and refuses it."""
        self.provisioner.revoke(device)

    def _accounts(self) -> None:
        self.gateway_password = self.provisioner.setup_broker()
        secret = self.workdir / "fixture-password"
        if not secret.exists():
            secret.write_text(new_password())
        self.fixture_password = secret.read_text()
        broker_dir = self.settings.broker_dir
        PasswordFile(broker_dir / GATEWAY_PASSWD).set(FIXTURE_USER, self.fixture_password)
        with (broker_dir / GATEWAY_ACL).open("a") as f:
            f.write(FIXTURE_ACL)

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            REPO_CONF.read_text(),
            "# --- private instance (devstack/mosquitto.py) ---",
            listener_config(Listeners(self.settings.broker_dir, gateway_port=self.port,
                                      gateway_host=self.host, device_port=self.tls_port,
                                      device_host=self.host)),
            f"persistence_location {data}/",
            f"pid_file {self.settings.broker_pid_file}",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto would drop to the 'mosquitto' user and then be unable to write
            # our temp dirs; this private instance has no reason to switch users.
            lines.append("user root")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> PrivateMosquitto:
        """Start the broker and wait until it accepts connections."""
        self._accounts()
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout_s=10)
            wait_for_port(self.tls_port, timeout_s=10)
        except TimeoutError:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{log}") from None
        self.provisioner.reload = True  # mosquitto wrote its pid_file before listening
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves its persistence file; ``kill`` uses SIGKILL)."""
        if self.proc is None:
            return
        self.provisioner.reload = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the temp dir if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
