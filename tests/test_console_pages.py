"""The console's page logic with NiceGUI's simulated user, on a real cloud app (PostgreSQL,
the real ingest path) called in process exactly as ``smaint cloud serve`` calls it.

No browser here: tests/test_console_browser.py has those.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from nicegui import core, ui
from nicegui.testing.general import nicegui_reset_globals, prepare_simulation
from nicegui.testing.user import User

from cloud.access.users import revoke_key
from cloud.api.app import create_app
from cloud.artifacts import LocalArtifactStore
from cloud.drift.check import DriftEvent
from cloud.ingest.batch import apply_batch
from cloud.rollout import RolloutCreate, create_rollout
from cloud.rollout.rollouts import bundle_key
from cloud.settings import CloudSettings
from shared.schemas import MANUAL_BOOT, Alert, Reading, SyncBatch
from tests.fixtures.bundles import V2, make_bundles
from tests.fixtures.console import ALERTS, SeededCloud, readings, seed
from tests.fixtures.factories import make_alert
from tests.fixtures.waiting import wait_until_async
from ui.console import explorer_data, models_data
from ui.console.config import ConsoleConfig
from ui.console.explorer_data import View
from ui.console.pages import register
from ui.console.server import console_for
from ui.console.sessions import Sessions
from ui.panel.pages import device as panel_device
from ui.score_axis import SCORE_FLOOR

PATIENT = 50  # should_see retries (0.1 s each) for answers that cross the threadpool


@dataclass
class Harness:
    """The simulated user, the seeded database and the console's sign-ins."""

    user: User
    cloud: SeededCloud
    sessions: Sessions


@asynccontextmanager
async def console_user(dsn: str, **settings: Any) -> AsyncIterator[Harness]:
    """A seeded cloud app (its lifespan running) and the console's pages in simulation;
    ``settings`` are more sections of the cloud's settings."""
    cloud = seed(dsn)
    app = create_app(CloudSettings(db={"dsn": dsn}, jobs={"worker_enabled": False},
                                   **settings))
    console = console_for(app, ConsoleConfig(refresh_s=0.5, failed_sign_in_delay_s=0.0))
    async with app.router.lifespan_context(app):
        with nicegui_reset_globals():
            os.environ["NICEGUI_USER_SIMULATION"] = "true"
            try:
                prepare_simulation()
                register(console)
                ui.run(storage_secret="console test secret")
                async with core.app.router.lifespan_context(core.app), httpx.AsyncClient(
                        transport=httpx.ASGITransport(core.app),
                        base_url="http://test") as client:
                    yield Harness(User(client), cloud, console.sessions)
            finally:
                os.environ.pop("NICEGUI_USER_SIMULATION", None)


async def sign_in(h: Harness, role: str) -> None:
    """Sign in with the API key of ``role``; lands on the fleet page."""
    await h.user.open("/login")
    h.user.find(marker="api-key").type(h.cloud.keys[role])
    h.user.find(marker="sign-in").click()
    await h.user.should_see(marker="fleet-summary", retries=PATIENT)


async def test_pages_need_a_sign_in_and_an_unknown_key_gets_none(pg_dsn: str) -> None:
    async with console_user(pg_dsn) as h:
        for path in ("/", "/explorer", "/alerts", "/orders", "/models"):
            await h.user.open(path)
            await h.user.should_see(marker="sign-in")
        h.user.find(marker="api-key").type("smk_not-a-key")
        h.user.find(marker="sign-in").click()
        await h.user.should_see("Not signed in: invalid API key.", retries=PATIENT)
        await h.user.should_not_see(marker="whoami")
        # After the sign-in, the page first asked for, with its query.
        await h.user.open("/explorer?device=motor-002&metric=current_a")
        h.user.find(marker="api-key").type(h.cloud.keys["viewer"])
        h.user.find(marker="sign-in").click()
        await h.user.should_see("raw readings of current_a", retries=PATIENT)
        await h.user.should_see("viewer (viewer)")
        await h.user.open("/")
        await h.user.should_see("2 gateways (2 online) · 3 devices · 4 unresolved alerts")


