"""The private services the tests and the demo stand on really start, serve and stop."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from typing import IO

import psycopg

from devstack.mosquitto import PrivateMosquitto


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


def test_demo_ctrl_c_drains_and_exits_0_with_nothing_lost() -> None:
    """SIGINT mid-run: devices stop, the pipeline drains, the summary's counts agree, rc 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "smaint.cli", "demo", "--seconds", "600", "--devices", "2",
         "--rate", "5", "--no-models"],
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
        # Wait for a progress line that shows readings published, then press Ctrl-C.
        while True:
            line = lines.get(timeout=180)
            assert line is not None, "demo ended before publishing:\n" + "\n".join(seen)
            seen.append(line)
            match = re.search(r"published\s+(\d+) ->", line)
            if match and int(match.group(1)) >= 10:
                break
        proc.send_signal(signal.SIGINT)
        while (line := lines.get(timeout=180)) is not None:
            seen.append(line)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    output = "\n".join(seen)
    print(output)  # shown by pytest -s / on failure
    assert rc == 0, output
    summary = json.loads(seen[-1])
    assert summary["published"] >= 10
    assert summary["cloud_stored"] == summary["gateway_stored"] == summary["published"], output
    assert summary["duplicates"] == 0
    assert sum("legend" in line for line in seen) == 1  # explained once, not per line
