"""Models: training runs with their MLflow metrics and the gate's champion and challenger
comparison, registered versions, what each gateway runs, rollouts with each gateway's
progress, deploy (canaries, then the fleet), roll back, cancel, drift events, and "Retrain now"
with its job followed to the end.

Admins see deploy and retrain, operators roll back and cancel (as the API allows); viewers see
no action, and the API refuses them anyway.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.console import models_data as md
from ui.console import timefmt
from ui.console.context import Console
from ui.console.dialogs import DeployDialog, TextDialog
from ui.console.frame import call, expose_markers, frame, guard, session_of
from ui.console.sessions import Session

JOB_POLL_S = 1.0
STATE_COLORS = {"canary": "orange-8", "fleet": "blue-7", "done": "green-7", "failed": "red-8",
                "rolled_back": "purple-7", "halted": "grey-7", "superseded": "grey-6"}
OUTCOME_COLORS = {"promoted": "green-7", "rejected": "red-7"}


def _columns(*fields: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": f, "label": label, "field": f, "align": "left"} for f, label in fields]


_COMPARISON = _columns(("measure", "Measure"), ("challenger", "Challenger (this run)"),
                       ("champion", "Champion"))
_METRICS = _columns(("metric", "Metric"), ("value", "Value"))
_REGISTERED = _columns(("profile", "Profile"), ("version", "Registry version"),
                       ("bundle", "Bundle version"), ("outcome", "Gate"), ("role", "Role"),
                       ("run", "Training run"))
_RUNNING = _columns(("gateway", "Gateway"), ("profile", "Profile"), ("version", "Version"),
                    ("since", "Since"), ("reason", "Last change"))
_TARGETS = _columns(("gateway", "Gateway"), ("stage", "Stage"), ("previous", "Before"),
                    ("status", "Status"), ("scored", "Readings scored"),
                    ("reason", "Reason"), ("updated", "Updated (UTC)"))
_DRIFT = _columns(("at", "Recorded"), ("device", "Device"), ("model", "Compared with"),
                  ("moved", "Features that moved (PSI)"), ("method", "Test"),
                  ("retrain", "Retraining"))


def _table(columns: list[dict[str, Any]], rows: list[dict[str, str]], key: str,
           marker: str) -> None:
    ui.table(columns=columns, rows=rows, row_key=key,
             pagination={"rowsPerPage": 0}).classes("w-full").props(
        "dense flat bordered hide-pagination").mark(marker)


def register(console: Console) -> None:
    """Add the Models page at /models."""

    @ui.page("/models", title="Models · Smart Maintenance console")
    async def models_page() -> RedirectResponse | None:
        if (redirect := guard(console, "/models")) is not None:
            return redirect
        session = session_of(console)
        with frame(console, session, "Models"):
            page = ModelsPage(console, session)
            page.build()
            await page.refresh()
        return None


class ModelsPage:
    """The sections, dialogs and timers of one open Models page."""

    def __init__(self, console: Console, session: Session) -> None:
        self.console, self.session = console, session
        self.client = ui.context.client
        self._shown = ""
        self._gateways: list[str] = []
        self._job: dict[str, Any] | None = None
        # One dialog asks the reason for both (its title says which): one confirm button.
        self._how = "rollback"
        self.reason = TextDialog("", "Reason (kept in the rollout and the audit log)",
                                 "Confirm", self._stop)
        self.deploy = DeployDialog(self._deploy)

    def build(self) -> None:
        """Retrain, the sections, and the refresh and job timers."""
        with ui.row().classes("items-center w-full gap-3"):
            if self.session.may("admin"):
                ui.button("Retrain now", icon="model_training", on_click=self._retrain).mark(
                    "retrain")
            self.job = ui.label().classes("text-body2").mark("retrain-job")
        self.sections = ui.column().classes("w-full gap-3").mark("models-sections")
        ui.timer(self.console.config.refresh_s, self.refresh)
        ui.timer(JOB_POLL_S, self._poll_job)

    async def refresh(self) -> None:
        """Fetch everything; redraw if anything changed."""
        data = await call(self.console, md.fetch)
        if data is None:
            return
        key = data.key()
        if key == self._shown:
            return
        self._shown = key
        self._gateways = data.gateways
        self.sections.clear()
        with self.sections:
            self._runs(data.runs)
            self._registered(data.runs)
            self._running(data.running)
            self._rollouts(data.rollouts)
            self._drift(data.drift)
        expose_markers(self.client)

    # -- sections ---------------------------------------------------------------------------

    def _runs(self, runs: list[dict[str, Any]]) -> None:
        ui.label("Training runs (MLflow)").classes("text-h6")
        if not runs:
            who = "" if self.session.may("admin") else " by an admin"
            ui.label(f"No training run in MLflow yet: “Retrain now”{who} starts one.").mark(
                "no-runs")
            return
        for run in runs:
            self._run_card(run)

    def _run_card(self, run: dict[str, Any]) -> None:
        with ui.card().classes("w-full q-pa-sm").mark(f"run-{run['run_id']}"):
            with ui.row().classes("items-center w-full gap-3"):
                if run["gate_outcome"]:
                    ui.badge(run["gate_outcome"],
                             color=OUTCOME_COLORS.get(run["gate_outcome"], "grey-7"))
                ui.label(run["name"] or run["run_id"]).classes(
                    "text-subtitle1 text-weight-medium")
                ui.label(f"profile {run['profile'] or 'not tagged'} · {run['status'].lower()}"
                         f" · started {timefmt.stamp(run['started'], 'not yet')} UTC"
                         f" · by {run['actor'] or 'unknown'}").classes("text-body2 text-grey-8")
                ui.space()
                if run["bundle_version"] and self.session.may("admin"):
                    ui.button("Deploy", icon="rocket_launch",
                              on_click=lambda r=run: self.deploy.open(r, self._gateways)
                              ).props("dense outline").mark("deploy")
            made = []
            if run["registered_version"]:
                made.append(f"registry version {run['registered_version']}")
            if run["bundle_version"]:
                made.append(f"bundle {run['bundle_version']}")
            if made:
                ui.label(" · ".join(made)).classes("text-body2").mark("run-made")
            if run["gate_reason"]:
                ui.label(f"Gate: {run['gate_reason']}").classes("text-body2").mark("gate")
            rows = md.comparison(run)
            if rows:
                ui.label("Champion and challenger on the same held-out data").classes(
                    "text-subtitle2")
                _table(_COMPARISON, rows, "measure", "comparison")
            if run["metrics"]:
                with ui.expansion(f"All {len(md.run_metrics(run))} metrics of the run").classes(
                        "w-full").props("dense").mark("run-metrics"):
                    _table(_METRICS, md.run_metrics(run), "metric", "metrics-table")

    def _registered(self, runs: list[dict[str, Any]]) -> None:
        rows = md.registered(runs)
        if not rows:
            return
        ui.label("Registered versions").classes("text-h6")
        _table(_REGISTERED, rows, "key", "registered-versions")

    def _running(self, running: list[dict[str, Any]]) -> None:
        ui.label("Running on the gateways").classes("text-h6")
        if not running:
            ui.label("No gateway has reported running a model yet.").mark("no-running")
            return
        _table(_RUNNING, md.running_rows(running), "key", "running-models")

    def _rollouts(self, rollouts: list[dict[str, Any]]) -> None:
        ui.label("Rollouts").classes("text-h6")
        if not rollouts:
            how = " “Deploy” on a training run starts one." if self.session.may("admin") else ""
            ui.label(f"No rollout yet.{how}").mark("no-rollouts")
            return
        for rollout in rollouts:
            self._rollout_card(rollout)

    def _rollout_card(self, r: dict[str, Any]) -> None:
        may_act = self.session.may("operator")
        with ui.card().classes("w-full q-pa-sm").mark(f"rollout-{r['rollout_id']}"):
            with ui.row().classes("items-center w-full gap-3"):
                ui.badge(r["state"], color=STATE_COLORS.get(r["state"], "grey-7")).mark(
                    "rollout-state")
                ui.label(f"{r['profile']} {r['version']}").classes(
                    "text-subtitle1 text-weight-medium")
                ui.label(f"rollout {r['rollout_id']} · by {r['created_by']} "
                         f"{timefmt.stamp(r['created_at'])} UTC · canary time limit "
                         f"{r['canary_timeout_s'] // 60} min").classes("text-body2 text-grey-8")
                ui.space()
                if may_act and r["state"] not in md.NOT_ROLLED_BACK:
                    ui.button("Roll back", icon="undo",
                              on_click=lambda x=r: self._ask("rollback", x)).props(
                        "dense outline").mark("rollback")
                if may_act and r["state"] in md.ACTIVE:
                    ui.button("Cancel", icon="block",
                              on_click=lambda x=r: self._ask("cancel", x)).props(
                        "dense outline").mark("cancel-rollout")
            ui.label(md.progress(r)).classes("text-body2").mark("rollout-progress")
            if r["reason"]:
                ui.label(r["reason"]).classes("text-body2 text-grey-8").mark("rollout-reason")
            _table(_TARGETS, md.target_rows(r), "gateway", "rollout-targets")

    def _drift(self, events: list[dict[str, Any]]) -> None:
        ui.label("Drift events").classes("text-h6")
        if not events:
            ui.label("No drift recorded: every checked device's features stay close to its "
                     "model's training data.").mark("no-drift")
            return
        _table(_DRIFT, md.drift_rows(events), "key", "drift-events")

    # -- actions (each one API call as the signed-in user) -----------------------------------

    async def _deploy(self, spec: dict[str, Any]) -> bool:
        done = await call(self.console, lambda api: api.deploy(spec))
        if done is not None:
            ui.notify(f"Rollout {done['rollout_id']} started: {spec['version']} to "
                      f"{', '.join(spec['canaries'])} first.", type="positive")
        await self.refresh()
        return done is not None

    def _ask(self, how: str, rollout: dict[str, Any]) -> None:
        self._how = how
        self.reason.open(rollout)
        verb = "Roll back" if how == "rollback" else "Cancel"
        self.reason.title.set_text(f"{verb} rollout {rollout['rollout_id']} "
                                   f"({rollout['profile']} {rollout['version']})")

    async def _stop(self, rollout: dict[str, Any], reason: str) -> bool:
        how = self._how
        if not reason.strip():
            ui.notify("Give a reason: it is kept in the rollout and the audit log.",
                      type="warning")
            return False
        rid = int(rollout["rollout_id"])
        done = await call(self.console, lambda api: (
            api.rollback(rid, reason.strip()) if how == "rollback"
            else api.cancel(rid, reason.strip())),
            f"Rollout {rid} is {'rolled back' if how == 'rollback' else 'cancelled'} now.")
        await self.refresh()
        return done is not None

    async def _retrain(self) -> None:
        job_id = await call(self.console, lambda api: api.retrain({}))
        if job_id is None:
            return
        ui.notify(f"Training job {job_id} queued: every profile, the last week's data.",
                  type="positive")
        self._job = {"job_id": job_id}
        await self._poll_job()

    async def _poll_job(self) -> None:
        if self._job is None or self._job.get("status") in md.JOB_OVER:
            return
        job_id = int(self._job["job_id"])
        job = await call(self.console, lambda api: api.training_job(job_id))
        if job is None or job == self._job:
            return
        self._job = job
        self.job.set_text(md.job_line(job))
        if job["status"] in md.JOB_OVER:
            await self.refresh()