async def test_a_revoked_key_ends_the_session_at_its_next_request(pg_dsn: str) -> None:
    async with console_user(pg_dsn) as h:
        await sign_in(h, "operator")
        with psycopg.connect(h.cloud.dsn) as conn:
            revoke_key(conn, "operator", 2)  # keys 1..3 went to viewer, operator, admin
        await h.user.open("/alerts")  # the page's first API call gets 401
        await h.user.should_see("Your session has ended: sign in again.", retries=PATIENT)
        await h.user.open("/alerts")
        await h.user.should_see(marker="sign-in")


def test_a_session_ends_when_its_lifetime_is_over() -> None:
    sessions = Sessions(lifetime_s=8 * 3600)
    session = sessions.start("browser-1", "smk_x", "alice", "operator")
    assert sessions.get("browser-1") is session
    session.expires_at = time.monotonic() - 1  # as if eight hours had passed
    assert sessions.get("browser-1") is None
    assert sessions.get("browser-1") is None  # and it stays gone
    assert session.may("viewer")
    assert not session.may("admin")


async def test_a_viewer_gets_no_actions_and_an_operator_acknowledges_with_a_comment(
        pg_dsn: str) -> None:
    gateway, alert_id = "gw-1", ALERTS[0][0]
    async with console_user(pg_dsn) as h:
        await sign_in(h, "viewer")
        await h.user.open("/alerts")
        await h.user.should_see(marker=f"alert-{gateway}/{alert_id}", retries=PATIENT)
        await h.user.should_see(marker="audit-trail")
        await h.user.should_not_see(marker="acknowledge")
        await h.user.should_not_see(marker="resolve")
        await h.user.should_not_see(marker="create-order")

        h.user.find(marker="sign-out").click()
        await h.user.should_see(marker="sign-in", retries=PATIENT)
        await sign_in(h, "operator")
        await h.user.open("/alerts")
        await h.user.should_see(marker=f"alert-{gateway}/{alert_id}", retries=PATIENT)
        with h.user.scope(marker=f"alert-{gateway}/{alert_id}"):
            h.user.find(marker="acknowledge").click()
        h.user.find(marker="dialog-comment").type("on my way")
        h.user.find(marker="dialog-confirm").click()
        await h.user.should_see("Alert acknowledged.", retries=PATIENT)
        headers = {"Authorization": f"Bearer {h.cloud.keys['viewer']}"}
        app = create_app(CloudSettings(db={"dsn": h.cloud.dsn}, jobs={"worker_enabled": False}))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://api") as api:
            shown = (await api.get(f"/api/v1/alerts/{gateway}/{alert_id}",
                                   headers=headers)).json()
        assert (shown["state"], shown["acknowledged_by"], shown["comment"]) == (
            "acknowledged", "operator", "on my way")


def _view(kind: str, **fields: object) -> View:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return View("m-1", "temperature_c", start, start + timedelta(hours=1), kind,  # type: ignore[arg-type]
                **fields)  # type: ignore[arg-type]


def test_bucket_widths_are_whole_minutes_for_about_five_hundred_buckets() -> None:
    assert explorer_data.bucket_width(timedelta(minutes=10)) == 60
    assert explorer_data.bucket_width(timedelta(days=1)) == 180
    assert explorer_data.bucket_width(timedelta(days=30)) == 5220
    assert explorer_data.bucket_width(timedelta(days=30)) % 60 == 0


def test_a_zoom_event_narrows_the_range_and_a_full_one_does_not() -> None:
    view = _view("buckets")
    since, until = explorer_data.zoomed(view, {"start": 50, "end": 75}) or (None, None)
    assert (since, until) == (view.since + timedelta(minutes=30),
                              view.since + timedelta(minutes=45))
    lo = int((view.since + timedelta(minutes=6)).timestamp() * 1000)
    got = explorer_data.zoomed(view, {"batch": [{"startValue": lo, "endValue": lo + 60_000}]})
    assert got == (view.since + timedelta(minutes=6), view.since + timedelta(minutes=7))
    assert explorer_data.zoomed(view, {"start": 0, "end": 100}) is None
    assert explorer_data.zoomed(view, {"type": "datazoom"}) is None


