"""Gateway benchmark: throughput against a bare subscriber, latency at 1,000 readings/s, memory.

``.venv/bin/python -m bench.edge --json`` runs, in one go, on a private Mosquitto:

1. trains the first models (``smaint cloud train-initial``) for the gateway to load;
2. creates two persistent QoS 1 sessions (the bare subscriber's and the gateway's) and
   publishes the same pre-encoded readings of 50 simulated devices (replayed motor, mill and
   turbofan data) into both, from several paho clients in their own processes;
3. ``ceiling_per_s``: a bare aiomqtt subscriber (QoS 1, persistent session, acks) that only
   ``json.loads`` each payload drains its queue; rate from its first to its last message;
4. ``readings_per_s``: the real gateway (``python -m edge run`` with the models installed:
   validated, scored, stored in SQLite, acked after commit) drains the same messages; rate
   from its ``/api/status`` ``stored`` counter, polled every 20 ms;
5. ``p99_ms``: devices publish 1,000 readings/s, each carrying its publish time in ``ts_ms``
   (``synced``: the clocks are the same machine's); a reader polls the gateway's SQLite every
   2 ms for new rows, which become visible only once committed, with their score; latency =
   time first seen - publish time (so it includes up to 2 ms of polling);
6. ``stages_ms``: where the paced readings' time went inside the gateway, p50/p95/p99 per
   reading of each stage (queue wait, decode/validate, dedupe, score, prepare, SQLite
   commit, ack; see :func:`stage_breakdown`), from the gateway's ``edge.ingest.stages`` log;
7. ``rss_mb_edge_install``: the gateway's peak resident memory (VmHWM), models loaded, at the
   end. The gateway runs from a venv holding only ``pip install -e '<repo>[edge]'`` (made once
   in var/bench-edge-venv, remade when pyproject.toml changes), as on a Pi: the dev venv's
   extras (sqlite-utils imports pandas there) are not counted. ``--dev-venv`` runs it with
   this interpreter instead (``rss_mb_dev_venv``).
8. ``rss_mb_edge_ui_install``: the same load (the queued readings again, then the paced rate)
   on a second gateway run as ``smaint gateway run`` with its web panel on, from a venv with
   only ``pip install -e '<repo>[edge,ui]'`` (var/bench-edge-ui-venv), while a headless
   Chromium tab stays signed in on a device's page (its live chart refreshing); its peak
   resident memory, against the same 200 MB ceiling (``rss_mb_ceiling``). ``--no-panel``
   skips this run.

The last line printed is one JSON object with those keys. Everything shares the same cores
(publishers, broker, subscriber or gateway), as on a gateway box.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import httpx

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port, wait_for_port
from devstack.process import ServiceProcess
from shared import topics
from shared.topics import STATUS_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION
from simulator.signals import SignalSource, make_source

REPO = Path(__file__).resolve().parents[1]
GATEWAY_ID = "gw-bench"
CEILING_ID = "bench-ceiling"
PANEL_GATEWAY_ID = "gw-bench-panel"
PROFILE_MIX = (("motor", 20), ("mill", 15), ("turbofan", 15))  # 50 devices
TARGETS = {"ratio": 0.6, "p99_ms": 50.0, "rss_mb": 200.0}
MAX_UNACKED = 2_000  # per publisher: paho stalls near 65,535 unacked QoS 1 messages


@dataclass
class Device:
    """One simulated device: its id, profile, boot id, next seq and signal source."""

    device: str
    kind: str
    boot: str
    source: SignalSource
    seq: int = 0

    def message(self, ts_ms: int) -> tuple[str, bytes]:
        """The next reading as (topic, compact JSON), as shared.codec.encode writes it."""
        body = {"v": 1, "device": self.device, "boot": self.boot, "seq": self.seq,
                "ts_ms": ts_ms, "uptime_ms": self.seq * 50, "synced": True,
                "type": self.kind, "metrics": self.source.next()}
        self.seq += 1
        return topics.telemetry(self.device), json.dumps(body, separators=(",", ":")).encode()


def fleet(seed: int = 7) -> list[Device]:
    """The 50 devices, each replaying its own stretch of its profile's data set."""
    rng = Random(seed)
    out = []
    for kind, count in PROFILE_MIX:
        for i in range(count):
            out.append(Device(f"bench-{kind}-{i:02d}", kind, secrets.token_hex(4),
                              make_source(kind, "replay", i, count, rng)))
    return out


