"""Device explorer render benchmark: ``.venv/bin/python -m bench.console_render --json``.

A private PostgreSQL gets one motor with exactly 1,000 readings in its latest hour, uploaded
through the cloud's real ingest; ``python -m smaint cloud serve`` serves the API with its
console; Debian's headless Chromium signs in and opens the device explorer on that motor.

- ``explorer_ms``: navigation start to the explorer's chart drawn with the 1,000 raw readings
  (ECharts' ``finished`` event, which the page marks with ``performance.mark``). It includes
  the page's own work: the console fetches the rollup buckets and the raw readings from the
  API, builds the chart and sends the page; the browser loads NiceGUI and draws.
- ``ceiling_ms``: the same measure for a bare page that loads the very same ECharts build
  (NiceGUI's, from the installed package) from a local static server and draws the very same
  options (the explorer's, for the same 1,000 readings): what drawing them costs at least.

The two alternate for ``--runs`` runs each; medians, spreads and every run are reported. The
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nicegui
import psycopg
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cloud.access.gateway_tokens import create_gateway
from cloud.access.users import create_user
from cloud.db.migrate import migrate
from cloud.ingest.batch import apply_batch
from devstack.ports import free_port
from devstack.postgres import PrivatePostgres
from devstack.process import ServiceProcess
from shared.schemas import Reading, SyncBatch
from ui.console.explorer_data import View, chart_options

DEVICE, METRIC, POINTS = "bench-motor-001", "temperature_c", 1000
STEP_MS = 3600  # 1,000 readings 3.6 s apart: all in the explorer's "latest hour" range
TARGET_MS = 1000.0  # the target for 1,000 readings
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ECHART_DIST = Path(nicegui.__file__).parent / "elements" / "echart" / "dist"
_FINISHED = "return performance.getEntriesByName(arguments[0]).map(e => e.startTime)"


def readings(end_ms: int) -> list[Reading]:
    """The motor's 1,000 readings ending at ``end_ms``."""
    out = []
    for i in range(POINTS):
        ts = end_ms - (POINTS - 1 - i) * STEP_MS
        out.append(Reading(
            device=DEVICE, boot="be4c0001", seq=i, type="motor", ts_ms=ts, device_ts_ms=ts,
            received_ms=ts + 15, metrics={"temperature_c": 50 + 5 * ((i % 60) / 60),
                                          "vibration_rms_g": 0.5, "current_a": 11.0},
            score=0.2, scorer="stat", anomalous=False))
    return out


def seed(dsn: str) -> tuple[str, list[Reading]]:
    """Gateway, a viewer and the readings; (the viewer's key, the readings)."""
    migrate(dsn)
    rows = readings(int(time.time() * 1000) - 2000)
    with psycopg.connect(dsn) as conn:
        create_gateway(conn, "bench-gw")
        key = create_user(conn, "bench-viewer", "viewer").key
        apply_batch(conn, SyncBatch(gateway="bench-gw", batch_seq=1, created_ms=rows[-1].ts_ms,
                                    readings=rows), "bench-gw")
    return key, rows