def test_the_score_is_drawn_on_a_log_axis_like_the_panels() -> None:
    # Normal readings score a fraction of the threshold, a spike thousands: on a linear axis
    # the normal ones are a flat line at zero. Zero itself sits on the log axis's floor.
    base = {"device": "m-1", "gateway": "gw-1", "boot": "b", "scorer": "stat",
            "model_version": None, "anomalous": False}
    view = _view("raw", readings=[
        {**base, "seq": i, "ts_ms": 1_735_689_600_000 + i * 1000, "score": score,
         "metrics": {"temperature_c": 41.0}} for i, score in enumerate((0.0, 0.3, 2500.0))])
    options = explorer_data.chart_options(view)
    axis = options["yAxis"][1]
    assert (axis["type"], axis["min"]) == ("log", SCORE_FLOOR)
    assert axis["name"] == panel_device.chart_options([], [], [], 0)["yAxis"][1]["name"]
    scores = next(s for s in options["series"] if s.get("yAxisIndex") == 1)
    assert [v for _, v in scores["data"]] == [SCORE_FLOOR, 0.3, 2500.0]


def test_a_refresh_of_the_same_layout_has_the_same_shape_and_a_new_layout_does_not() -> None:
    # A refresh with the same shape is merged into the mounted chart; only then does
    # ECharts' merge overwrite every setting.
    base = {"device": "m-1", "gateway": "gw-1", "boot": "b", "scorer": "stat",
            "model_version": None, "anomalous": False, "score": 0.2}

    def raw(n: int, anomalous: bool = False) -> dict[str, Any]:
        return explorer_data.chart_options(_view("raw", readings=[
            {**base, "seq": i, "ts_ms": 1_735_689_600_000 + i * 1000, "anomalous": anomalous,
             "metrics": {"temperature_c": 41.0 + i}} for i in range(n)]))

    assert explorer_data.shape(raw(3)) == explorer_data.shape(raw(7))
    assert explorer_data.shape(raw(3)) != explorer_data.shape(
        explorer_data.chart_options(_view("buckets")))
    changed = raw(3)
    changed["series"][0]["markLine"] = {"data": []}
    assert explorer_data.shape(changed) != explorer_data.shape(raw(3))


def test_the_csv_holds_exactly_the_drawn_readings() -> None:
    base = {"device": "m-1", "gateway": "gw-1", "boot": "b", "scorer": "stat",
            "model_version": None, "score": 0.5, "anomalous": False}
    view = _view("raw", readings=[
        {**base, "seq": 1, "ts_ms": 1_735_689_600_000, "metrics": {"temperature_c": 41.5}},
        {**base, "seq": 2, "ts_ms": 1_735_689_601_000, "metrics": {"current_a": 3.0}},
        {**base, "seq": 3, "ts_ms": 1_735_689_602_000, "metrics": {"temperature_c": 42.0},
         "anomalous": True, "score": None}])
    lines = explorer_data.csv_text(view).splitlines()
    assert lines == [
        "ts,device,gateway,boot,seq,temperature_c,score,scorer,model_version,anomalous,"
        "origin,note",
        "2025-01-01T00:00:00+00:00,m-1,gw-1,b,1,41.5,0.5,stat,,false,sensor,",
        "2025-01-01T00:00:02+00:00,m-1,gw-1,b,3,42.0,,stat,,true,sensor,",
    ]
    assert view.points() == 2
    assert len(explorer_data.chart_options(view)["series"][0]["data"]) == 2


