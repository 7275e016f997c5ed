"""Models: the version running per sensor profile, since when, from where, its rollout (with
shadow results while one runs) and the previous versions kept for a rollback."""

from __future__ import annotations

from nicegui import ui
from starlette.responses import RedirectResponse

from ui.panel import snapshot, units
from ui.panel.context import Panel
from ui.panel.frame import frame, guard
from ui.panel.pages.sync import fact

_STEP_COLOR = {"downloading": "primary", "verifying": "primary", "shadow": "orange-8",
               "running": "positive", "rolled_back": "negative", "refused": "negative"}


def _card(row: snapshot.ModelRow) -> None:
    with ui.card().classes("w-full").mark(f"model-{row.profile}"):
        with ui.row().classes("items-center"):
            ui.label(row.profile).classes("text-h6")
            ui.badge(row.version or "statistical detector",
                     color="primary" if row.version else "grey-7").mark("model-version")
        with ui.grid(columns="14rem auto").classes("gap-y-1"):
            if row.version is not None:
                fact("Running since", units.clock(row.since_ms), "model-since")
                fact("Source", row.source, "model-source")
                fact("Threshold / warm-up", f"{row.threshold:.4g} / {row.warmup} readings",
                     "model-threshold")
                fact("Trained", units.clock(row.created_ms), "model-created")
            else:
                fact("Source", row.source, "model-source")
            fact("Cloud wants", row.desired or "nothing named (keeps what runs)",
                 "model-desired")
            fact("Kept for rollback", ", ".join(row.kept) or (
                "no earlier bundle on disk: a rollback resumes the statistical detector"
                if row.version else "no earlier version on disk"), "model-kept")
            if row.refused:
                fact("Last bundle refused", row.refused, "model-refused")
        rep = row.rollout
        if rep is None:
            ui.label("No rollout has reached this gateway for this profile.").classes(
                "text-body2 text-grey-8")
            return
        with ui.row().classes("items-center q-mt-sm"):
            ui.label(f"Rollout of {rep.version}:").classes("text-subtitle1")
            ui.badge(rep.step.replace("_", " "), color=_STEP_COLOR[rep.step]).mark(
                "rollout-step")
            ui.label(f"since {units.clock(rep.at_ms)}").classes("text-body2")
        with ui.grid(columns="14rem auto").classes("gap-y-1"):
            if rep.reason:
                fact("Why", rep.reason, "rollout-reason")
            fact("Previous version", rep.previous_version or "statistical detector",
                 "rollout-previous")
            if rep.shadow_readings:
                rate = ("-" if rep.shadow_alert_rate is None
                        else f"{rep.shadow_alert_rate:.1%}")
                fact("Shadow run", f"{rep.shadow_readings} readings scored beside the running "
                     f"model, alert rate {rate}", "rollout-shadow")
            run = row.shadow
            if run is not None:
                fact("Shadow verdicts", f"of {run.readings} readings the candidate flagged "
                     f"{run.candidate_flagged}, the running scorer {run.current_flagged}; "
                     f"they agreed on {run.agreed / run.readings:.0%}", "rollout-verdicts")
            if rep.step == "running" and rep.scored:
                fact("Scored since the swap", f"{rep.scored} readings", "rollout-scored")


def register(panel: Panel) -> None:
    """Add the Models page at /models."""

    @ui.page("/models", title=f"Models · {panel.gateway.settings.gateway_id}")
    def models_page() -> RedirectResponse | None:
        if (redirect := guard(panel, "/models")) is not None:
            return redirect
        with frame(panel, "Models"):

            @ui.refreshable
            def body() -> None:
                for row in snapshot.models(panel.gateway):
                    _card(row)

            body()
            ui.timer(panel.refresh_s, body.refresh)
        return None
