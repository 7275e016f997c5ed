"""``smaint demo``: the whole system on one machine, with a live progress line per hop.

Starts a private Mosquitto and PostgreSQL (free ports, temp dirs), the cloud API, the gateway
and a simulated fleet, then prints once a second how many readings each hop has seen.
``DEMO_SECONDS=N`` runs N seconds; Ctrl-C (or SIGTERM) ends the run early. Either way the
devices stop, the demo waits (bounded) for the pipeline to drain, prints one JSON summary as
the last line and exits 0 when the cloud holds every reading published. A second Ctrl-C
abandons the drain.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from devstack.model_loop import (
    SHADOW_READINGS,
    ModelLoop,
    deploy_bundles,
    mlflow_ui,
    stop_ui,
    training_env,
)
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from devstack.postgres import PrivatePostgres
from devstack.process import ServiceNotReadyError, ServiceProcess
from edge.settings import GatewaySettings
from simulator.fleet import Fleet
from ui.panel.auth import hash_password as panel_hash

GATEWAY_ID = "gw-demo"
# SIMULATED faults the demo injects, one every FAULT_EVERY_S seconds, cycling through the
# fleet, so that scoring and alerting have something real to react to.
FAULT_KINDS = ("spike", "drift", "stuck", "noise")
FAULT_EVERY_S = 15.0
# The longest wait, after the devices stop, for the cloud to hold everything published.
DRAIN_TIMEOUT_S = 90.0
LEGEND = (
    "  legend    received counts device status messages too (shown in brackets), so it can be "
    "ahead of published;\n"
    "            scored lags stored by each device's warm-up: a device's first readings are "
    "stored unscored\n"
    "            until the detector has enough history; synced and cloud follow within a sync "
    "interval"
)


@dataclass
class Hops:
    """Counters of every hop, as last read."""

    published: int = 0
    received: int = 0
    statuses: int = 0
    stored: int = 0
    dead_letters: int = 0
    scored: int = 0
    synced: int = 0
    cloud: int = 0
    cloud_distinct: int = 0
    alerts: int = 0
    gateway_duplicates: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self, elapsed: float) -> str:
        """One human-readable progress line."""
        return (
            f"[{elapsed:6.1f}s] published {self.published:>7} -> gateway received "
            f"{self.received:>7} ({self.statuses} status) stored {self.stored:>7} "
            f"scored {self.scored:>7} "
            f"(dead-letter {self.dead_letters}) -> synced {self.synced:>7} -> cloud "
            f"{self.cloud:>7} | alerts {self.alerts}"
        )


class Demo:
    """Owns every process of the demo and stops them in reverse order."""

    def __init__(self, workdir: Path, devices: int, rate_hz: float,
                 train_models: bool = True, retrain_after_s: float = 0.0) -> None:
        self.workdir = workdir
        self.devices = devices
        self.rate_hz = rate_hz
        self.procs: list[ServiceProcess] = []
        self.broker: PrivateMosquitto | None = None
        self.pg: PrivatePostgres | None = None
        self.fleet: Fleet | None = None
        self.cloud_port = free_port()
        self.gateway_port = free_port()
        self.http = httpx.Client(timeout=5.0)
        self.dsn = ""
        self.train_models = train_models
        self.trainer: ServiceProcess | None = None
        self.models_announced = False
        self.admin_key = ""
        self.retrain_after_s = retrain_after_s
        self.loop: ModelLoop | None = None
        self.mlflow_ui: ServiceProcess | None = None

    def _start(self, name: str, args: list[str], env: dict[str, str], port: int) -> None:
        proc = ServiceProcess(args, env, self.workdir / f"{name}.log", port, name=name)
        self.procs.append(proc)  # listed before it is ready, so that stop() ends it too
        proc.start(timeout_s=60)

    def _cloud_cli(self, dsn: str, *args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "cloud", *args], env={**os.environ, "SMAINT_CLOUD_DB__DSN": dsn},
            capture_output=True, text=True, check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"smaint cloud {' '.join(args)} failed:\n{res.stderr}")
        return res.stdout.strip()

    def start(self) -> None:
        """Start broker, database, cloud, gateway and fleet, in data-flow order."""
        if self.train_models:
            self._start_training()
        step("broker", "starting a private Mosquitto with mosquitto/mosquitto.conf, "
             "accounts and TLS on")
        # Device accounts are recorded in the gateway's database, as `smaint provision` does.
        records = GatewaySettings(gateway_id=GATEWAY_ID,
                                  storage={"path": str(self.workdir / "gateway.db")})
        self.broker = PrivateMosquitto(self.workdir / "mosquitto", settings=records).start()
        step("broker", f"gateway: mqtt://127.0.0.1:{self.broker.port} (its own account); "
             f"devices: mqtts://127.0.0.1:{self.broker.tls_port} (site CA "
             f"{self.broker.ca_file}, one account each)")

        step("cloud db", "initdb of a private PostgreSQL cluster")
        # Its own temp dir: the postgres user must be able to reach it, which a private work
        # dir under a 0700 parent (pytest's, a user's home) does not allow.
        self.pg = PrivatePostgres().start()
        import psycopg  # noqa: PLC0415 - cloud-side dependency, imported only when the demo runs

        with psycopg.connect(self.pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE smaint")
        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=smaint"
        self.dsn = dsn
        self._cloud_cli(dsn, "migrate")
        token = self._cloud_cli(dsn, "gateway", "add", GATEWAY_ID).splitlines()[-1].strip()
        viewer = self._cloud_cli(dsn, "user", "add", "demo", "--role", "viewer")
        self.http.headers["Authorization"] = f"Bearer {viewer.splitlines()[-1].strip()}"
        admin = self._cloud_cli(dsn, "user", "add", "demo-admin", "--role", "admin")
        self.admin_key = admin.splitlines()[-1].strip()
        cloud_started = datetime.now(UTC)
        # The user named: libpq's default is the OS user's name, a role this cluster lacks.
        step("cloud db", f"postgresql://postgres@127.0.0.1:{self.pg.port}/smaint "
                         "(schema migrated; the --dsn of `smaint cloud ...` commands)")

        # `smaint cloud serve`: the API with its web console when the ui extra is installed.
        self._start("cloud", ["-m", "smaint", "cloud", "serve"], {
            "SMAINT_CLOUD_DB__DSN": dsn,
            "SMAINT_CLOUD_API__HOST": "127.0.0.1",
            "SMAINT_CLOUD_API__PORT": str(self.cloud_port),
            # Simulated devices: the console offers SIMULATED scenarios (device explorer).
            "SMAINT_CLOUD_SIMULATION__ENABLED": "true",
            **(training_env(self.workdir, self.workdir / "signing.key")
               if self.train_models else {}),
        }, self.cloud_port)
        step("cloud", f"API http://127.0.0.1:{self.cloud_port}/docs")
        step("console", f"http://127.0.0.1:{self.cloud_port}/ (sign in with the admin key "
                        f"{self.admin_key})")
        if self.train_models:
            self.mlflow_ui, ui_port = mlflow_ui(self.workdir)
            step("mlflow", f"UI http://127.0.0.1:{ui_port} (runs of the cloud's retraining)")
            self.loop = ModelLoop(f"http://127.0.0.1:{self.cloud_port}",
                                  self.admin_key, GATEWAY_ID,
                                  retrain_after_s=self.retrain_after_s,
                                  since=cloud_started, say=lambda text: step("models", text))

        models = {
            "SMAINT_GATEWAY_SCORING__MODELS_DIR": str(self.models_dir),
            "SMAINT_GATEWAY_SCORING__TRUSTED_KEYS_FILE": str(self.trusted_keys),
            "SMAINT_GATEWAY_ROLLOUT__SHADOW_READINGS": str(SHADOW_READINGS),
        } if self.train_models else {}
        # `smaint gateway run`: the gateway with its web panel when the ui extra is installed.
        panel_password = secrets.token_urlsafe(9)
        self._start("gateway", ["-m", "smaint", "gateway", "run"], {
            "SMAINT_GATEWAY_GATEWAY_ID": GATEWAY_ID,
            **self.broker.gateway_env(),
            "SMAINT_GATEWAY_STORAGE__PATH": str(self.workdir / "gateway.db"),
            "SMAINT_GATEWAY_SYNC__CLOUD_URL": f"http://127.0.0.1:{self.cloud_port}",
            "SMAINT_GATEWAY_SYNC__TOKEN": token,
            "SMAINT_GATEWAY_HTTP__HOST": "127.0.0.1",
            "SMAINT_GATEWAY_HTTP__PORT": str(self.gateway_port),
            "SMAINT_GATEWAY_PANEL__PASSWORD_HASH": panel_hash(panel_password),
            # Simulated devices: the panel offers SIMULATED scenarios (device page).
            "SMAINT_GATEWAY_SIMULATION__ENABLED": "true",
            **models,
        }, self.gateway_port)
        # The gateway's persistent session must exist before devices publish, or the
        # broker has nobody to queue their first readings for.
        self.procs[-1].wait_until(self._gateway_subscribed, timeout_s=30)
        step("gateway", f"status http://127.0.0.1:{self.gateway_port}/api/status, "
             f"metrics /metrics, database {self.workdir / 'gateway.db'}")
        if importlib.util.find_spec("nicegui") is not None:
            step("panel", f"http://127.0.0.1:{self.gateway_port}/ (password: {panel_password})")

        # Each simulated node is provisioned like a real one (edge/provision.py) and logs in
        # over TLS with its own account.
        self.fleet = Fleet(
            host="127.0.0.1", port=self.broker.tls_port, n_devices=self.devices,
            rate_hz=self.rate_hz, profile="mix", seed=7, login=self.broker.device_login,
        )
        self.fleet.start()
        step("devices", f"{self.devices} simulated ESP32 nodes at {self.rate_hz:g} readings/s each")

    @property
    def models_dir(self) -> Path:
        """The gateway's models directory: it fills it itself, over the air."""
        return self.workdir / "models"

    @property
    def trusted_keys(self) -> Path:
        """The gateway's trusted public keys: a directory of their own, apart from the
        bundles they verify (models/, bundles/) and from the signing key."""
        return self.workdir / "trust" / "trusted_keys.txt"

    def _start_training(self) -> None:
        # The signing key and the gateway's trust in it exist before the gateway starts; the
        # models themselves are trained in the background (~15 s), then rolled out to the
        # gateway, which scores with its statistical fallback meanwhile.
        from shared.bundle import generate_key, public_key_text  # noqa: PLC0415

        key_file = self.workdir / "signing.key"
        public = generate_key(key_file)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.trusted_keys.parent.mkdir(parents=True, exist_ok=True)
        self.trusted_keys.write_text(public_key_text(public) + "\n")
        self.trainer = ServiceProcess(
            ["-m", "cloud", "train-initial", "--out", str(self.workdir / "bundles"),
             "--key", str(key_file)], log=self.workdir / "training.log", name="training",
        ).spawn()
        step("models", "training the first Isolation Forests from the bundled real data "
             "(statistical fallback scores until they load)")

    def announce_models(self) -> None:
        """Say once when the background training has finished, and how."""
        if self.trainer is None or self.models_announced or self.trainer.returncode is None:
            return
        self.models_announced = True
        log = (self.workdir / "training.log").read_text(errors="replace").strip()
        if self.trainer.returncode == 0:
            try:
                models = json.loads(log.splitlines()[-1])["models"]
            except (ValueError, KeyError, IndexError):
                models = {}
            try:
                rollouts = deploy_bundles(
                    f"http://127.0.0.1:{self.cloud_port}", self.admin_key, GATEWAY_ID,
                    self.workdir / "artifacts",
                    {v: self.workdir / "bundles" / f"{p}.smb" for p, v in models.items()})
            except (httpx.HTTPError, OSError, ValueError) as exc:
                step("models", f"signed bundles ready but not rolled out: {exc}")
                return
            if self.loop is not None:
                self.loop.watch(list(rollouts))
            step("models", f"signed bundles ready; rolling out to {GATEWAY_ID} over the air "
                 f"(download, verify, shadow, swap): {models}, rollouts "
                 f"{sorted(rollouts.values())}")
        else:
            step("models", f"training failed (exit {self.trainer.returncode}); the gateway keeps "
                 f"its statistical detector. See {self.workdir / 'training.log'}")

    def inject_next_fault(self, n: int) -> None:
        """Inject the n-th SIMULATED fault of the demo's schedule into one device."""
        if self.fleet is None:
            return
        devices = sorted(self.fleet.devices)
        device = devices[(2 * n + 1) % len(devices)]
        kind = FAULT_KINDS[n % len(FAULT_KINDS)]
        # The simulator logs the injection itself ("SIMULATED fault ..."), see run().
        self.fleet.inject(device, kind, seconds=8.0 if kind != "spike" else None,
                          magnitude=1.5 if kind != "stuck" else 1.0)

    def _gateway_subscribed(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return bool(self.http.get(self._gw("/api/status")).json().get("mqtt_connected"))
        return False

    def _gw(self, path: str) -> str:
        return f"http://127.0.0.1:{self.gateway_port}{path}"

    def poll(self) -> Hops:
        """Read every hop's counters."""
        hops = Hops()
        if self.fleet is not None:
            hops.published = self.fleet.published
        try:
            gw: dict[str, Any] = self.http.get(self._gw("/api/status")).json()
            hops.received = int(gw.get("received", 0))
            hops.statuses = int(gw.get("statuses", 0))
            hops.stored = int(gw.get("stored", 0))
            hops.dead_letters = int(gw.get("dead_letters", 0))
            hops.scored = int(gw.get("scored", 0))
            hops.synced = int(gw.get("synced", 0))
            hops.alerts = int(gw.get("alerts", 0))
            hops.gateway_duplicates = int(gw.get("duplicates", 0))
        except httpx.HTTPError as exc:
            hops.errors.append(f"gateway: {exc}")
        try:
            cl: dict[str, Any] = self.http.get(
                f"http://127.0.0.1:{self.cloud_port}/api/v1/stats"
            ).json()
            hops.cloud = int(cl.get("readings", 0))
            hops.cloud_distinct = int(cl.get("distinct_readings", 0))
        except httpx.HTTPError as exc:
            hops.errors.append(f"cloud: {exc}")
        return hops

    def check_alive(self) -> None:
        """Raise if a service process died (its log says why)."""
        for proc in self.procs:
            if proc.returncode is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.returncode}:\n{proc.tail()}")

    def stop(self, keep: bool = False) -> None:
        """Stop the fleet, then every process, then broker and database (``keep``: its
        cluster stays on disk, linked from the work dir, and how to start it is printed)."""
        if self.trainer is not None and self.trainer.returncode is None:
            self.trainer.kill()
        if self.loop is not None:
            self.loop.close()
        if self.mlflow_ui is not None:
            stop_ui(self.mlflow_ui)
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        self.http.close()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.pg is not None:
            if keep:
                self.pg.stop()
                keep_cluster(self.pg, self.workdir)
            else:
                self.pg.cleanup()
            self.pg = None