def encode_round_robin(devices: list[Device], per_device: int) -> list[tuple[str, bytes]]:
    """Pre-encode ``per_device`` readings per device, interleaved as a live fleet sends them."""
    now = time.time_ns() // 1_000_000
    return [d.message(now) for _ in range(per_device) for d in devices]


# -- publishing ------------------------------------------------------------------------------


# The bench's publishers and subscribers log in as the devstack broker's fixture account; its
# password reaches the child processes through this variable (set in ``run``).
LOGIN_ENV = "SMAINT_BENCH_MQTT_LOGIN"


def _login() -> tuple[str, str]:
    user, _, password = os.environ[LOGIN_ENV].partition(":")
    return user, password


def _paho(port: int, client_id: str, clean: bool = True) -> Any:
    import paho.mqtt.client as mqtt  # noqa: PLC0415 - only the bench's helpers use paho
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean)
    client.max_inflight_messages_set(MAX_UNACKED)
    client.max_queued_messages_set(0)
    client.username_pw_set(*_login())
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    return client


def _publish_part(port: int, messages: list[tuple[str, bytes]], client_id: str) -> None:
    """Child process: publish at QoS 1 as fast as the broker takes them, bounded in flight."""
    client = _paho(port, client_id)
    infos = []
    for i, (topic, payload) in enumerate(messages):
        infos.append(client.publish(topic, payload, qos=1))
        if i >= MAX_UNACKED:
            infos[i - MAX_UNACKED].wait_for_publish(timeout=60)
    for info in infos[-MAX_UNACKED:]:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def publish_fast(port: int, messages: list[tuple[str, bytes]], processes: int = 3) -> float:
    """Publish all messages from ``processes`` paho clients; returns seconds taken."""
    ctx = multiprocessing.get_context("fork")  # children inherit the encoded payloads
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_publish_part,
                         args=(port, messages[i::processes], f"bench-pub-{i}"))
             for i in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"publisher {p.name} failed with exit code {p.exitcode}")
    return time.perf_counter() - t0


