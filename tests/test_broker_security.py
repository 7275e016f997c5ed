"""The broker's accounts, ACLs and TLS, against the real devstack broker (issue 13).

Every attack is checked with a marker: the attacker's own, allowed message is published after
the forbidden one, and the broker keeps one client's messages in order for a subscriber, so
once the marker has arrived a forbidden message that got through would already be there.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.broker_accounts import PasswordFile, check_password, hash_password
from edge.broker_config import (
    PRODUCTION_BROKER_DIR,
    PRODUCTION_DATA_DIR,
    Listeners,
    production_config,
)
from edge.mqtt_session import MqttSession, login_options
from edge.settings import GatewaySettings, MqttSettings
from edge.site_ca import ensure_site_ca
from shared import topics
from tests.fixtures.gateway import running_gateway

REPO = Path(__file__).resolve().parents[1]


class Client:
    """A paho client that records what happens to it: CONNACK, messages, disconnects."""

    def __init__(self, client_id: str, *, clean: bool = True) -> None:
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                clean_session=clean)
        self.connack: Any = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.disconnected = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.suback: list[Any] = []
        self.subscribed = threading.Event()
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = lambda *_: self.disconnected.set()
        self.mqtt.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain)))
        self.mqtt.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()
        self.answered.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        self.suback = list(codes)
        self.subscribed.set()

    def open(self, host: str, port: int, username: str | None = None,
             password: str | None = None, ca_file: str | Path | None = None) -> Client:
        """Connect (TLS when ``ca_file`` is given) and wait for the broker's answer."""
        if username is not None:
            self.mqtt.username_pw_set(username, password)
        if ca_file is not None:
            self.mqtt.tls_set(ca_certs=str(ca_file))
        self.mqtt.connect(host, port, keepalive=10)
        self.mqtt.loop_start()
        assert self.answered.wait(10) or self.disconnected.wait(10), "no answer from broker"
        return self

    def subscribe(self, *filters: str) -> list[Any]:
        """Subscribe at QoS 1 and return the SUBACK reason codes."""
        self.subscribed.clear()
        self.mqtt.subscribe([(f, 1) for f in filters])
        assert self.subscribed.wait(10), "no SUBACK"
        return self.suback

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 (not waiting)."""
        return self.mqtt.publish(topic, payload, qos=1, retain=retain)

    def until(self, topic: str, payload: bytes) -> list[tuple[str, bytes, bool]]:
        """Every message received up to and including (topic, payload); fails after 10 s."""
        seen: list[tuple[str, bytes, bool]] = []
        while True:
            try:
                msg = self.messages.get(timeout=10)
            except queue.Empty:
                pytest.fail(f"{topic} {payload!r} never arrived; got {seen}")
            seen.append(msg)
            if msg[:2] == (topic, payload):
                return seen

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opened, closed afterwards."""
    opened: list[Client] = []
    yield opened
    for c in opened:
        c.close()


def device(broker: PrivateMosquitto, clients: list[Client], name: str,
           client_id: str | None = None) -> Client:
    """A provisioned device connected over TLS with its own account."""
    creds = broker.provision(name)
    c = Client(client_id or name).open(broker.host, broker.tls_port, creds.username,
                                       creds.password, broker.ca_file)
    clients.append(c)
    assert c.connected.is_set(), f"{name} refused: {c.connack}"
    return c


def watcher(broker: PrivateMosquitto, clients: list[Client], name: str) -> Client:
    """A fixture-account subscriber on the whole tree (it sees what the gateway would)."""
    c = Client(name).open(broker.host, broker.port, *broker.fixture_login())
    clients.append(c)
    c.subscribe(f"{topics.ROOT}/#")
    return c