def keep_cluster(pg: PrivatePostgres, workdir: Path) -> None:
    """Link the stopped cluster from the work dir and say how to start it again."""
    # The cluster lives in its own temp dir: the postgres user cannot enter the work dir, so
    # the command names the cluster's own path, not the link.
    kept = ", ".join(sorted(p.name for p in workdir.iterdir()))
    (workdir / "postgres").symlink_to(pg.workdir, target_is_directory=True)
    start = [*pg.as_user, str(pg.bin / "pg_ctl"), "-D", str(pg.datadir), "-o",
             f"'-p {pg.port} -k {pg.workdir} -c listen_addresses=127.0.0.1'", "-l",
             str(pg.workdir / "postgres.log"), "start"]
    step("kept", f"work dir {workdir} ({kept}); the cloud's PostgreSQL cluster {pg.workdir}, "
         f"linked as postgres/ (stopped; start it with: {' '.join(start)}; "
         f"then --dsn postgresql://postgres@127.0.0.1:{pg.port}/smaint)")


def step(stage: str, text: str) -> None:
    """Print one set-up step."""
    print(f"  {stage:<9} {text}", flush=True)


@dataclass
class Interrupts:
    """Ctrl-C/SIGTERM seen so far: the first ends the run (then drain), the second the drain."""

    run_over: threading.Event = field(default_factory=threading.Event)
    abandon: threading.Event = field(default_factory=threading.Event)

    def signal(self) -> None:
        """One more interrupt."""
        if self.run_over.is_set():
            self.abandon.set()
        self.run_over.set()


