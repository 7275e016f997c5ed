"""The anomaly score's chart axis, the same on both screens: logarithmic, so that normal
readings (a fraction of the threshold, 1.0) and a spike (thousands) stay readable together."""

from __future__ import annotations

from typing import Any

# A log axis cannot draw zero: scores below this sit on the floor.
SCORE_FLOOR = 0.01
SCORE_AXIS_NAME = "anomaly score (1 = threshold, log)"


def on_log(score: float) -> float:
    """A score as the log axis can draw it (zero sits on the floor)."""
    return max(score, SCORE_FLOOR)


def score_axis(**placement: Any) -> dict[str, Any]:
    """ECharts options of the score's y axis; ``placement`` adds gridIndex, position, ..."""
    return {"type": "log", "min": SCORE_FLOOR, "name": SCORE_AXIS_NAME, **placement}