def test_a_device_publishes_only_under_its_own_subtree(
    broker: PrivateMosquitto, clients: list[Client]
) -> None:
    """Readings, a retained offline status, a retained config, an alert: none lands as B."""
    watch = watcher(broker, clients, "sec-watch-pub")
    a = device(broker, clients, "sec-dev-a")
    device(broker, clients, "sec-dev-b")
    forged = [
        (topics.telemetry("sec-dev-b"), b'{"forged": "reading"}', False),
        (topics.status("sec-dev-b"), b'{"state": "offline"}', True),
        (topics.config("sec-dev-b"), b'{"v":1,"interval_ms":10}', True),
        (topics.config("sec-dev-a"), b'{"v":1,"interval_ms":10}', True),  # not even its own
        (topics.alerts("gw-demo"), b'{"forged": "alert"}', False),
    ]
    for topic, payload, retain in forged:
        a.publish(topic, payload, retain).wait_for_publish(10)
    marker = (topics.telemetry("sec-dev-a"), b"marker-own-reading")
    a.publish(*marker).wait_for_publish(10)
    # The session broker is shared: only these devices' and the gateway alert topic count.
    seen = [m for m in watch.until(*marker) if "/sec-dev-" in m[0] or "/gw/" in m[0]]
    assert [m[0] for m in seen] == [marker[0]], f"forged messages got through: {seen}"
    # Nothing retained was planted either: a new subscriber gets no retained B status/config.
    late = watcher(broker, clients, "sec-watch-late")
    late_marker = (topics.telemetry("sec-dev-a"), b"marker-after-subscribe")
    a.publish(*late_marker).wait_for_publish(10)
    planted = [m for m in late.until(*late_marker) if m[0].startswith(
        f"{topics.ROOT}/dev/sec-dev-")]
    assert planted == [(*late_marker, False)]


def test_a_device_reads_only_its_own_config_and_cannot_subscribe_to_everything(
    fresh_broker: PrivateMosquitto, clients: list[Client]
) -> None:
    broker = fresh_broker  # its retained configs must not reach other tests
    a = device(broker, clients, "sec-read-a")
    # Mosquitto 2.0 grants these subscriptions in the SUBACK but delivers nothing through
    # them that the ACL does not let this account read: what counts is what arrives.
    a.subscribe(topics.config("sec-read-b"), "#", f"{topics.ROOT}/dev/+/telemetry",
                "$SYS/#", topics.config("sec-read-a"))
    gateway_side = Client("sec-read-gw").open(broker.host, broker.port, *broker.fixture_login())
    clients.append(gateway_side)
    gateway_side.publish(topics.config("sec-read-b"), b'{"v":1,"interval_ms":500}',
                         retain=True).wait_for_publish(10)
    gateway_side.publish(topics.telemetry("sec-read-b"), b"b-reading").wait_for_publish(10)
    own = (topics.config("sec-read-a"), b'{"v":1,"interval_ms":250}')
    gateway_side.publish(*own, retain=True).wait_for_publish(10)
    assert [m[:2] for m in a.until(*own)] == [own]


def test_unknown_wrong_anonymous_and_revoked_clients_are_refused(
    broker: PrivateMosquitto, clients: list[Client]
) -> None:
    creds = broker.provision("sec-revoke")
    attempts = {
        "unknown": (broker.tls_port, "sec-nobody", "whatever"),
        "wrong password": (broker.tls_port, "sec-revoke", "not-the-password"),
        "anonymous (devices)": (broker.tls_port, None, None),
        "anonymous (gateway listener)": (broker.port, None, None),
        # Device accounts do not exist on the gateway's loopback listener.
        "device on the gateway listener": (broker.port, creds.username, creds.password),
    }
    for what, (port, user, password) in attempts.items():
        c = Client(f"sec-try-{len(clients)}")
        c.open(broker.host, port, user, password,
               broker.ca_file if port == broker.tls_port else None)
        clients.append(c)
        assert not c.connected.is_set(), f"{what}: accepted"
        assert c.connack is not None, f"{what}: no CONNACK"
        assert c.connack.is_failure, f"{what}: {c.connack}"
    bystander = device(broker, clients, "sec-bystander")
    dev = device(broker, clients, "sec-revoke")
    broker.provision("sec-newcomer")  # adding an account reloads the broker too
    broker.revoke("sec-revoke")
    assert dev.disconnected.wait(10), "the revoked device is still connected"
    dev.mqtt.loop_stop()
    # The reloads dropped nobody else: the bystander's next reading still goes through.
    marker = (topics.telemetry("sec-bystander"), b"still-connected")
    watch = watcher(broker, clients, "sec-watch-revoke")
    bystander.publish(*marker).wait_for_publish(10)
    assert watch.until(*marker)[-1][:2] == marker
    assert not bystander.disconnected.is_set()
    again = Client("sec-revoke-again").open(broker.host, broker.tls_port, creds.username,
                                            creds.password, broker.ca_file)
    clients.append(again)
    assert not again.connected.is_set()