@contextlib.contextmanager
def _interruptible() -> Iterator[Interrupts]:
    interrupts = Interrupts()

    def handler(signum: int, frame: object) -> None:
        interrupts.signal()

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def run(seconds: float, devices: int, rate_hz: float, keep: bool,
        train_models: bool = True, *, retrain_after_s: float = 0.0) -> int:
    """Run the demo; returns the process exit code (0: the cloud holds all published)."""
    # Only the demo process's own warnings reach the console: the simulator's SIMULATED fault
    # announcements and connection trouble. The services log to files in the work dir.
    logging.basicConfig(level=logging.WARNING, format="  %(module)-9s %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="smaint-demo-"))
    print(f"Smart Maintenance demo (work dir {workdir})", flush=True)
    demo = Demo(workdir, devices, rate_hz, train_models=train_models,
                retrain_after_s=retrain_after_s)
    started = time.monotonic()
    ok = True
    result: dict[str, Any] | None = None
    with _interruptible() as interrupts:
        stop = interrupts.run_over
        try:
            demo.start()
            started = time.monotonic()
            print("  running   Ctrl-C to stop (the pipeline drains first; twice: at once)"
                  + (f"; ends after {seconds:g}s" if seconds else ""))
            print(LEGEND, flush=True)
            faults = 0
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if seconds and elapsed >= seconds:
                    break
                if elapsed >= FAULT_EVERY_S * (faults + 1) and (
                        not seconds or elapsed < seconds - 5):
                    demo.inject_next_fault(faults)
                    faults += 1
                demo.check_alive()
                demo.announce_models()
                if demo.loop is not None:
                    demo.loop.tick(elapsed)
                print(demo.poll().line(time.monotonic() - started), flush=True)
                stop.wait(1.0)
            summary = drain(demo, started, interrupts.abandon)
            if demo.loop is not None:
                summary["model_loop"] = demo.loop.summary()
            ok = summary["cloud_stored"] == summary["published"] and summary["duplicates"] == 0
            result = summary
        except (RuntimeError, ServiceNotReadyError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            ok = False
        finally:
            demo.stop(keep)
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
    if result is not None:  # the last line, after what --keep kept
        print(json.dumps(result), flush=True)
    return 0 if ok else 1


def drain(demo: Demo, started: float, abandon: threading.Event,
          timeout_s: float = DRAIN_TIMEOUT_S) -> dict[str, Any]:
    """Stop the devices, wait (bounded) until the cloud holds everything published, summarise."""
    fleet = demo.fleet
    if fleet is not None:
        print("  draining  devices stopped; waiting for gateway and cloud to catch up", flush=True)
        fleet.stop()
        published = fleet.published
        demo.fleet = None
    else:
        published = 0
    deadline = time.monotonic() + timeout_s
    while True:
        hops = demo.poll()
        hops.published = published
        print(hops.line(time.monotonic() - started), flush=True)
        if hops.cloud_distinct >= published and hops.stored >= published:
            break
        if abandon.is_set() or time.monotonic() >= deadline:
            print(f"  draining  {'abandoned' if abandon.is_set() else 'timed out'}: the cloud "
                  f"holds {hops.cloud_distinct} of {published} readings published; the rest "
                  "stay in the gateway's outbox (re-run with --keep to inspect it)", flush=True)
            break
        demo.check_alive()
        abandon.wait(0.5)
    return {
        "published": published,
        "gateway_stored": hops.stored,
        "cloud_stored": hops.cloud_distinct,
        "duplicates": hops.cloud - hops.cloud_distinct,
        "alerts": hops.alerts,
        "dead_letters": hops.dead_letters,
        "gateway_redeliveries_dropped": hops.gateway_duplicates,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str]) -> int:
    """``smaint demo``: options also come from DEMO_SECONDS, DEMO_DEVICES, DEMO_RATE."""
    parser = argparse.ArgumentParser(prog="smaint demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", "0")))
    parser.add_argument("--devices", type=int, default=int(os.environ.get("DEMO_DEVICES", "12")))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("DEMO_RATE", "5")))
    parser.add_argument(
        "--keep", action="store_true",
        help="keep the work dir (logs, databases): the gateway's SQLite, models, the MLflow "
             "store and the cloud's PostgreSQL cluster (stopped, linked as postgres/); the "
             "demo prints where, and how to start the cluster again")
    parser.add_argument("--no-models", dest="train_models", action="store_false",
                        help="skip training the first models (the statistical detector scores)")
    parser.add_argument(
        "--retrain-after", type=float, default=float(os.environ.get("DEMO_RETRAIN_AFTER", "45")),
        help="seconds of readings before the cloud retrains the motor model and rolls it out "
             "to the gateway (0: never)")
    args = parser.parse_args(argv)
    return run(args.seconds, args.devices, args.rate, args.keep, args.train_models,
               retrain_after_s=args.retrain_after)
