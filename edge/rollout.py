"""Model rollout on the gateway: desired version -> download -> verify -> shadow -> swap.

The cloud's desired state (every sync answer) names a model version per profile. When it
differs from the one running, this module:

1. downloads the bundle with the gateway token, resuming a dropped link (edge.ota), or takes
   it from the versions kept on disk;
2. verifies signature and sha256 (shared.bundle) before onnxruntime sees a byte, refuses a
   bundle for another profile or version, one whose feature spec this gateway cannot compute,
   and one older (manifest ``created_ms``) than the running model unless the cloud ordered a
   rollback (no downgrade by replay); then builds the onnxruntime session (load failure:
   refused);
3. runs it in **shadow** beside the current scorer on live readings until it scored
   ``shadow_readings`` of them, both scores recorded in ``.ota/shadow/<profile>-<version>.csv``;
   an alert rate outside the manifest's ``alert_rate`` bounds rolls it back;
4. swaps atomically (os.replace of ``<profile>.smb``, one dict store in the registry) keeping
   the previous versions (the last three) under ``.ota/versions/<profile>/``; for the next
   ``shadow_readings`` readings the same bound applies, and a breach restores the previous one;
   so does failing at run time (onnxruntime error) on ``max_run_failures`` batches while
   watched (the statistical detector scores the failed batches meanwhile, edge.score).

Each step is reported in GatewayState.rollout. A refused or rolled back version is not tried
again until the cloud asks for another (remembered in ``.ota/refused.json`` across restarts).
The trusted keys are the registry's: they live in settings, apart from the bundles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from edge.model_registry import BUNDLE_SUFFIX, ModelRegistry
from edge.onnx_model import OnnxModel
from edge.ota import BundleDownloader, DownloadError
from edge.score import Score
from edge.shadow import Trial, alert_rate_bounds, check_spec
from edge.store import now_ms
from shared.bundle import BundleError, read_bundle
from shared.schemas import MAX_REASON, DesiredState, RolloutReport, RolloutStep, Telemetry

log = logging.getLogger(__name__)

KEEP_VERSIONS = 3


class DowngradeError(BundleError):
    """A bundle older than the running model, without an ordered rollback."""


class ModelRollout:
    """Brings each profile's model to the version the cloud wants, safely."""

    def __init__(self, registry: ModelRegistry, downloader: BundleDownloader, *,
                 shadow_readings: int = 200, max_alert_rate: float = 0.2,
                 retry_s: float = 30.0, max_run_failures: int = 2) -> None:
        self.registry = registry
        self.downloader = downloader
        self.shadow_readings = shadow_readings
        self.max_alert_rate = max_alert_rate
        self.retry_s = retry_s
        self.max_run_failures = max_run_failures
        self.dir = registry.models_dir / ".ota"
        self._desired: dict[str, str] = {}
        self._ordered: set[str] = set()
        self._reports: dict[str, RolloutReport] = {}
        self._shadow: dict[str, Trial] = {}
        self._watch: dict[str, Trial] = {}
        self._refused: dict[str, dict[str, str]] = self._load_refused()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        for profile, r in self._refused.items():
            # Reported again (the cloud may have missed it), not logged again.
            try:
                self._reports[profile] = RolloutReport.model_validate({
                    "profile": profile, "version": r.get("version"), "step": r.get("step"),
                    "reason": str(r.get("reason", ""))[:MAX_REASON], "at_ms": now_ms()})
            except ValidationError as exc:
                log.warning("refused-versions entry for %s unreadable (%s); not reported",
                            profile, exc.errors(include_url=False)[:1])

    # -- inputs -------------------------------------------------------------------------

    def on_desired(self, desired: DesiredState) -> None:
        """Take the cloud's desired models (after every sync ack); work starts in :meth:`run`."""
        if desired.models != self._desired or set(desired.rollback) != self._ordered:
            self._desired = dict(desired.models)
            self._ordered = set(desired.rollback)
            self._poke()

    def observe(self, readings: Sequence[Telemetry], scores: Sequence[Score]) -> None:
        """Score shadow candidates beside the current scorer; count what swapped versions do."""
        # Copies: the rollout's task may add or drop trials meanwhile.
        for profile, trial in list(self._shadow.items()):
            if trial.failure is None and trial.n < self.shadow_readings:
                trial.shadow_batch(profile, readings, scores, self.dir / "shadow")
                if trial.failure is not None or trial.n >= self.shadow_readings:
                    self._poke()
        for profile, trial in list(self._watch.items()):
            version = trial.model.version
            if trial.model.run_failures >= self.max_run_failures:
                self._poke()
            for r, s in zip(readings, scores, strict=True):
                if r.type == profile and s.model_version == version:
                    trial.scored += 1
                    if trial.n < self.shadow_readings and not r.sim:  # see Trial.shadow_batch
                        trial.n += 1
                        trial.anomalous += s.anomalous
                        if trial.n == self.shadow_readings:
                            self._poke()

    def _poke(self) -> None:
        """Wake :meth:`run`, also from a thread other than its event loop's (the scorer's)."""
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # -- outputs ------------------------------------------------------------------------

    def reports(self) -> list[RolloutReport]:
        """The latest step per profile, with live counts, for GatewayState.rollout."""
        out = []
        for profile, last in sorted(self._reports.items()):
            trial = self._shadow.get(profile) or self._watch.get(profile)
            rep = last
            if trial is not None and trial.model.version == last.version:
                in_shadow = last.step == "shadow"
                rep = last.model_copy(update={
                    "scored": trial.scored,
                    "shadow_readings": trial.n if in_shadow else last.shadow_readings,
                    "shadow_alert_rate": trial.anomalous / trial.n if in_shadow and trial.n
                    else last.shadow_alert_rate})
            out.append(rep)
        return out[:32]

    def _report(self, profile: str, version: str, step: RolloutStep, reason: str = "", *,
                previous: str | None = None, trial: Trial | None = None) -> None:
        old = self._reports.get(profile)
        keep = old is not None and old.version == version
        self._reports[profile] = RolloutReport(
            profile=profile, version=version, step=step, reason=reason[:MAX_REASON],
            at_ms=now_ms(),
            previous_version=previous if previous is not None or not keep else
            (old.previous_version if old else None),
            shadow_readings=trial.n if trial else (old.shadow_readings if keep and old else 0),
            shadow_alert_rate=(trial.anomalous / trial.n if trial and trial.n else
                               (old.shadow_alert_rate if keep and old else None)))
        level = logging.ERROR if step in ("refused", "rolled_back") else logging.INFO
        log.log(level, "model %s %s for profile=%s%s", version, step.replace("_", " "),
                profile, f": {reason}" if reason else "")

    # -- the work -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work towards the desired models until ``stop``; wakes on news or every retry_s."""
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()
            for gone in [p for p in self._shadow if p not in self._desired]:
                del self._shadow[gone]  # the cloud no longer wants it: stop the shadow run
            for profile, version in sorted(self._desired.items()):
                try:
                    await self._step(profile, version)
                except Exception:
                    # One profile's surprise must not end the loop (or the gateway with it).
                    log.exception("rollout of %s %s failed unexpectedly", profile, version)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self._wake), timeout=self.retry_s)

    async def _step(self, profile: str, version: str) -> None:
        running = self.registry.get(profile)
        watch = self._watch.get(profile)
        if watch is not None and watch.model.version == version:
            if watch.model.run_failures >= self.max_run_failures:
                await self._roll_back_watch(
                    profile, watch, f"failed at run time on {watch.model.run_failures} "
                    f"batches (last: {_brief(watch.model.last_failure)})")
            elif watch.n >= self.shadow_readings and watch.failure is None:
                await self._judge_watch(profile, watch)
            return
        if running is not None and running.version == version:
            return
        shadow = self._shadow.get(profile)
        if shadow is not None:
            if shadow.model.version == version:
                if shadow.failure is not None or shadow.n >= self.shadow_readings:
                    await self._judge_shadow(profile, shadow)
                return
            del self._shadow[profile]  # the cloud wants another version now
        refused = self._refused.get(profile, {})
        if refused.get("version") == version and not (
                refused.get("downgrade") and profile in self._ordered):
            return  # tried and refused; only an ordered rollback lifts a downgrade refusal
        await self._start(profile, version, running)

    async def _start(self, profile: str, version: str, running: OnnxModel | None) -> None:
        previous = running.version if running else None
        kept = self._kept(profile, version)
        if kept.exists():
            data = await asyncio.to_thread(kept.read_bytes)
        else:
            self._report(profile, version, "downloading", previous=previous)
            try:
                data = await self.downloader.fetch(profile, version)
            except DownloadError as exc:
                if exc.permanent:
                    self._refuse(profile, version, "refused", exc.reason)
                else:
                    self._report(profile, version, "downloading", f"will retry: {exc.reason}")
                return
        self._report(profile, version, "verifying", previous=previous)
        ordered = profile in self._ordered
        try:
            model = await asyncio.to_thread(self._verify, data, profile, version, running,
                                            ordered)
        except BundleError as exc:
            self._refuse(profile, version, "refused", str(exc),
                         downgrade=isinstance(exc, DowngradeError))
            return
        await asyncio.to_thread(self._keep, profile, version, data)
        trial = Trial(model, data, previous, alert_rate_bounds(model.manifest,
                                                                self.max_alert_rate))
        if ordered:
            # The cloud ordered this version back: it ran here before, no shadow needed.
            await self._swap(profile, trial, f"ordered rollback from {previous}")
            return
        self._shadow[profile] = trial
        self._report(profile, version, "shadow",
                     f"scoring beside {previous or 'the statistical detector'} for "
                     f"{self.shadow_readings} readings", previous=previous)

    def _verify(self, data: bytes, profile: str, version: str, running: OnnxModel | None,
                ordered: bool) -> OnnxModel:
        manifest, onnx_bytes = read_bundle(data, self.registry.trusted)
        check_spec(manifest, profile, version)
        if running is not None and manifest.created_ms < running.manifest.created_ms \
                and not ordered:
            raise DowngradeError(
                f"bundle {version} (created_ms {manifest.created_ms}) is older than the "
                f"running {running.version} ({running.manifest.created_ms}) and no rollback "
                "was ordered: refusing a downgrade")
        return OnnxModel(manifest, onnx_bytes)

    async def _judge_shadow(self, profile: str, trial: Trial) -> None:
        del self._shadow[profile]
        problem = trial.failure or trial.out_of_bounds()
        if problem:
            self._refuse(profile, trial.model.version, "rolled_back", f"in shadow: {problem}",
                         trial)
            return
        await self._swap(profile, trial, f"shadow passed: alert rate "
                                          f"{trial.anomalous / trial.n:.3f} over {trial.n}")

    async def _judge_watch(self, profile: str, trial: Trial) -> None:
        problem = trial.out_of_bounds()
        trial.failure = problem or ""  # judged once; it keeps counting readings scored
        if not problem:
            return
        await self._roll_back_watch(profile, trial, problem)

    async def _roll_back_watch(self, profile: str, trial: Trial, problem: str) -> None:
        """Restore the version before ``trial``'s and remember why it went."""
        del self._watch[profile]
        restored = await asyncio.to_thread(self._restore, profile, trial.previous)
        self._refuse(profile, trial.model.version, "rolled_back",
                     f"after the swap: {problem}; {restored}", trial)

    async def _swap(self, profile: str, trial: Trial, why: str) -> None:
        await asyncio.to_thread(self._install, profile, trial.bundle)
        self.registry.models[profile] = trial.model  # one store: the scorer sees old or new
        self.registry.refused.pop(profile, None)
        # The report keeps the shadow's figures; the counts restart for the watch.
        self._report(profile, trial.model.version, "running", why, previous=trial.previous,
                     trial=trial if trial.n else None)
        trial.n = trial.anomalous = 0
        self._watch[profile] = trial

    def _install(self, profile: str, bundle: bytes) -> None:
        target = self.registry.models_dir / f"{profile}{BUNDLE_SUFFIX}"
        tmp = target.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            f.write(bundle)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def _restore(self, profile: str, previous: str | None) -> str:
        """Put the previous version back (from the kept versions); what was done, in words."""
        target = self.registry.models_dir / f"{profile}{BUNDLE_SUFFIX}"
        if previous is None:
            target.unlink(missing_ok=True)
            self.registry.models.pop(profile, None)
            return "statistical scoring resumes"
        try:
            data = self._kept(profile, previous).read_bytes()
            manifest, onnx_bytes = read_bundle(data, self.registry.trusted)
            model = OnnxModel(manifest, onnx_bytes)
        except (OSError, BundleError) as exc:
            target.unlink(missing_ok=True)
            self.registry.models.pop(profile, None)
            return f"previous {previous} unusable ({exc}); statistical scoring resumes"
        self._install(profile, data)
        self.registry.models[profile] = model
        return f"{previous} restored"

    def _refuse(self, profile: str, version: str, step: RolloutStep, reason: str,
                trial: Trial | None = None, *, downgrade: bool = False) -> None:
        self._refused[profile] = {"version": version, "step": step, "reason": reason,
                                  **({"downgrade": "1"} if downgrade else {})}
        self._save_refused()
        self._report(profile, version, step, reason, trial=trial)

    def kept_versions(self, profile: str) -> list[str]:
        """Versions of ``profile`` kept on disk for a rollback, newest first."""
        try:
            files = list((self.dir / "versions" / profile).glob(f"*{BUNDLE_SUFFIX}"))
            dated = sorted(((p.stat().st_mtime, p.stem) for p in files), reverse=True)
        except OSError:
            return []
        return [version for _, version in dated]

    # -- files --------------------------------------------------------------------------

    def _kept(self, profile: str, version: str) -> Path:
        return self.dir / "versions" / profile / f"{version}{BUNDLE_SUFFIX}"

    def _keep(self, profile: str, version: str, data: bytes) -> None:
        """Keep a verified bundle (and the running one, if it came by hand) on disk."""
        path = self._kept(profile, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(data)
        current = self.registry.get(profile)
        live = self.registry.models_dir / f"{profile}{BUNDLE_SUFFIX}"
        if current is not None and live.exists() and \
                not self._kept(profile, current.version).exists():
            self._kept(profile, current.version).write_bytes(live.read_bytes())
        files = sorted(path.parent.glob(f"*{BUNDLE_SUFFIX}"), key=lambda p: p.stat().st_mtime)
        protect = {path.name, f"{current.version}{BUNDLE_SUFFIX}" if current else ""}
        for old in [p for p in files if p.name not in protect][:-KEEP_VERSIONS]:
            old.unlink(missing_ok=True)

    def _load_refused(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.dir / "refused.json").read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("refused-versions file unreadable (%s); starting with none", exc)
            return {}
        return {p: v for p, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) \
            else {}

    def _save_refused(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / "refused.json.tmp"
            tmp.write_text(json.dumps(self._refused, sort_keys=True))
            os.replace(tmp, self.dir / "refused.json")
        except OSError as exc:
            log.warning("refused versions not saved (%s): a restart may try them again", exc)


def _brief(text: str, limit: int = 120) -> str:
    """``text`` on one line and cut short, so the outcome after it fits the report's reason."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


async def _first(stop: asyncio.Event, wake: asyncio.Event) -> None:
    """Return when either event is set."""
    tasks = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