def test_the_system_route_names_each_connection_and_its_state(pg_dsn: str) -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    keys = seed(pg_dsn).keys
    app = create_app(CloudSettings(db={"dsn": pg_dsn}, jobs={"worker_enabled": False}))
    with TestClient(app) as client:
        assert client.get("/api/v1/system").status_code == 401
        info = client.get("/api/v1/system",
                          headers={"Authorization": f"Bearer {keys['viewer']}"}).json()
    assert info["environment"] == "development"
    states = {c["name"]: (c["state"], c["target"]) for c in info["connections"]}
    assert states["database"][0] == "ok"
    assert states["database"][1].endswith(pg_dsn.rsplit("dbname=", 1)[1])
    assert set(states) == {"database", "mlflow", "artifact store"}
    assert info["versions"]["python"].count(".") == 2


@pytest.mark.parametrize("env", ["development", "production"])
def test_docs_are_served_with_local_assets_in_development_only(pg_dsn: str, env: str) -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    dsn = {"dsn": pg_dsn}
    public_url = "https://cloud.example" if env == "production" else ""
    app = create_app(CloudSettings(env=env, db=dsn, jobs={"worker_enabled": False},
                                   public_url=public_url))
    with TestClient(app) as client:
        page = client.get("/docs")
        if env == "production":
            assert page.status_code == 404
            return
        assert page.status_code == 200
        assert "cdn" not in page.text.lower()
        assert 'src="/docs-assets/swagger-ui-bundle.js"' in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert client.get(f"/docs-assets/{asset}").status_code == 200


async def test_the_fleet_and_the_explorer_follow_new_uploads_without_a_reload(
        pg_dsn: str) -> None:
    async with console_user(pg_dsn) as h:
        await sign_in(h, "viewer")
        await h.user.should_see("4 unresolved alerts")
        later = h.cloud.now_ms + 1000
        push(h.cloud.dsn, 100, [r.model_copy(update={"seq": 5000 + i})
                                for i, r in enumerate(readings("motor-001", 3, 100, later))],
             [make_alert("a1000009-0001", "motor-001", opened_ms=later)])
        await h.user.should_see("5 unresolved alerts", retries=PATIENT)  # same page, no reload

        await h.user.open("/explorer?device=motor-001&metric=temperature_c")
        await h.user.should_see("raw readings of temperature_c", retries=PATIENT)
        before = caption_text(h)
        chart_before = {e.id for e in h.user.find(marker="explorer-chart").elements}
        newest = later + 10_000
        push(h.cloud.dsn, 101, [r.model_copy(update={"seq": 6000})
                                for r in readings("motor-001", 1, 100, newest)])
        await h.user.should_see(marker="chart-caption", retries=PATIENT)
        await wait_until_async(lambda: caption_text(h) != before, 15,
                               "the explorer to redraw with the new reading")
        assert caption_text(h).split(" raw readings")[0] != before.split(" raw readings")[0]
        # Redrawn in place: a chart replaced on every refresh raced its own mounting.
        assert {e.id for e in h.user.find(marker="explorer-chart").elements} == chart_before
        # Another range, asked for, gets a chart of its own (no zoom window merged over).
        h.user.find(marker="range-select").click()
        h.user.find("Latest 15 minutes of data").click()
        await wait_until_async(lambda: {e.id for e in h.user.find(
            marker="explorer-chart").elements} != chart_before, 15, "a new chart for the range")