def bare_page(folder: Path, rows: list[Reading]) -> None:
    """The ceiling: ECharts alone drawing the explorer's options for the same readings."""
    last = datetime.fromtimestamp(rows[-1].ts_ms / 1000, UTC) + timedelta(seconds=1)
    view = View(DEVICE, METRIC, last - timedelta(hours=1), last, "raw",
                readings=[r.model_dump() | {"gateway": "bench-gw"} for r in rows])
    shutil.copytree(ECHART_DIST, folder / "echart")
    (folder / "bare.html").write_text(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>bare echarts</title></head>
<body><div id="chart" style="width: 1200px; height: 480px"></div>
<script type="module">
import {{ echarts }} from "./echart/index.js";
const chart = echarts.init(document.getElementById("chart"));
chart.on("finished", () => performance.mark("bare-chart-finished"));
chart.setOption({json.dumps(chart_options(view))});
window.benchChart = chart;
</script></body></html>
""")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """No access log on the benchmark's output."""


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free loopback port; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium() -> webdriver.Chrome:
    """Debian's headless Chromium (the driver's path given: no download attempted)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1440,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))


def finished_ms(d: webdriver.Chrome, url: str, mark: str, points_js: str) -> float:
    """Open ``url``; ms from navigation start to the first ``mark`` with all points drawn."""
    d.get(url)
    wait = WebDriverWait(d, 30, poll_frequency=0.05)
    wait.until(lambda drv: drv.execute_script(_FINISHED, mark), f"no {mark} on {url}")
    points = d.execute_script(points_js)
    if points != POINTS:
        raise RuntimeError(f"{url} drew {points} points, not {POINTS}")
    return float(d.execute_script(_FINISHED, mark)[0])


_EXPLORER_POINTS = ("const el = document.querySelector('[data-marker~=explorer-chart]');"
                    "return getElement(el.id.slice(1)).chart.getOption().series[0].data.length;")
_BARE_POINTS = "return window.benchChart.getOption().series[0].data.length;"


def sign_in(d: webdriver.Chrome, base: str, key: str) -> None:
    """Sign in on the console's page."""
    d.get(f"{base}/login")
    wait = WebDriverWait(d, 30, poll_frequency=0.05)
    wait.until(lambda drv: drv.execute_script("return window.did_handshake === true"))
    d.find_element(By.CSS_SELECTOR, "[data-marker~=api-key]").send_keys(key)
    d.find_element(By.CSS_SELECTOR, "[data-marker~=sign-in]").click()
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "[data-marker~=whoami]"))


def summary(runs: list[float]) -> dict[str, Any]:
    """Median, spread and every run, in ms."""
    return {"median": round(statistics.median(runs), 1), "min": round(min(runs), 1),
            "max": round(max(runs), 1), "runs": [round(r, 1) for r in runs]}


def main() -> int:
    """Run the benchmark; print one JSON line last."""
    parser = argparse.ArgumentParser(prog="python -m bench.console_render")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument("--runs", type=int, default=7, help="page loads of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smaint-console-bench-") as tmp, \
            PrivatePostgres() as pg:
        work = Path(tmp)
        key, rows = seed(pg.dsn)
        bare_page(work / "static", rows)
        port = free_port()
        cloud = ServiceProcess(["-m", "smaint", "cloud", "serve"], env={
            "SMAINT_CLOUD_DB__DSN": pg.dsn, "SMAINT_CLOUD_API__PORT": str(port),
            "SMAINT_CLOUD_JOBS__WORKER_ENABLED": "false",
            "SMAINT_CLOUD_TRAINING__DATA_DIR": str(work / "training"),
            "SMAINT_CLOUD_ARTIFACTS__LOCAL_ROOT": str(work / "artifacts"),
        }, log=work / "cloud.log", port=port, cwd=work, name="cloud with console").start(60)
        base = f"http://127.0.0.1:{port}"
        explorer_url = f"{base}/explorer?device={DEVICE}&metric={METRIC}"
        d = chromium()
        try:
            sign_in(d, base, key)
            with static_server(work / "static") as static:
                finished_ms(d, explorer_url, "explorer-chart-finished", _EXPLORER_POINTS)
                finished_ms(d, f"{static}/bare.html", "bare-chart-finished", _BARE_POINTS)
                explorer, bare = [], []  # after one warm-up load of each
                for _ in range(args.runs):
                    explorer.append(finished_ms(d, explorer_url, "explorer-chart-finished",
                                                _EXPLORER_POINTS))
                    bare.append(finished_ms(d, f"{static}/bare.html", "bare-chart-finished",
                                            _BARE_POINTS))
        finally:
            d.quit()
            cloud.stop()
    result: dict[str, Any] = {
        "points": POINTS, "target_ms": TARGET_MS, "explorer_ms": summary(explorer),
        "ceiling_ms": summary(bare),
        "explorer_over_ceiling": round(statistics.median(explorer) / statistics.median(bare), 2),
        "under_target": statistics.median(explorer) < TARGET_MS,
    }
    if not args.json:
        print(f"explorer: median {result['explorer_ms']['median']} ms for {POINTS} readings "
              f"(bare ECharts: {result['ceiling_ms']['median']} ms)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
