"""What the Models page shows, from the API's training, rollout and drift routes: the rows of
its tables, each run's champion and challenger comparison, and a rollout's progress.

No NiceGUI here: the page (ui.console.pages.models) draws what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ui.console import timefmt
from ui.console.api import UserApi

# The rollout states in which it still moves (cloud.rollout.rollouts.ACTIVE): cancellable.
ACTIVE = ("canary", "fleet")
# The states in which the API refuses a rollback (nothing left to roll back).
NOT_ROLLED_BACK = ("rolled_back", "superseded")
# A training job is over in these states; until then the page polls it.
JOB_OVER = ("done", "failed")
CHAMPION = "champion."
# The gate's measures, in the order the comparison lists them, with how each reads.
MEASURES = (
    ("recall", "confirmed failures detected (share)"),
    ("false_positive_rate", "labelled false positives still flagged (share)"),
    ("precision", "precision on labelled events"),
    ("heldout_anomaly_rate", "held-out windows flagged (share)"),
    ("labelled_failures_detected", "confirmed failures detected"),
    ("labelled_false_positives_flagged", "labelled false positives flagged"),
    ("heldout_windows", "held-out windows scored"),
)


@dataclass
class ModelsData:
    """One fetch of everything the page shows."""

    runs: list[dict[str, Any]]
    running: list[dict[str, Any]]
    rollouts: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    gateways: list[str]

    def key(self) -> str:
        """What a redraw depends on (the times shown as "ago" are left to the timer)."""
        return repr((self.runs, self.running, self.rollouts, self.drift, self.gateways))


async def fetch(api: UserApi) -> ModelsData:
    """Training runs, running versions, rollouts, drift events and the gateway ids."""
    return ModelsData(await api.training_runs(), await api.running_models(),
                      await api.rollouts(), await api.drift_events(),
                      sorted(g["gateway"] for g in await api.gateways() if not g["revoked"]))


def number(value: float) -> str:
    """A metric as a person reads it: whole numbers whole, the others to 4 significant
    digits."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"


def comparison(run: dict[str, Any]) -> list[dict[str, str]]:
    """Rows (measure, challenger, champion) of the measures the run logged for both models;
    empty when the gate had no champion to compare with."""
    metrics = run["metrics"]
    return [{"measure": label, "challenger": number(metrics[name]),
             "champion": number(metrics[CHAMPION + name])}
            for name, label in MEASURES
            if name in metrics and CHAMPION + name in metrics]


def run_metrics(run: dict[str, Any]) -> list[dict[str, str]]:
    """The run's own metrics (the champion's are in :func:`comparison`), by name."""
    return [{"metric": name, "value": number(value)}
            for name, value in sorted(run["metrics"].items()) if not name.startswith(CHAMPION)]


def registered(runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per registered version the runs made, newest first: its profile, bundle, the
    gate's outcome, and whether it is the profile's champion (its newest promoted one)."""
    champions: set[tuple[str, str]] = set()
    rows = []
    for run in runs:  # newest first, as the API lists them
        version, profile = run["registered_version"], run["profile"] or ""
        if not version:
            continue
        outcome = run["gate_outcome"] or "not decided"
        is_champion = outcome == "promoted" and profile not in {p for p, _ in champions}
        if is_champion:
            champions.add((profile, version))
        rows.append({"key": run["run_id"], "profile": profile, "version": version,
                     "bundle": run["bundle_version"] or "no bundle",
                     "outcome": outcome, "role": "champion" if is_champion else "",
                     "run": run["name"] or run["run_id"]})
    return rows


def running_rows(running: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What each gateway runs per profile, since when and why."""
    return [{"key": f"{m['gateway']}/{m['profile']}", "gateway": m["gateway"],
             "profile": m["profile"], "version": m["version"],
             "since": timefmt.stamp(m["since"]) + " UTC", "reason": m["reason"]}
            for m in sorted(running, key=lambda m: (m["gateway"], m["profile"]))]


def target_rows(rollout: dict[str, Any]) -> list[dict[str, str]]:
    """A rollout's gateways: stage, status, readings scored against what a canary needs."""
    need = rollout["min_scored"]
    return [{"gateway": t["gateway"], "stage": t["stage"],
             "previous": t["previous_version"] or "no model",
             "status": t["status"],
             "scored": f"{t['scored']:,} / {need:,}" if t["stage"] == "canary"
             else f"{t['scored']:,}",
             "reason": t["reason"] or "",
             "updated": timefmt.stamp(t["updated_at"], never="not yet")}
            for t in rollout["targets"]]


def progress(rollout: dict[str, Any]) -> str:
    """How far the rollout got, in one line."""
    targets = rollout["targets"]
    canaries = [t for t in targets if t["stage"] == "canary"]
    running = sum(1 for t in targets if t["status"] == "running")
    healthy = sum(1 for t in canaries if t["scored"] >= rollout["min_scored"])
    return (f"{running} of {len(targets)} gateways run it · {healthy} of {len(canaries)} "
            f"canaries scored {rollout['min_scored']:,} readings with it")


def drift_rows(events: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Drift events: device, model, the features that moved (worst first) and the retraining."""
    rows = []
    for e in events:
        moved = sorted(e["moved"], key=lambda f: -e["scores"].get(f, 0.0))
        retrain = e["gate_outcome"] or ("queued" if e["retrain_job_id"] else "not started")
        if e["retrain_version"]:
            retrain += f" (version {e['retrain_version']})"
        rows.append({
            "key": str(e["event_id"]), "at": timefmt.stamp(e["created_at"]) + " UTC",
            "device": e["device"], "model": f"{e['model_name']} v{e['model_version']}",
            "moved": ", ".join(f"{f} {e['scores'][f]:.2f}" for f in moved) or "none",
            "method": f"{e['method']} > {e['threshold']:g} over {e['windows']} windows",
            "retrain": retrain})
    return rows


def job_line(job: dict[str, Any]) -> str:
    """A training job's progress in one line."""
    line = f"Training job {job['job_id']}: {job['status']}"
    if job["status"] == "running":
        line += f" on {job['locked_by']} (attempt {job['attempts']})"
    if job["finished_at"]:
        line += f", finished {timefmt.stamp(job['finished_at'])} UTC"
    if job["last_error"]:
        line += f" · last error: {job['last_error']}"
    return line
