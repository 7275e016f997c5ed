"""Shadow scoring for the model rollout (edge.rollout): checks, trials, the observed scorer.

A candidate model scores live readings beside the current one (its own feature windows, the
same shared.features code), both scores recorded per reading in a CSV file; its alert rate
must stay within the manifest's ``alert_rate`` bounds. :class:`ObservedScorer` lets the
rollout see every scored batch without touching the scoring path's own code.
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.onnx_model import ModelRunError, OnnxModel
from edge.score import Score, Scorer
from shared.bundle import BundleError, Manifest
from shared.features import DeviceFeatures
from shared.schemas import Telemetry
from shared.sensors import PROFILES

log = logging.getLogger(__name__)


class Observer(Protocol):
    """What sees each scored batch (edge.rollout.ModelRollout)."""

    def observe(self, readings: Sequence[Telemetry], scores: Sequence[Score]) -> None:
        """Look at a batch's readings and the scores they got."""
        ...


def check_spec(manifest: Manifest, profile: str, version: str) -> None:
    """BundleError unless the bundle is ``version`` for ``profile`` with computable features."""
    if manifest.profile != profile or manifest.spec.profile != profile:
        raise BundleError(f"bundle holds a model for profile {manifest.profile!r}, "
                          f"not {profile!r}")
    if manifest.version != version:
        raise BundleError(f"bundle is version {manifest.version}, the cloud asked for {version}")
    prof = PROFILES.get(profile)
    if prof is None:
        raise BundleError(f"no sensor profile {profile!r} on this gateway")
    unknown = [m for m in manifest.spec.metrics if m not in prof.metric_names]
    if unknown or not manifest.spec.metrics:
        raise BundleError(f"feature spec needs metrics {unknown or '(none)'} that profile "
                          f"{profile!r} does not report: this gateway cannot compute it")


def alert_rate_bounds(manifest: Manifest, default_max: float) -> tuple[float, float]:
    """(min, max) share of readings the model may find anomalous (manifest ``alert_rate``)."""
    bounds = manifest.extra.get("alert_rate")
    if isinstance(bounds, dict):
        with contextlib.suppress(TypeError, ValueError):
            return float(bounds.get("min", 0.0)), float(bounds.get("max", default_max))
    return 0.0, default_max


@dataclass
class Trial:
    """A candidate in shadow, or a swapped-in version under watch."""

    model: OnnxModel
    bundle: bytes
    previous: str | None
    bounds: tuple[float, float]
    states: dict[str, DeviceFeatures] = field(default_factory=dict)
    n: int = 0
    anomalous: int = 0
    # Of the same readings, how many the running detector found anomalous: a fault during the
    # shadow run raises both, and only what the candidate adds beyond it counts against it.
    baseline: int = 0
    failure: str | None = None
    scored: int = 0  # after the swap: readings it scored, for the cloud's health check

    def shadow_batch(self, profile: str, readings: Sequence[Telemetry],
                     scores: Sequence[Score], directory: Path) -> None:
        """Score ``profile``'s readings with the candidate; record both scores per reading."""
        spec = self.model.manifest.spec
        idx: list[int] = []
        rows: list[list[float]] = []
        for i, r in enumerate(readings):
            if r.type != profile:
                continue
            state = self.states.get(r.device)
            if state is None:
                state = self.states[r.device] = DeviceFeatures(spec)
            feats = state.push(r.metrics)
            if feats is not None:
                idx.append(i)
                rows.append(feats)
        if not idx:
            return
        try:
            values = self.model.score(np.asarray(rows, dtype=np.float32))
            if not np.isfinite(values).all():
                raise ModelRunError(self.model.version, "non-finite score in shadow")
        except ModelRunError as exc:
            self.failure = f"failed in shadow: {exc.reason}"
            return
        out: list[list[object]] = []
        for i, v in zip(idx, values, strict=True):
            flagged = bool(v > self.model.threshold)
            # A reading carrying an injected SIMULATED fault is a known fault, not a sample of
            # normal operation: scored and recorded, but not judged (the feature state still
            # saw it above, as the running detector's did).
            if not readings[i].sim:
                self.n += 1
                self.anomalous += flagged
                self.baseline += bool(scores[i].anomalous)
            cur = scores[i]
            out.append([readings[i].ts_ms, readings[i].device, readings[i].seq,
                         cur.model_version or cur.scorer, cur.value, int(cur.anomalous),
                         round(float(v), 6), int(flagged)])
        record_scores(directory / f"{profile}-{self.model.version}.csv", out)

    def out_of_bounds(self) -> str | None:
        """Why the alert rate so far breaks the bounds, or None (beyond the running detector's)."""
        lo, hi = self.bounds
        rate = self.anomalous / self.n if self.n else 0.0
        base = self.baseline / self.n if self.n else 0.0
        if rate < lo or rate - base > hi:
            return (f"alert rate {rate:.3f} over {self.n} readings ({base:.3f} by the running "
                    f"detector on the same readings) outside the manifest's bounds [{lo}, {hi}]")
        return None


def record_scores(path: Path, rows: list[list[object]]) -> None:
    """Append shadow rows (current and candidate score per reading) to a CSV file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["ts_ms", "device", "seq", "current", "current_score",
                            "current_anomalous", "shadow_score", "shadow_anomalous"])
            w.writerows(rows)
    except OSError as exc:
        log.warning("shadow scores not recorded in %s: %s", path, exc)


class ObservedScorer:
    """A scorer that lets the rollout see every batch's readings and scores."""

    def __init__(self, inner: Scorer, rollout: Observer) -> None:
        self.inner = inner
        self.rollout = rollout
        self.threshold = inner.threshold

    def score_batch(self, readings: Sequence[Telemetry]) -> list[Score]:
        """The inner scorer's scores; the rollout observes them (its failures never bubble)."""
        scores = self.inner.score_batch(readings)
        try:
            self.rollout.observe(readings, scores)
        except Exception:
            log.exception("rollout observer failed; scoring goes on unaffected")
        return scores
