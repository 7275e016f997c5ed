"""The harness's NAB scorer: NAB's rules on tiny series, and NAB's own published figures.

The strong check: windowedGaussian, reimplemented from NAB's description and run over all
58 files, scored at the published per-file thresholds, reproduces every published per-file
score and row count and the three normalised corpus scores of final_results.json.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import baselines, nab
from evaluation.nab_scoring import (
    PROFILES,
    RowWeights,
    normalised,
    read_published,
    row_weights,
    score_corpus,
    score_file,
    sweep,
)

STANDARD = PROFILES["standard"]
LOW_FN = PROFILES["reward_low_FN_rate"]
RESULTS = nab.BUNDLED / "results"
FINAL = json.loads((RESULTS / "final_results.json").read_text())


def _det(n: int, *rows: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(rows)] = True
    return out


# One 100-row file, probation 10 rows, one window on rows 40..59 (width 20).
W = row_weights(100, [(40, 59)], probation=10)


def test_a_detection_on_the_left_edge_of_a_window_earns_a_tp() -> None:
    assert score_file(W, _det(100, 40), STANDARD).score == pytest.approx(1.0)


def test_a_later_detection_in_the_window_earns_less_and_the_right_edge_about_nothing() -> None:
    middle = score_file(W, _det(100, 50), STANDARD).score
    right = score_file(W, _det(100, 59), STANDARD).score
    assert 0.5 < middle < 1.0
    assert 0.0 < right < 0.15


def test_a_missed_window_costs_a_fn() -> None:
    assert score_file(W, _det(100), STANDARD).score == pytest.approx(-1.0)
    assert score_file(W, _det(100), LOW_FN).score == pytest.approx(-2.0)


def test_a_false_positive_before_any_window_costs_the_full_a_fp() -> None:
    # Window still missed (-1) plus one early false positive (-0.11).
    assert score_file(W, _det(100, 20), STANDARD).score == pytest.approx(-1.11)
    assert score_file(W, _det(100, 20), PROFILES["reward_low_FP_rate"]).score == (
        pytest.approx(-1.22))


def test_a_false_positive_is_cheap_just_after_a_window_and_full_price_far_after() -> None:
    tp = score_file(W, _det(100, 40), STANDARD).score
    just_after = score_file(W, _det(100, 40, 60), STANDARD).score - tp
    far_after = score_file(row_weights(200, [(40, 59)], 10), _det(200, 40, 199),
                           STANDARD).score - tp
    assert -0.11 < just_after < 0.0
    assert just_after > -0.02
    assert far_after == pytest.approx(-0.11)


def test_probationary_rows_are_ignored() -> None:
    assert score_file(W, _det(100, 0, 5, 9), STANDARD).score == pytest.approx(-1.0)
    assert score_file(W, _det(100, 9), STANDARD).fp == 0
    assert score_file(W, _det(100, 10), STANDARD).fp == 1


def test_only_the_first_detection_in_a_window_counts() -> None:
    first = score_file(W, _det(100, 45), STANDARD).score
    assert score_file(W, _det(100, 45, 46, 50, 59), STANDARD).score == pytest.approx(first)


def test_a_window_inside_probation_is_neither_detected_nor_missed() -> None:
    w = row_weights(100, [(2, 5), (40, 59)], probation=10)
    assert w.windows == 1
    assert score_file(w, _det(100, 40), STANDARD).score == pytest.approx(1.0)


def test_null_scores_zero_and_perfect_one_hundred() -> None:
    files: dict[str, tuple[RowWeights, np.ndarray]] = {
        "a": (W, np.zeros(100)),
        "b": (row_weights(50, [(20, 29)], 5), np.zeros(50)),
    }
    assert score_corpus(files, 0.5, STANDARD).normalised == pytest.approx(0.0)
    files["a"][1][40] = 1.0
    files["b"][1][20] = 1.0
    assert score_corpus(files, 0.5, STANDARD).normalised == pytest.approx(100.0)
    assert normalised(-2.0, 2, LOW_FN) == pytest.approx(100 / 3)


def test_the_sweep_finds_the_threshold_that_separates_hits_from_noise() -> None:
    scores = np.full(100, 0.2)
    scores[40] = 0.9  # a hit on the left edge
    scores[80] = 0.7  # a false positive
    threshold, best = sweep({"a": (W, scores)}, STANDARD)
    assert threshold == pytest.approx(0.9)
    assert best == pytest.approx(100.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 99), max_size=30), st.lists(st.integers(0, 9), max_size=10))
def test_detections_in_probation_never_change_the_score(rows: list[int],
                                                        early: list[int]) -> None:
    base = score_file(W, _det(100, *rows), STANDARD)
    with_early = score_file(W, _det(100, *rows, *early), STANDARD)
    assert with_early == base


def test_the_published_per_file_scores_normalise_to_final_results() -> None:
    for name, profile in PROFILES.items():
        published = read_published(RESULTS / "windowedGaussian" /
                                   f"windowedGaussian_{name}_scores.csv")
        assert len(published) == 58
        raw = math.fsum(f.score for f in published.values())
        assert normalised(raw, 116, profile) == pytest.approx(
            FINAL["windowedGaussian"][name], abs=1e-8)


def test_the_corpus_loads_in_row_order_with_nabs_windows() -> None:
    corpus = nab.load_corpus()
    assert len(corpus) == 58
    assert sum(s.rows for s in corpus) == 365_558
    assert sum(len(s.windows) for s in corpus) == 116
    machine = next(s for s in corpus if s.name.endswith("machine_temperature_system_failure.csv"))
    assert machine.rows == 22_695
    assert machine.probation == 750
    # The clock steps back 55 min once (12 timestamps then occur twice): rows stay in file
    # order, not sorted or deduplicated.
    back = np.flatnonzero(np.diff(machine.epoch_ms) < 0)
    assert machine.timestamps[back[0]:back[0] + 2] == ("2014-01-07 02:55:00",
                                                       "2014-01-07 02:00:00")
    assert machine.rows - len(set(machine.timestamps)) == 12
    first, last = machine.windows[-1]
    assert machine.timestamps[first] == "2014-02-07 14:55:00"
    assert machine.timestamps[last] == "2014-02-09 14:05:00"


def test_windowed_gaussian_reproduces_every_published_per_file_score() -> None:
    corpus = nab.load_corpus()
    scores = {s.name: baselines.as_published(baselines.windowed_gaussian(s.values))
              for s in corpus}
    for name, profile in PROFILES.items():
        published = read_published(RESULTS / "windowedGaussian" /
                                   f"windowedGaussian_{name}_scores.csv")
        raw = 0.0
        for s in corpus:
            pub = published[s.name]
            got = score_file(row_weights(s.rows, s.windows, s.probation),
                             scores[s.name] >= pub.threshold, profile)
            assert got.score == pytest.approx(pub.score, abs=1e-9), (name, s.name)
            assert (got.tp, got.tn, got.fp, got.fn) == (pub.tp, pub.tn, pub.fp, pub.fn), s.name
            raw += got.score
        assert normalised(raw, 116, profile) == pytest.approx(
            FINAL["windowedGaussian"][name], abs=1e-6)