def test_a_client_cannot_take_the_gateways_session(
    broker: PrivateMosquitto, clients: list[Client]
) -> None:
    """A device connecting with the gateway's client id gets its own id; the gateway stays."""
    gw_id = "gw-sec-takeover"
    gateway = Client(gw_id, clean=False).open(broker.host, broker.port,
                                              **_login(broker.gateway_mqtt()))
    clients.append(gateway)
    gateway.subscribe(topics.TELEMETRY_SUBSCRIPTION)
    attacker = None
    for _ in range(5):
        attacker = device(broker, clients, "sec-thief", client_id=gw_id)
    assert attacker is not None
    marker = (topics.telemetry("sec-thief"), b"after-five-takeover-attempts")
    attacker.publish(*marker).wait_for_publish(10)
    assert gateway.until(*marker)[-1][:2] == marker
    assert not gateway.disconnected.is_set(), "the gateway's connection was taken over"


def _login(mqtt_section: dict[str, Any]) -> dict[str, Any]:
    return {"username": mqtt_section["username"], "password": mqtt_section["password"]}


def test_tls_verifies_the_site_ca_and_refuses_another(
    broker: PrivateMosquitto, clients: list[Client], tmp_path: Path
) -> None:
    creds = broker.provision("sec-tls")
    ok = Client("sec-tls").open(broker.host, broker.tls_port, creds.username, creds.password,
                                broker.ca_file)
    clients.append(ok)
    assert ok.connected.is_set()
    # A client trusting another CA (what a device would see of a broker posing as ours).
    other = ensure_site_ca(tmp_path / "other-ca", "elsewhere")
    context = ssl.create_default_context(cafile=str(other.cert_path))
    with socket.create_connection((broker.host, broker.tls_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        context.wrap_socket(raw, server_hostname=broker.host)


async def test_the_gateways_mqtt_settings_connect_over_tls(broker: PrivateMosquitto) -> None:
    """mqtt.username/password/tls_ca_file: the gateway's session over TLS, verified by CA."""
    creds = broker.provision("sec-gw-tls")
    section = MqttSettings(host=broker.host, port=broker.tls_port, username=creds.username,
                           password=creds.password, tls_ca_file=str(broker.ca_file))
    session = MqttSession(section.host, section.port, "sec-gw-tls", keepalive=10,
                          queue_max=10, login=login_options(section))
    async with session:
        await session.subscribe([(topics.config("sec-gw-tls"), 1)])
    wrong = MqttSettings(host=broker.host, port=broker.tls_port, username=creds.username,
                         password="not-it", tls_ca_file=str(broker.ca_file))
    with pytest.raises(aiomqtt.MqttError):
        async with MqttSession(wrong.host, wrong.port, "sec-gw-tls", keepalive=10,
                               queue_max=10, login=login_options(wrong)):
            pass


def test_an_oversize_publish_is_never_acknowledged(
    broker: PrivateMosquitto, clients: list[Client]
) -> None:
    """Over max_packet_size the broker refuses (disconnects) instead of PUBACK-then-drop."""
    watch = watcher(broker, clients, "sec-watch-size")
    big = device(broker, clients, "sec-big")
    info = big.publish(topics.telemetry("sec-big"), b"x" * 20_000)
    assert big.disconnected.wait(10), "the broker kept a client that sent an oversize packet"
    assert not info.is_published()
    big.mqtt.loop_stop()
    small = device(broker, clients, "sec-small")
    marker = (topics.telemetry("sec-small"), b"normal-size")
    small.publish(*marker).wait_for_publish(10)
    seen = [m[0] for m in watch.until(*marker) if "/sec-big/" in m[0] or "/sec-small/" in m[0]]
    assert seen == [marker[0]]


async def test_the_gateway_exports_the_brokers_counters(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    settings = GatewaySettings(gateway_id="gw-sec-metrics", mqtt=broker.gateway_mqtt(),
                               storage={"path": str(tmp_path / "gw.db")},
                               http={"port": free_port()})
    async with running_gateway(settings) as gw:
        values: dict[str, float] = {}
        # $SYS is refreshed every sys_interval (10 s): wait for a count with the gateway in.
        for _ in range(300):
            text = (await gw.http.get(f"{gw.base_url}/metrics")).text
            values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                      if line.startswith("smaint_broker_")}
            if values.get("smaint_broker_clients_connected", 0) >= 1:
                break
            await asyncio.sleep(0.1)
    assert values["smaint_broker_clients_connected"] >= 1  # the gateway itself, at least
    assert "smaint_broker_publish_messages_dropped" in values


def test_smaint_provision_device_list_and_revoke(
    broker: PrivateMosquitto, clients: list[Client], tmp_path: Path
) -> None:
    """The CLI provisions a device that then connects with its file, and revokes it."""
    env = {**os.environ, **broker.gateway_env(), "SMAINT_GATEWAY_GATEWAY_ID": "gw-sec-cli",
           "SMAINT_GATEWAY_STORAGE__PATH": str(tmp_path / "gw.db"), "PYTHONPATH": str(REPO)}

    def smaint(*args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "smaint", "provision", *args], env=env,
                             capture_output=True, text=True, check=False, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    out = tmp_path / "sec-cli.json"
    smaint("device", "sec-cli", "--out", str(out))
    assert out.stat().st_mode & 0o077 == 0  # it holds the password
    prov = json.loads(out.read_text())
    assert prov["mqtt_uri"] == f"mqtts://{broker.host}:{broker.tls_port}"
    ca = tmp_path / "ca.pem"
    ca.write_text(prov["ca_pem"])
    dev = Client("sec-cli").open(broker.host, broker.tls_port, prov["mqtt_username"],
                                 prov["mqtt_password"], ca)
    clients.append(dev)
    assert dev.connected.is_set()
    smaint("revoke", "sec-cli")
    assert dev.disconnected.wait(10)
    (listed,) = json.loads(smaint("list"))
    assert listed["device"] == "sec-cli"
    assert listed["revoked_ms"] is not None


def test_smaint_provision_refuses_the_gateways_own_ids(
    broker: PrivateMosquitto, tmp_path: Path
) -> None:
    env = {**os.environ, **broker.gateway_env(), "SMAINT_GATEWAY_GATEWAY_ID": "gw-sec-ids",
           "SMAINT_GATEWAY_STORAGE__PATH": str(tmp_path / "gw.db"), "PYTHONPATH": str(REPO)}
    for name in ("gw-sec-ids", "gw-sec-ids-alerts", "gateway"):
        res = subprocess.run([sys.executable, "-m", "smaint", "provision", "device", name,
                              "--out", str(tmp_path / "x.json")], env=env, capture_output=True,
                             text=True, check=False, timeout=60)
        assert res.returncode == 1, (name, res.stderr)
        assert "collides" in res.stderr, (name, res.stderr)


def test_password_hashes_are_mosquittos_format() -> None:
    """Our $7$ hash is the one mosquitto_passwd writes (same salt -> same string)."""
    hashed = hash_password("s3cret", salt=b"\x01" * 12)
    assert hashed.startswith("$7$101$AQEBAQEBAQEBAQEB$")
    assert check_password("s3cret", hashed)
    assert not check_password("other", hashed)


@given(users=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40),
                             max_size=5))
