"""The compact Isolation Forest export scores like skl2onnx's export and like scikit-learn.

The product ships cloud/training/onnx_export.py's one-node graph instead of skl2onnx's ~3,000
nodes; this checks that the shortcut computes the same thing. The data is the product's own:
motor features (shared.features) of the simulator's NAB machine-temperature replay, trained
like cloud/training/train.py on the first half and scored on 10,000 windows of the second
half, which holds the recorded failures, so normal and anomalous rows are both scored.
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from sklearn.ensemble import IsolationForest

from cloud.training.onnx_export import ONNX_OPSET, isolation_forest_onnx
from cloud.training.train import training_matrix
from shared.features import FeatureSpec
from shared.sensors import profile
from simulator.signals import MotorReplay, nab_machine_temperature_f

N_SCORED = 10_000
TOLERANCE = 1e-4

Matrix = npt.NDArray[np.float32]


def _motor_features() -> Matrix:
    """Feature windows of one motor replaying the whole NAB series (seeded noise)."""
    replay = MotorReplay(offset=0, rng=random.Random(0))
    names = replay.profile.metric_names
    series = [[row[m] for m in names]
              for row in (replay.next() for _ in range(len(nab_machine_temperature_f())))]
    return training_matrix([series], FeatureSpec.for_profile(profile("motor")))


@pytest.fixture(scope="module")
def data() -> tuple[IsolationForest, Matrix, Matrix]:
    """A forest fitted as train.py fits it, and 10,000 held-out rows to score."""
    x = _motor_features()
    half = len(x) // 2
    assert len(x) - half >= N_SCORED
    train, scored = x[:half], x[-N_SCORED:]
    forest = IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(train)
    return forest, train, scored


def _run(model: bytes, output: str, x: Matrix) -> npt.NDArray[np.float64]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (out,) = session.run([output], {session.get_inputs()[0].name: x})
    return np.asarray(out, dtype=np.float64).reshape(-1)


@pytest.mark.slow  # skl2onnx takes seconds to convert 100 trees
def test_compact_export_skl2onnx_and_sklearn_agree_on_10000_rows(
    data: tuple[IsolationForest, Matrix, Matrix],
) -> None:
    forest, train, scored = data
    # Both exports output decision_function: the compact graph's only output "scores" is
    # -2 ** (-E[h] / c(max_samples)) - offset_ (see its module docstring), and skl2onnx's
    # "scores" output is decision_function too. No transform is needed between them. (The
    # gateway's anomaly score is the negation, applied in train.py and at scoring time,
    # outside either graph.)
    compact = _run(isolation_forest_onnx(forest, scored.shape[1]), "scores", scored)
    skl = _run(to_onnx(forest, train[:1], target_opset=ONNX_OPSET).SerializeToString(),
               "scores", scored)
    reference = forest.decision_function(scored)
    assert compact.shape == skl.shape == reference.shape == (N_SCORED,)
    # The rows span normal and anomalous windows, so agreement is not just on the easy part.
    assert (reference < 0).sum() > 10
    assert (reference > 0).sum() > 1000
    np.testing.assert_allclose(compact, reference, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(skl, reference, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(compact, skl, rtol=0, atol=TOLERANCE)
    # Same decisions, too (the sign is what a ±1 label is made of), wherever the score is
    # further from 0 than the tolerance lets it move.
    clear = np.abs(reference) > TOLERANCE
    np.testing.assert_array_equal(compact[clear] < 0, reference[clear] < 0)
