"""Detector state memory: what the gateway's rules keep per device, measured with tracemalloc.

``python -m bench.detector_state`` feeds 1,000 simulated devices x 3 metrics (readings as
``Telemetry``, in arrival order) through ``edge.score.RuleScorer`` with the shipped
``ScoringSettings()`` until every device is past its warm-up, then prints one JSON line:
``{"devices", "metrics", "bytes_total", "bytes_per_metric", "mb"}``. ``bytes_total`` is what
tracemalloc sees still allocated after the feed minus before it, so it counts the per-device
feature states and the scorer's dict of them, not the readings (which are dropped).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tracemalloc

from edge.score import RuleScorer
from edge.settings import ScoringSettings
from shared.schemas import Telemetry

METRICS = ("temperature_c", "vibration_rms_g", "current_a")


def measure(devices: int, extra: int = 20) -> dict[str, float | int]:
    """Bytes the scorer holds once ``devices`` motors have passed warm-up by ``extra`` readings."""
    settings = ScoringSettings()
    scorer = RuleScorer(warmup=settings.warmup, threshold=settings.threshold)
    rng = random.Random(1)
    ids = [f"motor-{i:04d}" for i in range(devices)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seq in range(settings.warmup + extra):
        batch = [Telemetry(v=1, device=d, boot="0badc0de", seq=seq,
                           ts_ms=1_700_000_000_000 + 1000 * seq, uptime_ms=1000 * seq,
                           synced=True, type="motor",
                           metrics={"temperature_c": 60.0 + rng.gauss(0.0, 0.5),
                                    "vibration_rms_g": 0.8 + rng.gauss(0.0, 0.03),
                                    "current_a": 9.5 + rng.gauss(0.0, 0.2)})
                 for d in ids]
        scorer.score_batch(batch)
        del batch
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if scorer.devices != devices:
        raise RuntimeError(f"scorer holds {scorer.devices} devices, expected {devices}")
    return {"devices": devices, "metrics": len(METRICS), "bytes_total": total,
            "bytes_per_metric": round(total / (devices * len(METRICS)), 1),
            "mb": round(total / 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.detector_state``."""
    p = argparse.ArgumentParser(prog="python -m bench.detector_state",
                                description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--devices", type=int, default=1000)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.devices)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
