"""The gateway's install stays Pi-light: no scikit-learn, pandas or mlflow in `.[edge]`."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"scikit-learn", "pandas", "mlflow", "scipy", "mlflow-skinny", "pyarrow"}


def _resolve(extra: str, tmp_path: Path) -> set[str]:
    """Names pip would install for ``.[extra]`` into an empty environment (resolution only)."""
    report = tmp_path / f"{extra}.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", str(report), f"{REPO}[{extra}]"],
        check=True, capture_output=True, text=True, timeout=600,
    )
    data = json.loads(report.read_text())
    return {item["metadata"]["name"].lower() for item in data["install"]}


@pytest.mark.slow
def test_edge_extra_installs_no_heavy_ml_stack(tmp_path: Path) -> None:
    names = _resolve("edge", tmp_path)
    assert "onnxruntime" in names
    assert "aiomqtt" in names
    assert not names & HEAVY, f"edge install would pull in {sorted(names & HEAVY)}"


@pytest.mark.slow
def test_cloud_extra_does_install_the_training_stack(tmp_path: Path) -> None:
    # The check above is only meaningful if the resolver does see these packages elsewhere.
    names = _resolve("cloud", tmp_path)
    assert {"scikit-learn", "mlflow"} <= names


def test_gateway_modules_do_not_import_cloud_or_training_libraries() -> None:
    code = (
        "import sys, edge.service, edge.cli\n"
        "bad = sorted(m for m in ('sklearn', 'pandas', 'mlflow', 'psycopg', 'fastapi')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    assert out == ""


@pytest.mark.slow
def test_the_product_wheel_carries_no_replay_data_and_the_simulator_wheel_does(
    tmp_path: Path,
) -> None:
    """A gateway installs the product's wheel: the 4.6 MB of replay data ship only with the
    simulator's own distribution (the demo, tests and benchmarks install it)."""
    for project in (REPO, REPO / "simulator"):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "-w", str(tmp_path), str(project)],
            check=True, capture_output=True, text=True, timeout=600,
        )
    wheels = {w.name.split("-")[0]: w for w in tmp_path.glob("*.whl")}
    with zipfile.ZipFile(wheels["smart_maintenance"]) as product:
        names = product.namelist()
    assert any(n.startswith("edge/") for n in names)
    assert any(n.startswith("edge/db/migrations/") and n.endswith(".sql") for n in names)
    data = [n for n in names if n.endswith((".csv", ".txt")) and "dist-info" not in n]
    assert data == [], f"the product wheel carries data files: {data[:5]}"
    assert not any(n.startswith("simulator/") for n in names)
    with zipfile.ZipFile(wheels["smart_maintenance_simulator"]) as sim:
        sim_names = sim.namelist()
    assert "simulator/data/ai4i2020.csv" in sim_names
    assert "simulator/data/LICENSE-NAB.txt" in sim_names
