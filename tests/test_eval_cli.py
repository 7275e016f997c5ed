"""``smaint eval``: the NAB run and its results files, scoring a results folder, the labelled
sets, and the pieces they are built of (alert rule, event figures, the chain's seam)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluation import chain, cli, nab
from evaluation.alerts import anomaly_scores, episode_openings
from evaluation.events import Device, Event, LabelledSet, event_figures

REPO = Path(__file__).resolve().parents[1]
SUBSET = "realKnownCause/[mr]*"  # machine temperature (duplicated times) and two short series


def _smaint(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "smaint.cli", "eval", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture(scope="module")
def nab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("nab")
    res = _smaint("nab", "--out", str(out), "--files", SUBSET, "--detector", "deployed",
                  "--jobs", "2")
    assert res.returncode == 0, res.stderr
    assert "nab [3/3]" in res.stderr  # progress on stderr
    return out, json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_nab_writes_one_csv_per_series_with_the_same_rows_in_the_same_order(
        nab_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = nab_run
    names = nab.corpus_names(pattern=SUBSET)
    assert len(names) == 3
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv"))
    assert written == names
    for name in names:
        series = nab.load_series(name)
        with (out / name).open(newline="") as fh:
            reader = csv.reader(fh)
            assert next(reader) == ["timestamp", "value", "anomaly_score"]
            rows = list(reader)
        assert [r[0] for r in rows] == list(series.timestamps)
        assert [r[1] for r in rows] == list(series.value_text)
        scores = np.asarray([float(r[2]) for r in rows])
        assert ((scores >= 0) & (scores <= 1)).all()
        # Alert openings are exactly the rows at the fixed threshold.
        assert set(np.unique(scores[scores >= 0.5]).tolist()) <= {1.0}
    assert result["files"] == 3
    assert result["rows"] == sum(nab.load_series(n).rows for n in names)
    assert result["detector"] == "deployed"
    assert set(result["scores"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}


@pytest.mark.slow
def test_nab_score_rescores_a_results_folder_to_the_same_figures(
        nab_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    out, result = nab_run
    assert cli.main(["nab-score", "--results", str(out), "--files", SUBSET]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["scores"] == result["scores"]
    assert again["detections"] == result["detections"]


def test_nab_score_refuses_a_results_file_whose_rows_were_reordered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "realKnownCause/rogue_agent_key_hold.csv"
    series = nab.load_series(name)
    target = tmp_path / name
    target.parent.mkdir(parents=True)
    lines = [f"{t},{v},0" for t, v in zip(series.timestamps, series.value_text, strict=True)]
    lines[1], lines[2] = lines[2], lines[1]
    target.write_text("timestamp,value,anomaly_score\n" + "\n".join(lines) + "\n")
    assert cli.main(["nab-score", "--results", str(tmp_path), "--files", name]) == 2
    assert "timestamps differ" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_json_prints_every_figure_per_set_and_detector() -> None:
    res = _smaint("--json", "--sets", "cmapss_fd001,nab_system_failure", "--devices", "1")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["sets"]) == {"cmapss_fd001", "nab_system_failure"}
    for body in out["sets"].values():
        assert set(body["detectors"]) == {"deployed", "fallback", "static", "rollingz"}
        for fig in body["detectors"].values():
            assert {"precision", "recall", "f1", "lead_readings_median", "lead_hours_median",
                    "false_alerts_per_device_day", "events", "detected"} <= set(fig)
            assert fig["events"] >= 1
    assert out["sets"]["cmapss_fd001"]["devices"] == 1
    assert "eval cmapss_fd001: deployed" in res.stderr


def test_an_alert_opens_once_per_episode_and_re_arms_after_normal_readings() -> None:
    flags = [0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1]
    opened = episode_openings(flags, rearm_after=3)
    assert np.flatnonzero(opened).tolist() == [1, 10]


def test_the_anomaly_score_is_one_on_openings_and_below_one_half_elsewhere() -> None:
    scores = anomaly_scores([0.5, 3.0, np.nan, 0.9], [False, False, False, True])
    assert scores.tolist() == pytest.approx([0.245, 0.49, 0.0, 1.0])


def _device(rows: int, events: tuple[Event, ...], healthy: np.ndarray) -> Device:
    return Device(name="d", values=np.zeros((rows, 1)),
                  epoch_ms=np.arange(rows, dtype=np.int64) * 3_600_000, fit_rows=10,
                  events=events, healthy=healthy)


def test_event_figures_count_events_once_and_false_alerts_on_healthy_rows_only() -> None:
    healthy = np.zeros(100, dtype=bool)
    healthy[10:50] = True
    dev = _device(100, (Event(60, 70, 70), Event(80, 90, 90)), healthy)
    s = LabelledSet(name="t", profile="p", metrics=("value",), devices=(dev,), definition="")
    opened = np.zeros(100, dtype=bool)
    opened[[5, 20, 55, 62, 64]] = True  # fit rows, healthy, neither, event 1 twice
    fig = event_figures(s, [opened])
    assert fig["events"] == 2
    assert fig["detected"] == 1
    assert fig["false_alerts"] == 1
    assert fig["precision"] == 0.5
    assert fig["recall"] == 0.5
    assert fig["lead_readings_median"] == 8
    assert fig["lead_hours_median"] == 8.0
    # 40 healthy hourly rows are 40/24 device-days.
    assert fig["false_alerts_per_device_day"] == pytest.approx(24 / 40, abs=1e-4)


def test_the_chain_scores_every_row_and_an_unmistakable_step_opens_an_alert() -> None:
    # What the seam must carry whatever the detector: one score in [0, 1] per row, 1.0 on
    # the rows where the tracker opened an alert. (Whether the product stays quiet on the
    # noise before the step is the detector's own test, not the harness's.)
    rng = np.random.default_rng(0)
    values = 20.0 + rng.normal(0.0, 0.5, 2000)
    values[1500:] += 40.0  # a step of 80 sigma, held
    stamps = np.arange(2000, dtype=np.int64) * 60_000
    for variant in chain.VARIANTS:
        scores = chain.run_series(values, stamps, fit_rows=750, variant=variant)
        assert len(scores) == 2000
        assert ((scores >= 0) & (scores <= 1)).all()
        assert set(np.unique(scores[scores >= 0.5]).tolist()) == {1.0}
        openings = np.flatnonzero(scores == 1.0)
        assert ((openings >= 1500) & (openings < 1530)).any(), (variant, openings)