async def test_manual_entries_and_simulated_faults_are_marked_in_explorer_and_alerts(
        pg_dsn: str) -> None:
    """A technician's entries (a measurement with a note, a note alone) are drawn MANUAL and
    their notes listed; readings and an alert of an injected fault are marked SIMULATED; the
    CSV says each reading's origin."""
    async with console_user(pg_dsn) as h:
        at = h.cloud.now_ms + 1000
        sim = [r.model_copy(update={"seq": 7000 + i, "origin": "simulated"})
               for i, r in enumerate(readings("motor-001", 3, 100, at))]
        manual = [
            Reading(device="motor-001", boot=MANUAL_BOOT, seq=0, type="motor", ts_ms=at + 50,
                    device_ts_ms=None, received_ms=at + 50, metrics={"temperature_c": 61.5},
                    score=None, scorer="none", anomalous=False, origin="manual",
                    note="bearing housing warm"),
            Reading(device="motor-001", boot=MANUAL_BOOT, seq=1, type="motor", ts_ms=at + 60,
                    device_ts_ms=None, received_ms=at + 60, metrics={}, score=None,
                    scorer="none", anomalous=False, origin="manual", note="belt checked")]
        drill = make_alert("a1000009-0002", "motor-001", opened_ms=at).model_copy(
            update={"simulated": True})
        push(h.cloud.dsn, 102, [*sim, *manual], [drill])
        await sign_in(h, "viewer")
        await h.user.open("/explorer?device=motor-001&metric=temperature_c")
        await h.user.should_see("2 manual entries by a technician (2 with a note) are marked "
                                "MANUAL", retries=PATIENT)
        await h.user.should_see("3 readings carry an injected SIMULATED fault")
        await h.user.should_see("MANUAL · temperature_c = 61.5 · bearing housing warm")
        await h.user.should_see("MANUAL · belt checked")
        (chart,) = h.user.find(marker="explorer-chart").elements
        names = {s["name"]: len(s["data"]) for s in chart.props["options"]["series"]}
        assert (names["MANUAL measurement"], names["SIMULATED fault"]) == (1, 3)
        await h.user.open("/alerts")
        await h.user.should_see(marker="simulated", retries=PATIENT)
        (badge,) = h.user.find(marker="simulated").elements
        assert badge.text == "SIMULATED"  # type: ignore[attr-defined]


def push(dsn: str, batch_seq: int, rows: list[Reading], alerts: list[Alert] | None = None
         ) -> None:
    """One more sync batch from gw-1 through the real ingest."""
    with psycopg.connect(dsn) as conn:
        apply_batch(conn, SyncBatch(gateway="gw-1", batch_seq=batch_seq, created_ms=rows[0].ts_ms,
                                    readings=rows, alerts=alerts or []), "gw-1")


def caption_text(h: Harness) -> str:
    """The explorer's caption as shown now."""
    label = h.user.find(kind=ui.label, marker="chart-caption").elements.pop()
    return str(label.text)


def _table_rows(h: Harness, marker: str) -> list[dict[str, Any]]:
    (table,) = h.user.find(marker=marker, kind=ui.table).elements
    return list(table.rows)


async def test_models_lists_the_rollouts_a_viewer_only_reads_and_an_operator_rolls_back(
        pg_dsn: str, tmp_path: Path) -> None:
    art = LocalArtifactStore(tmp_path / "art")
    async with console_user(pg_dsn, artifacts={"local_root": str(tmp_path / "art")},
                            training={"data_dir": str(tmp_path / "training")}) as h:
        art.put_bytes(bundle_key("motor", V2), make_bundles().make(V2, h.cloud.now_ms))
        with psycopg.connect(h.cloud.dsn) as conn:
            rollout = create_rollout(conn, "admin", RolloutCreate(
                profile="motor", version=V2, canaries=["gw-1"], fleet=["gw-2"],
                min_scored=50), art)
        card = f"rollout-{rollout.rollout_id}"
        await sign_in(h, "viewer")
        await h.user.open("/models")
        await h.user.should_see(marker=card, retries=PATIENT)
        with h.user.scope(marker=card):
            await h.user.should_see(f"motor {V2}")
            await h.user.should_see("0 of 2 gateways run it · 0 of 1 canaries scored 50 "
                                    "readings with it")
        rows = _table_rows(h, "rollout-targets")
        assert [(r["gateway"], r["stage"], r["previous"], r["status"], r["scored"])
                for r in rows] == [("gw-1", "canary", "v3", "pending", "0 / 50"),
                                   ("gw-2", "fleet", "no model", "pending", "0")]
        running = _table_rows(h, "running-models")
        assert [(r["gateway"], r["profile"], r["version"]) for r in running] == [
            ("gw-1", "motor", "v3")]
        await h.user.should_see(marker="no-runs")
        await h.user.should_see(marker="no-drift")
        for action in ("retrain", "deploy", "rollback", "cancel-rollout"):
            await h.user.should_not_see(marker=action)

        h.user.find(marker="sign-out").click()
        await h.user.should_see(marker="sign-in", retries=PATIENT)
        await sign_in(h, "operator")
        await h.user.open("/models")
        await h.user.should_see(marker=card, retries=PATIENT)
        await h.user.should_not_see(marker="retrain")  # admins only, as the API
        with h.user.scope(marker=card):
            h.user.find(marker="rollback").click()
        h.user.find(marker="dialog-comment").type("alerts doubled on gw-1")
        h.user.find(marker="dialog-confirm").click()
        await h.user.should_see(f"Rollout {rollout.rollout_id} is rolled back now.",
                                retries=PATIENT)
        with h.user.scope(marker=card):
            await h.user.should_see("rolled back by operator: alerts doubled on gw-1")
            await h.user.should_not_see(marker="rollback")
            await h.user.should_not_see(marker="cancel-rollout")
        with psycopg.connect(h.cloud.dsn) as conn:
            state = conn.execute("SELECT state FROM model_rollouts WHERE rollout_id = %s",
                                 (rollout.rollout_id,)).fetchone()
        assert state == ("rolled_back",)


