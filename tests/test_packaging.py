"""The gateway's install stays Pi-light: no scikit-learn, pandas or mlflow in `.[edge]`."""

from __future__ import annotations

import json
import subprocess
import sys
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