@settings(max_examples=40, deadline=None)
def test_password_files_keep_every_valid_account_and_refuse_the_rest(
    users: dict[str, str]
) -> None:
    """Whatever the names: a valid one round-trips with its password, others are refused."""
    with tempfile.TemporaryDirectory() as tmp:
        pf = PasswordFile(Path(tmp) / "x.passwd")
        kept = {}
        for user, password in users.items():
            valid = ":" not in user and not user.startswith("#") and all(
                c.isprintable() and not c.isspace() for c in user)
            if valid:
                pf.set(user, password)
                kept[user] = password
            else:
                with pytest.raises(ValueError, match="must be non-empty"):
                    pf.set(user, password)
        stored = pf.read()
        assert set(stored) == set(kept)
        for user, password in kept.items():
            assert check_password(password, stored[user])


def test_the_production_config_is_current() -> None:
    """mosquitto/production.conf is what `smaint provision broker-config` renders today."""
    shared = (REPO / "mosquitto" / "mosquitto.conf").read_text()
    want = production_config(shared, Listeners(PRODUCTION_BROKER_DIR), PRODUCTION_DATA_DIR)
    assert (REPO / "mosquitto" / "production.conf").read_text() == want, (
        "regenerate: SMAINT_GATEWAY_BROKER__DIR=/var/lib/smaint/broker "
        "smaint provision broker-config --out mosquitto/production.conf")