def test_drift_rows_name_the_moved_features_worst_first_and_the_retraining() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    event = DriftEvent(
        event_id=7, device="motor-001", profile="motor", model_name="smaint-motor",
        model_version="3", bundle_version="motor-1000", window_since=at,
        window_until=at + timedelta(days=1), windows=240, method="psi", threshold=0.25,
        scores={"temperature_c": 0.4, "current_a": 0.9, "vibration_rms_g": 0.1},
        moved=["temperature_c", "current_a"], retrain_job_id=12, retrain_run_id="r1",
        retrain_version="4", gate_outcome="rejected", gate_reason="worse",
        retrained_at=at, created_at=at).model_dump(mode="json")
    (row,) = models_data.drift_rows([event])
    assert (row["device"], row["model"], row["moved"], row["method"], row["retrain"]) == (
        "motor-001", "smaint-motor v3", "current_a 0.90, temperature_c 0.40",
        "psi > 0.25 over 240 windows", "rejected (version 4)")
    queued = {**event, "gate_outcome": None, "retrain_version": None}
    assert models_data.drift_rows([queued])[0]["retrain"] == "queued"


def test_the_comparison_lists_what_both_models_logged_and_the_newest_promoted_is_champion(
        ) -> None:
    run = {"run_id": "r2", "name": "motor-2", "profile": "motor", "registered_version": "2",
           "bundle_version": "motor-2000", "gate_outcome": "promoted",
           "metrics": {"heldout_anomaly_rate": 0.0125, "champion.heldout_anomaly_rate": 0.02,
                       "recall": 1.0, "heldout_windows": 400.0,
                       "champion.heldout_windows": 400.0}}
    assert models_data.comparison(run) == [
        {"measure": "held-out windows flagged (share)", "challenger": "0.0125",
         "champion": "0.02"},
        {"measure": "held-out windows scored", "challenger": "400", "champion": "400"}]
    assert [m["metric"] for m in models_data.run_metrics(run)] == [
        "heldout_anomaly_rate", "heldout_windows", "recall"]
    older = {**run, "run_id": "r1", "name": "motor-1", "registered_version": "1",
             "bundle_version": "motor-1000", "metrics": {}}
    rejected = {**run, "run_id": "r3", "name": "motor-3", "registered_version": "3",
                "gate_outcome": "rejected"}
    assert [(r["version"], r["outcome"], r["role"]) for r in models_data.registered(
        [rejected, run, older])] == [("3", "rejected", ""), ("2", "promoted", "champion"),
                                     ("1", "promoted", "")]
