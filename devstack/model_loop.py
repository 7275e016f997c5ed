"""The demo's model loop: MLflow's UI, a retrain in the cloud, and its rollout over the air.

Once the cloud holds some minutes' worth of demo readings, :class:`ModelLoop` asks the cloud
API to retrain the motor model (a ``train`` job: MLflow-tracked, champion-gated). When the new
version is promoted it creates a rollout to the demo gateway through the API and watches
``GET /api/v1/models/running`` until the gateway reports running it, then says how long that
took after the promotion.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from devstack.ports import free_port
from devstack.process import ServiceProcess

log = logging.getLogger(__name__)

RETRAIN_PROFILE = "motor"
# Readings the new model scores on the gateway, in shadow and then as canary, before the
# rollout counts it healthy: small, so the demo's rollout finishes within its minutes.
SHADOW_READINGS = 100
MIN_SCORED = 50


def training_env(workdir: Path, key_file: Path) -> dict[str, str]:
    """Cloud settings for the demo's retraining: MLflow and artifacts in the work dir.

    Small forests and low data minimums (a demo has minutes of readings, not a week), and an
    alert-rate floor at the gateway's default, since the demo injects faults on purpose.
    """
    return {
        "SMAINT_CLOUD_TRAINING__DATA_DIR": str(workdir / "mlflow"),
        "SMAINT_CLOUD_TRAINING__SIGNING_KEY_FILE": str(key_file),
        "SMAINT_CLOUD_TRAINING__N_ESTIMATORS": "50",
        "SMAINT_CLOUD_TRAINING__MIN_TRAIN_WINDOWS": "50",
        "SMAINT_CLOUD_TRAINING__MIN_HELDOUT_WINDOWS": "20",
        "SMAINT_CLOUD_TRAINING__HOLDOUT_FRACTION": "0.25",
        "SMAINT_CLOUD_TRAINING__ALERT_RATE_FLOOR": "0.2",
        "SMAINT_CLOUD_ARTIFACTS__LOCAL_ROOT": str(workdir / "artifacts"),
    }


def mlflow_ui(workdir: Path) -> tuple[ServiceProcess, int]:
    """MLflow's own UI on the demo's tracking store (spawned: it is ready in its own time)."""
    port = free_port()
    store = workdir / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    proc = ServiceProcess(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
         f"sqlite:///{(store / 'mlflow.db').resolve()}", "--host", "127.0.0.1",
         "--port", str(port)], log=workdir / "mlflow-ui.log", name="mlflow ui").spawn()
    return proc, port


class ModelLoop:
    """Retrain after ``retrain_after_s``, roll out the promoted version, report the timing."""

    def __init__(self, cloud_url: str, admin_key: str, gateway: str, *,
                 retrain_after_s: float, since: datetime, say: Callable[[str], None]) -> None:
        self.cloud_url, self.gateway = cloud_url, gateway
        self.retrain_after_s, self.since, self.say = retrain_after_s, since, say
        self.http = httpx.Client(timeout=5.0,
                                 headers={"Authorization": f"Bearer {admin_key}"})
        self.state = "waiting"
        self.job_id: int | None = None
        self.run: dict[str, Any] = {}
        self.rollout_id: int | None = None
        self.promoted_at: float | None = None  # wall clock of the promotion (run end)
        self.promote_to_running_s: float | None = None
        self.detail = ""
        self.watched: dict[str, float] = {}  # deployed version -> when its rollout began

    def watch(self, versions: list[str]) -> None:
        """Announce each of ``versions`` once the gateway reports running it."""
        self.watched.update(dict.fromkeys(versions, time.monotonic()))

    def close(self) -> None:
        """Release the HTTP client."""
        self.http.close()

    def _api(self, method: str, path: str, body: object = None) -> Any:
        resp = self.http.request(method, self.cloud_url + path, json=body)
        if resp.status_code >= 300:
            raise httpx.HTTPStatusError(f"{method} {path}: {resp.status_code} {resp.text}",
                                        request=resp.request, response=resp)
        return resp.json()

    def tick(self, elapsed: float) -> None:
        """Advance one step if its condition holds; a failed call is retried next tick."""
        try:
            self._tick(elapsed)
        except httpx.HTTPError as exc:
            log.debug("model loop: %s", exc)

    def _tick(self, elapsed: float) -> None:
        if self.watched:
            running = {r["version"] for r in self._api(
                "GET", f"/api/v1/models/running?gateway={self.gateway}")}
            for version in sorted(self.watched.keys() & running):
                self.say(f"{version} running on {self.gateway} over the air, "
                         f"{time.monotonic() - self.watched.pop(version):.1f} s after its "
                         f"rollout began")
        if self.state == "waiting" and 0 < self.retrain_after_s <= elapsed:
            self.job_id = int(self._api("POST", "/api/v1/training/runs", {
                "profiles": [RETRAIN_PROFILE], "since": self.since.isoformat(),
                "until": datetime.now(UTC).isoformat()})["job_id"])
            self.state = "training"
            self.say(f"retraining the {RETRAIN_PROFILE} model in the cloud from the demo's "
                     f"readings (train job {self.job_id}, tracked in MLflow)")
        elif self.state == "training":
            job = self._api("GET", f"/api/v1/training/jobs/{self.job_id}")
            if job["status"] == "failed" or (job["status"] == "queued" and job["last_error"]):
                self._end("training failed", f"train job {self.job_id}: {job['last_error']}")
            elif job["status"] == "done":
                self._trained()
        elif self.state == "rolling":
            self._watch_rollout()

    def _trained(self) -> None:
        runs = self._api("GET", f"/api/v1/training/runs?profile={RETRAIN_PROFILE}&limit=1")
        if not runs:
            self._end("no run", f"train job {self.job_id} left no MLflow run "
                      f"(too few {RETRAIN_PROFILE} readings yet?)")
            return
        self.run = runs[0]
        if self.run["gate_outcome"] != "promoted":
            self._end("rejected", f"retrained {RETRAIN_PROFILE} model not promoted: "
                      f"{self.run['gate_reason']}")
            return
        ended = self.run["ended"]
        self.promoted_at = (datetime.fromisoformat(ended).timestamp() if ended
                            else time.time())
        made = self._api("POST", "/api/v1/rollouts", {
            "profile": RETRAIN_PROFILE, "version": self.run["bundle_version"],
            "canaries": [self.gateway], "min_scored": MIN_SCORED})
        self.rollout_id = int(made["rollout_id"])
        self.state = "rolling"
        self.say(f"model {self.run['bundle_version']} (smaint-{RETRAIN_PROFILE} "
                 f"v{self.run['registered_version']}) promoted champion; rolling out to "
                 f"{self.gateway} (rollout {self.rollout_id})")

    def _watch_rollout(self) -> None:
        version = self.run["bundle_version"]
        running = self._api("GET", f"/api/v1/models/running?gateway={self.gateway}")
        if any(r["profile"] == RETRAIN_PROFILE and r["version"] == version for r in running):
            assert self.promoted_at is not None  # noqa: S101 - set with state "rolling"
            self.promote_to_running_s = round(time.time() - self.promoted_at, 1)
            self._end("running", f"{version} running on {self.gateway} over the air, "
                      f"{self.promote_to_running_s:.1f} s after promotion")
            return
        rollout = self._api("GET", f"/api/v1/rollouts/{self.rollout_id}")
        if rollout.get("state") in ("rolled_back", "failed", "cancelled"):
            self._end(str(rollout["state"]), f"rollout {self.rollout_id} of {version} "
                      f"{rollout['state']}: {rollout.get('reason') or rollout}")

    def _end(self, state: str, text: str) -> None:
        self.state, self.detail = state, text
        self.say(text)

    def summary(self) -> dict[str, Any]:
        """The loop's outcome for the demo's JSON summary."""
        return {
            "state": self.state, "detail": self.detail, "train_job": self.job_id,
            "mlflow_run": self.run.get("run_id"), "model_version": self.run.get("bundle_version"),
            "gate": self.run.get("gate_outcome"), "rollout": self.rollout_id,
            "promote_to_running_s": self.promote_to_running_s,
        }


def stop_ui(proc: ServiceProcess, timeout_s: float = 30.0) -> None:
    """Stop MLflow's UI and the server workers it started (its own process group)."""
    if proc.proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("mlflow ui ignored SIGTERM for %.0f s; killing its process group", timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.proc.wait()


def deploy_bundles(cloud_url: str, admin_key: str, gateway: str, artifacts_root: Path,
                   bundles: dict[str, Path]) -> dict[str, int]:
    """Put signed bundles (version -> file) in the cloud's artifact store and roll each out
    to ``gateway``; version -> rollout id. The gateway fetches them over the air."""
    from cloud.artifacts import LocalArtifactStore  # noqa: PLC0415 - cloud side, demo only

    store = LocalArtifactStore(artifacts_root)
    out: dict[str, int] = {}
    with httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {admin_key}"}) as http:
        for version, path in bundles.items():
            profile = version.split("-", 1)[0]
            store.put_file(f"models/{profile}/{version}/bundle.smb", path)
            resp = http.post(f"{cloud_url}/api/v1/rollouts", json={
                "profile": profile, "version": version, "canaries": [gateway],
                "min_scored": MIN_SCORED})
            resp.raise_for_status()
            out[version] = int(resp.json()["rollout_id"])
    return out