def create_session(port: int, client_id: str) -> None:
    """A persistent session subscribed like the gateway, so the broker queues for it."""
    done = threading.Event()
    client = _paho(port, client_id, clean=False)
    client.on_subscribe = lambda *_: done.set()
    client.subscribe([(TELEMETRY_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
    if not done.wait(10):
        raise RuntimeError(f"no SUBACK for {client_id}")
    client.disconnect()
    client.loop_stop()


def drop_session(port: int, client_id: str) -> None:
    """Connect with a clean session once, so the broker forgets the session's queue."""
    client = _paho(port, client_id, clean=True)
    client.disconnect()
    client.loop_stop()


# -- the bare subscriber ---------------------------------------------------------------------


async def _subscribe_and_count(port: int, count: int, client_id: str) -> dict[str, float]:
    import aiomqtt  # noqa: PLC0415

    n = 0
    first = last = 0.0
    user, password = _login()
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False,
                              username=user, password=password) as c:
        await c.subscribe([(TELEMETRY_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
        async for msg in c.messages:
            json.loads(msg.payload)
            n += 1
            if n == 1:
                first = time.perf_counter()
            if n >= count:
                last = time.perf_counter()
                break
    return {"messages": n, "seconds": last - first, "per_s": (n - 1) / max(last - first, 1e-9)}


def run_ceiling(port: int, count: int) -> dict[str, float]:
    """The bare subscriber in a process of its own, like the gateway; its measured rate."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.edge", "--subscriber", "--port", str(port),
         "--count", str(count)], cwd=REPO, check=True, capture_output=True, text=True,
        timeout=300)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the gateway -----------------------------------------------------------------------------


# The gateway's entry point plus the per-batch stage timings (edge.ingest's "edge.ingest.stages"
# logger, JSON lines at DEBUG) written to the file named by argv[1]. Only the standard
# library and the gateway (with argv[3] "panel": and its panel, as ``smaint gateway run``
# starts them) are imported, so the memory measured is the gateway's own.
GATEWAY_MAIN = """\
import logging, sys
sys.path.insert(0, sys.argv[2])  # the repository, as ``python -m edge`` from it would
if sys.argv[3:] == ["panel"]:  # `smaint gateway run`: the gateway with its web panel
    from smaint.gateway import main
else:
    from edge.cli import main
handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(logging.Formatter("%(message)s"))
stages = logging.getLogger("edge.ingest.stages")
stages.setLevel(logging.DEBUG)
stages.addHandler(handler)
stages.propagate = False
sys.exit(main(["run", "--log-level", "WARNING"]))
"""
EDGE_VENV = REPO / "var" / "bench-edge-venv"
EDGE_UI_VENV = REPO / "var" / "bench-edge-ui-venv"


def edge_venv(python: str = sys.executable, extras: str = "edge") -> Path:
    """A venv with only ``pip install -e '<repo>[<extras>]'``, as on a gateway; its python.

    Cached in var/bench-edge-venv (``edge,ui``: var/bench-edge-ui-venv), rebuilt when
    pyproject.toml changes (its sha256 is kept beside the venv and written only once the
    install succeeded). Editable, so that the gateway code measured is the working tree's;
    the dependencies are exactly those extras', without the dev or cloud extras (no pandas,
    scikit-learn, ...).
    """
    venv = EDGE_VENV if extras == "edge" else EDGE_UI_VENV
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    stamp = venv / "pyproject.sha256"
    py = venv / "bin" / "python"
    if stamp.is_file() and stamp.read_text().strip() == key and py.is_file():
        return py
    print(f"creating {venv} (pip install -e '.[{extras}]'; reused until pyproject.toml "
          "changes)", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    out = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e",
         f"{REPO}[{extras}]"], check=False, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"pip install -e '{REPO}[{extras}]' into {venv} failed:\n"
                           f"{out.stdout[-2000:]}{out.stderr[-4000:]}")
    stamp.write_text(key + "\n")
    return py


class GatewayProcess:
    """``python -m edge run`` in a subprocess, with its status page and memory figures."""

    def __init__(self, workdir: Path, gateway_mqtt: dict[str, str], models: Path,
                 profile: Path | None = None, python: str | Path = sys.executable, *,
                 panel_password: str | None = None) -> None:
        self.http_port = free_port()
        self.db = workdir / "gateway.db"
        self.log = workdir / "gateway.log"
        self.stages = workdir / "stages.jsonl"
        main = workdir / "gateway_main.py"
        main.write_text(GATEWAY_MAIN)
        # The gateway refuses trusted keys inside its models directory: a copy of its own.
        trust = workdir / "trust"
        trust.mkdir(exist_ok=True)
        keys = trust / "trusted_keys.txt"
        keys.write_text((models / "trusted_keys.txt").read_text())
        env = {"SMAINT_GATEWAY_GATEWAY_ID": GATEWAY_ID,
               **gateway_mqtt,
               "SMAINT_GATEWAY_STORAGE__PATH": str(self.db),
               "SMAINT_GATEWAY_HTTP__PORT": str(self.http_port),
               "SMAINT_GATEWAY_SCORING__MODELS_DIR": str(models),
               "SMAINT_GATEWAY_SCORING__TRUSTED_KEYS_FILE": str(keys),
               "SMAINT_GATEWAY_SYNC__TOKEN": ""}
        panel: list[str] = []
        if panel_password is not None:  # the panel on, as `smaint gateway run` serves it
            from ui.panel.auth import hash_password  # noqa: PLC0415 - the ui extra, only here

            env |= {"SMAINT_GATEWAY_GATEWAY_ID": PANEL_GATEWAY_ID,
                    "SMAINT_GATEWAY_PANEL__PASSWORD_HASH": hash_password(panel_password)}
            panel = ["panel"]
        # --profile: the same gateway under cProfile (slower; for finding the hot path only).
        prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.service = ServiceProcess(
            [str(python), *prof, str(main), str(self.stages), str(REPO), *panel], env, self.log,
            self.http_port, cwd=REPO, name="gateway").spawn()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=5.0)

    def status(self) -> dict[str, Any]:
        """GET /api/status."""
        data: dict[str, Any] = self.http.get("/api/status").raise_for_status().json()
        return data

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the HTTP server answers (the MQTT session may already be draining)."""
        wait_for_port(self.http_port, timeout_s=timeout_s)

    def memory_mb(self) -> dict[str, float]:
        """Peak (VmHWM) and current (VmRSS) resident memory in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.service.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in {"VmHWM", "VmRSS"}:
                fields[key] = int(value.split()[0]) / 1024
        return fields

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop within 15 s."""
        self.http.close()
        self.service.stop()


def measure_drain(gw: GatewayProcess, total: int, timeout_s: float = 240.0) -> dict[str, float]:
    """Poll /api/status every 20 ms while the gateway drains ``total`` queued readings."""
    deadline = time.monotonic() + timeout_s
    start: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        try:
            st = gw.status()
        except httpx.HTTPError:
            time.sleep(0.02)
            continue
        now = time.perf_counter()
        if start is None and st["received"] > 0:
            start = (now, int(st["stored"]))
        if start is not None and st["stored"] >= total:
            seconds = now - start[0]
            return {"readings": st["stored"] - start[1], "seconds": seconds,
                    "per_s": (st["stored"] - start[1]) / seconds, "scored": st["scored"]}
        time.sleep(0.02)
    raise TimeoutError(f"the gateway stored {gw.status()['stored']} of {total} in {timeout_s} s")


# -- latency at a steady rate ----------------------------------------------------------------


def _paced_publisher(port: int, devices: list[Device], rate: int, seconds: float) -> None:
    """Child process: ``rate`` readings/s across the fleet, publish time in ts_ms."""
    client = _paho(port, "bench-paced")
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    start = time.perf_counter()
    i = 0
    for k in range(round(seconds / tick)):
        for _ in range(per_tick):
            dev = devices[i % len(devices)]
            i += 1
            topic, payload = dev.message(time.time_ns() // 1_000_000)
            client.publish(topic, payload, qos=1)
        pause = start + (k + 1) * tick - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


def measure_latency(port: int, db: Path, devices: list[Device], rate: int,
                    seconds: float) -> dict[str, float]:
    """Publish at ``rate`` for ``seconds``; latency of each row from publish to committed."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (last,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()
    ctx = multiprocessing.get_context("fork")
    pub = ctx.Process(target=_paced_publisher, args=(port, devices, rate, seconds))
    expected = round(seconds / 0.01) * max(1, round(rate * 0.01))
    latencies: list[float] = []
    scorers: dict[str, int] = {}
    pub.start()
    deadline = time.monotonic() + seconds + 30
    while len(latencies) < expected and time.monotonic() < deadline:
        rows = conn.execute("SELECT rowid, device_ts_ms, scorer FROM readings WHERE rowid > ? "
                            "ORDER BY rowid", (last,)).fetchall()
        seen = time.time_ns() / 1_000_000
        for rowid, sent_ms, scorer in rows:
            last = rowid
            latencies.append(seen - sent_ms)
            scorers[scorer] = scorers.get(scorer, 0) + 1
        time.sleep(0.002)
    pub.join()
    conn.close()
    if len(latencies) < expected:
        raise RuntimeError(f"only {len(latencies)} of {expected} paced readings were stored")
    latencies.sort()
    return {"readings": len(latencies), "rate_per_s": rate,
            "p50_ms": statistics.median(latencies),
            "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
            "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
            "max_ms": latencies[-1], "scorers": scorers}  # type: ignore[dict-item]


STAGES = ("queue_wait", "decode", "dedupe", "score", "prepare", "commit", "ack")


def _quantiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 (nearest rank) of a non-empty list, rounded to 0.01 ms."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return {f"p{q}": round(ordered[round(q / 100 * last)], 2) for q in (50, 95, 99)}


def stage_breakdown(path: Path, since: float, until: float) -> dict[str, Any]:
    """Per-reading p50/p95/p99 of each ingest stage, from batches committed in [since, until].

    Every reading of a batch waited its own time in the queue (``queue_wait``: arrival on
    the socket to the batch's start, micro-batch gathering included) and then the batch's
    decode (validation), dedupe (redelivery lookup), score, prepare (re-timing, alerts,
    rows), commit (the SQLite transaction) and ack (handing the PUBACKs to paho, which sends
    them on the event loop's next turn); ``in_gateway`` is arrival to acked. Publish to arrival
    (publisher, broker, socket) and the bench's 2 ms polling are the rest of ``p50_ms`` etc.
    """
    per: dict[str, list[float]] = {name: [] for name in (*STAGES, "in_gateway")}
    sizes: list[float] = []
    for line in path.read_text().splitlines():
        batch = json.loads(line)
        if not since <= batch["at"] <= until:
            continue
        sizes.append(batch["n"])
        for wait in batch["queue_wait_ms"]:
            per["queue_wait"].append(wait)
            per["in_gateway"].append(wait + batch["batch_ms"])
            for name in STAGES[1:]:
                per[name].append(batch[f"{name}_ms"])
    if not sizes:
        return {}
    out: dict[str, Any] = {name: _quantiles(values) for name, values in per.items()}
    out["batch_size"] = _quantiles(sizes)
    out["batches"] = len(sizes)
    return out


# -- the run -----------------------------------------------------------------------------------


def train_models(out: Path) -> subprocess.Popen[bytes]:
    """Start ``smaint cloud train-initial`` into ``out`` (what the demo does at set-up)."""
    return subprocess.Popen(
        [sys.executable, "-m", "smaint.cli", "cloud", "train-initial", "--out", str(out),
         "--key", str(out.parent / "signing.key")], cwd=REPO, stdout=subprocess.PIPE)


class PanelTab:
    """A headless Chromium tab signed in to the panel and left on a device's page (its live
    chart refreshing) while the gateway works; opened from a thread, as the drain runs."""

    def __init__(self, base: str, password: str, device: str) -> None:
        from bench.console_render import chromium  # noqa: PLC0415 - selenium: the dev venv

        self.base, self.password, self.device = base, password, device
        self.driver = chromium()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._open, daemon=True)

    def _open(self) -> None:
        from selenium.webdriver.common.by import By  # noqa: PLC0415
        from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

        d = self.driver
        try:
            wait = WebDriverWait(d, 60, poll_frequency=0.1)
            d.get(f"{self.base}/login")
            wait.until(lambda drv: drv.execute_script("return window.did_handshake === true"))
            d.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(self.password)
            d.find_element(By.XPATH, "//button[.//span[normalize-space()='Sign in']]").click()
            wait.until(lambda drv: "/login" not in drv.current_url)
            # The device appears once the drain reached its first reading: ask until it has.
            wait.until(self._device_page_drawn, "the device page never drew")
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by ready()
            self.error = exc

    def _device_page_drawn(self, d: Any) -> bool:
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        if "points drawn" in d.find_element(By.TAG_NAME, "body").text:
            return True
        if not d.current_url.endswith(f"/devices/{self.device}") or "No device" in d.find_element(
                By.TAG_NAME, "body").text:
            d.get(f"{self.base}/devices/{self.device}")
        return False

    def newest(self) -> str:
        """The chart's "points drawn; newest reading ..." line as the tab shows it now."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        return str(self.driver.find_element(
            By.XPATH, "//*[contains(text(), 'points drawn; newest reading')]").text)

    def ready(self) -> None:
        """Wait until the tab shows the device's chart; raise what went wrong if it did not."""
        self.thread.join(timeout=120)
        if self.error is not None or self.thread.is_alive():
            raise RuntimeError(f"the panel tab never showed {self.device}: {self.error}")

    def close(self) -> None:
        """Quit the browser."""
        self.driver.quit()


def run_with_panel(port: int, gateway_mqtt: dict[str, str], workdir: Path, models: Path, *,
                   devices: list[Device],
                   messages: list[tuple[str, bytes]], rate: int, latency_s: float,
                   python: Path) -> dict[str, Any]:
    """The same load (the queued readings, then the paced rate) on a second gateway run as
    ``smaint gateway run`` with its panel, one browser tab on a device page throughout."""
    create_session(port, PANEL_GATEWAY_ID)
    publish_fast(port, messages)
    (workdir / "panel").mkdir()
    password = secrets.token_urlsafe(12)
    gw = GatewayProcess(workdir / "panel", gateway_mqtt, models, python=python,
                        panel_password=password)
    tab: PanelTab | None = None
    try:
        gw.wait_ready()
        tab = PanelTab(f"http://127.0.0.1:{gw.http_port}", password, devices[0].device)
        tab.thread.start()
        drain = measure_drain(gw, len(messages))
        tab.ready()
        before = tab.newest()
        latency = measure_latency(port, gw.db, devices, rate, latency_s)
        if tab.newest() == before:
            raise RuntimeError("the panel tab's chart did not follow the paced readings")
        memory = gw.memory_mb()
    finally:
        if tab is not None:
            tab.close()
        gw.stop()
        drop_session(port, PANEL_GATEWAY_ID)
    return {"peak_mb": memory["VmHWM"], "now_mb": memory["VmRSS"], "per_s": drain["per_s"],
            "p99_ms": latency["p99_ms"]}


def run(per_device: int, latency_s: float, rate: int, workdir: Path,
        profile: Path | None = None, *, dev_venv: bool = False,
        panel: bool = True) -> dict[str, Any]:
    """The whole benchmark; returns the result object."""
    devices = fleet()
    models = workdir / "models"
    trainer = train_models(models)
    python = Path(sys.executable) if dev_venv else edge_venv()
    ui_python = Path(sys.executable) if dev_venv else edge_venv(extras="edge,ui")
    with PrivateMosquitto(workdir / "mqtt") as broker:
        os.environ[LOGIN_ENV] = ":".join(broker.fixture_login())
        create_session(broker.port, CEILING_ID)
        create_session(broker.port, GATEWAY_ID)
        messages = encode_round_robin(devices, per_device)
        publish_s = publish_fast(broker.port, messages)
        out, _ = trainer.communicate(timeout=300)
        if trainer.returncode != 0:
            raise RuntimeError("training the initial models failed")
        trained = json.loads(out.decode().strip().splitlines()[-1])
        ceiling = run_ceiling(broker.port, len(messages))
        drop_session(broker.port, CEILING_ID)
        gw = GatewayProcess(workdir, broker.gateway_env(), models, profile, python)
        try:
            gw.wait_ready()
            drain = measure_drain(gw, len(messages))
            status = gw.status()
            paced = time.time()
            latency = measure_latency(broker.port, gw.db, devices, rate, latency_s)
            memory = gw.memory_mb()
            final = gw.status()
        finally:
            gw.stop()
        drop_session(broker.port, GATEWAY_ID)
        with_panel = run_with_panel(
            broker.port, broker.gateway_env(), workdir, models, devices=devices,
            messages=messages, rate=rate, latency_s=latency_s, python=ui_python,
        ) if panel else None
    ratio = drain["per_s"] / ceiling["per_s"]
    rss_key = "rss_mb_dev_venv" if dev_venv else "rss_mb_edge_install"
    result = {
        "ceiling_per_s": round(ceiling["per_s"]),
        "readings_per_s": round(drain["per_s"]),
        "ratio": round(ratio, 3),
        "p99_ms": round(latency["p99_ms"], 1),
        rss_key: round(memory["VmHWM"], 1),
        "p50_ms": round(latency["p50_ms"], 1),
        "p95_ms": round(latency["p95_ms"], 1),
        "max_ms": round(latency["max_ms"], 1),
        "devices": len(devices),
        "throughput_readings": len(messages),
        "latency_readings": latency["readings"],
        "latency_rate_per_s": rate,
        "latency_scorers": latency["scorers"],
        "models": status.get("models", {}),
        "trained": trained["models"],
        "gateway_duplicates": final["duplicates"],
        "gateway_dead_letters": final["dead_letters"],
        "publish_s": round(publish_s, 1),
        "cpus": os.cpu_count(),
        "gateway_python": str(python),
        # Per-reading stage quantiles (ms) over the paced phase: where the latency goes.
        "stages_ms": stage_breakdown(gw.stages, paced, time.time()),
        "rss_mb_ceiling": TARGETS["rss_mb"],
    }
    rss_keys = [rss_key]
    if with_panel is not None:
        ui_key = "rss_mb_dev_venv_with_panel" if dev_venv else "rss_mb_edge_ui_install"
        rss_keys.append(ui_key)
        result |= {
            ui_key: round(with_panel["peak_mb"], 1),
            "rss_mb_with_panel_at_end": round(with_panel["now_mb"], 1),
            "readings_per_s_with_panel": round(with_panel["per_s"]),
            "p99_ms_with_panel": round(with_panel["p99_ms"], 1),
            "panel_python": str(ui_python),
        }
    result["targets_met"] = (result["ratio"] >= TARGETS["ratio"]
                             and result["p99_ms"] <= TARGETS["p99_ms"]
                             and all(result[k] <= TARGETS["rss_mb"] for k in rss_keys))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.edge``."""
    p = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print only the JSON result line")
    p.add_argument("--per-device", type=int, default=1000, help="queued readings per device")
    p.add_argument("--latency-seconds", type=float, default=15.0)
    p.add_argument("--rate", type=int, default=1000, help="readings/s in the latency phase")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, database)")
    p.add_argument("--profile", type=Path, help="run the gateway under cProfile, stats to FILE")
    p.add_argument("--dev-venv", action="store_true",
                   help="run the gateway with this interpreter instead of the [edge]-only venv")
    p.add_argument("--no-panel", dest="panel", action="store_false",
                   help="skip the second gateway run with its web panel (.[edge,ui] venv)")
    p.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.subscriber:
        print(json.dumps(asyncio.run(_subscribe_and_count(args.port, args.count, CEILING_ID))))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="smaint-bench-"))
    try:
        result = run(args.per_device, args.latency_seconds, args.rate, workdir, args.profile,
                     dev_venv=args.dev_venv, panel=args.panel)
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
