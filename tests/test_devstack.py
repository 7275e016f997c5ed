"""The private services the tests and the demo stand on really start, serve and stop."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest

from devstack.mosquitto import PrivateMosquitto
from devstack.postgres import PrivatePostgres
from tests.fixtures.docs import where_to_look


def test_postgres_database_is_usable(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_database(), 1 + 1").fetchone()
    assert row is not None
    assert row[0].startswith("t_")
    assert row[1] == 2


def test_mosquitto_stops_and_frees_port() -> None:
    b = PrivateMosquitto().start()
    port = b.port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    b.cleanup()
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _demo_until(args: list[str], ready: re.Pattern[str], timeout_s: float = 180,
                during: Callable[[list[str]], None] | None = None) -> tuple[int, list[str]]:
    """Run ``smaint demo args``, press Ctrl-C once a line matches ``ready`` (and ``during``,
    given the lines so far, returned); (rc, lines)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "smaint.cli", "demo", "--seconds", "600", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=timeout_s)
            assert line is not None, f"demo ended before {ready.pattern!r}:\n" + "\n".join(seen)
            seen.append(line)
            if ready.search(line):
                break
        if during is not None:
            during(seen)
        proc.send_signal(signal.SIGINT)
        while (line := lines.get(timeout=180)) is not None:
            seen.append(line)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    print("\n".join(seen))  # shown by pytest -s / on failure
    return rc, seen


def _printed(seen: list[str], pattern: str) -> str:
    """The first group of the first printed line matching ``pattern``."""
    for line in seen:
        if found := re.search(pattern, line):
            return found.group(1)
    raise AssertionError(f"the demo never printed {pattern!r}:\n" + "\n".join(seen))


def _first_five_minutes(seen: list[str]) -> None:
    """What a new user does first: add an API key with the printed database address, then
    open every address README.md's "Where to look" names, as written."""
    dsn = _printed(seen, r"cloud db +(postgresql://\S+)")
    added = subprocess.run([sys.executable, "-m", "smaint", "cloud", "user", "add", "newcomer",
                            "--role", "viewer", "--dsn", dsn],
                           capture_output=True, text=True, check=False)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    ports = {"cloud": _printed(seen, r"cloud +API http://127\.0\.0\.1:(\d+)/docs"),
             "gateway": _printed(seen, r"panel +http://127\.0\.0\.1:(\d+)/")}
    if any(re.search(r"mlflow +UI", line) for line in seen):  # a demo with models
        ports["mlflow"] = _printed(seen, r"mlflow +UI http://127\.0\.0\.1:(\d+)")
    opened: list[str] = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=20,
                      follow_redirects=True) as http:
        for service, path in where_to_look():
            if service not in ports:  # MLflow runs only with models (the slow test's demo)
                continue
            answer = http.get(f"http://127.0.0.1:{ports[service]}{path}")
            assert answer.status_code == 200, f"README's {service} {path}: {answer.text[:300]}"
            if path.startswith("/api/v1/readings"):  # recent data shows, as the user asks
                body = answer.json()
                assert body.get("readings") or body.get("buckets"), f"{path}: {body}"
            opened.append(path)
    # Every service the README names was reached (MLflow's only when the demo trains).
    assert {service for service, _ in where_to_look()} - set(ports) <= {"mlflow"}
    assert len(opened) >= 15, opened


def test_demo_ctrl_c_drains_and_exits_0_with_nothing_lost() -> None:
    """SIGINT mid-run: devices stop, the pipeline drains, the summary's counts agree, rc 0;
    meanwhile the README's addresses and first command work; --keep keeps what it says."""
    # Ctrl-C once a progress line shows readings in the cloud, and the README was tried.
    rc, seen = _demo_until(["--devices", "2", "--rate", "5", "--no-models", "--keep"],
                           re.compile(r"-> cloud\s+(\d\d+) \|"), during=_first_five_minutes)
    output = "\n".join(seen)
    workdir = Path(_printed(seen, r"work dir (/\S+)\)"))
    try:
        _kept(workdir, seen)
    finally:
        if (workdir / "postgres").exists():
            shutil.rmtree((workdir / "postgres").resolve(), ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, output
    summary = json.loads(seen[-1])
    assert summary["published"] >= 10
    assert summary["cloud_stored"] == summary["gateway_stored"] == summary["published"], output
    assert summary["duplicates"] == 0
    assert sum("legend" in line for line in seen) == 1  # explained once, not per line
    # ... the two counters that otherwise look wrong: received > published, scored < stored.
    assert re.search(r"legend +received counts device status messages", output), output
    assert "scored lags stored by each device's warm-up" in output
    # Both screens are up and their addresses printed, each with a way in.
    assert any(re.search(r"console +http://127\.0\.0\.1:\d+/ \(sign in with the admin key \S+\)",
                         line) for line in seen), output
    assert any(re.search(r"panel +http://127\.0\.0\.1:\d+/ \(password: \S+\)", line)
               for line in seen), output


@pytest.mark.slow
def test_demo_retrains_in_the_cloud_and_the_gateway_runs_it_over_the_air() -> None:
    """The demo's model loop: retrain -> promoted -> rollout -> running on gw-demo, reported."""
    rc, seen = _demo_until(["--devices", "3", "--rate", "10", "--retrain-after", "30"],
                           re.compile(r"motor-\d+ running on gw-demo|training failed|not promoted|"
                                      r"rolled_back|left no MLflow run"), timeout_s=240,
                           during=_first_five_minutes)  # the README's MLflow addresses too
    output = "\n".join(seen)
    assert rc == 0, output
    assert any(re.search(r"mlflow +UI http://127\.0\.0\.1:\d+", line) for line in seen)
    assert any(re.search(r"model motor-\d+ .*promoted champion; rolling out to gw-demo", line)
               for line in seen), output
    # The first models reach the gateway over the air too, not by copying files.
    assert re.search(r"motor-initial-\d+ running on gw-demo over the air", output), output
    loop = json.loads(seen[-1])["model_loop"]
    assert loop["state"] == "running", output
    assert loop["gate"] == "promoted"
    assert loop["model_version"].startswith("motor-")
    assert f"{loop['model_version']} running on gw-demo over the air" in output
    assert loop["promote_to_running_s"] > 0


def _kept(workdir: Path, seen: list[str]) -> None:
    """--keep kept the logs and both databases, and the cluster starts with what it printed."""
    assert (workdir / "gateway.db").stat().st_size > 0
    assert {"cloud.log", "gateway.log"} <= {p.name for p in workdir.iterdir()}
    start = _printed(seen, r"start it with: (.+?); then")
    dsn = _printed(seen, r"then --dsn (postgresql://\S+)\)")
    subprocess.run(["bash", "-c", start], check=True, capture_output=True)
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM users WHERE name = 'newcomer'").fetchone()
        assert row == (1,)
    finally:
        port = int(re.findall(r"-p (\d+)", start)[0])
        PrivatePostgres((workdir / "postgres").resolve(), port=port).stop()
