"""The gateway panel's page logic, with NiceGUI's simulated user on a real gateway's data.

The gateway is real (its database, pipeline, scorer, alert tracker, outbox); readings come in
through its pipeline as from MQTT. No browser here: tests/test_panel_browser.py has those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from nicegui import ui

from edge.service import Gateway
from edge.site_ca import ensure_site_ca
from shared.bundle import public_key_text
from shared.schemas import DesiredState, RolloutReport, RolloutStep
from tests.fixtures.panel import (
    PASSWORD,
    PATIENT,
    feed,
    gateway,
    panel,
    panel_user,
    sign_in,
)
from tests.fixtures.waiting import wait_until_async
from ui.panel import snapshot
from ui.panel.pages.alerts import acknowledge, explanation_rows


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = gateway(tmp_path)
    try:
        yield g
    finally:
        g.store.close()


async def test_every_page_needs_a_sign_in_and_the_wrong_password_gets_none(gw: Gateway) -> None:
    async with panel_user(panel(gw)) as user:
        for path in ("/", "/alerts", "/sync", "/models", "/health", "/devices/motor-1"):
            await user.open(path)
            await user.should_see(marker="sign-in")
        user.find(marker="password").type("not the password")
        user.find(marker="sign-in").click()
        await user.should_see("Wrong password.", retries=PATIENT)
        await user.should_not_see(marker="devices-table")


async def test_first_start_needs_the_setup_code_then_the_chosen_password_signs_in(
        gw: Gateway) -> None:
    p = panel(gw, password=None)
    code = p.auth.setup_code_file.read_text().strip()
    async with panel_user(p) as user:
        await user.open("/")
        await user.should_see("Choose the panel password")
        user.find(marker="setup-code").type("00000000")
        user.find(marker="new-password").type("a new password")
        user.find(marker="new-password-again").type("a new password")
        user.find(marker="set-password").click()
        await user.should_see("wrong setup code", retries=PATIENT)
        assert not p.auth.configured
        user.find(marker="setup-code").clear().type(code)
        user.find(marker="set-password").click()
        await user.should_see(marker="sign-in", retries=PATIENT)
        assert p.auth.configured
        assert not p.auth.setup_code_file.exists()
        await sign_in(user, "a new password")
        await user.should_see(marker="devices-table")


async def test_devices_page_lists_each_device_with_its_rate_gaps_and_last_reading(
        gw: Gateway) -> None:
    feed(gw, "motor-1", 20)
    feed(gw, "motor-2", 10)
    feed(gw, "motor-2", 5, first_seq=15)  # seqs 10..14 never arrive: 5 missing
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.should_see("2 devices known, 2 online")
        table = user.find(kind=ui.table, marker="devices-table").elements.pop()
        rows = {r["device"]: r for r in table.rows}
        assert rows["motor-1"]["gaps"] == 0
        assert rows["motor-2"]["gaps"] == 5
        assert rows["motor-1"]["rate"] > 0
        assert "temperature_c" in rows["motor-1"]["last"]
        assert rows["motor-1"]["spark"].startswith("<svg")
        feed(gw, "motor-3", 3)  # a device that appears while the page is open
        await user.should_see("3 devices known, 3 online", retries=PATIENT)


async def test_device_page_draws_the_last_hour_and_follows_new_readings(gw: Gateway) -> None:
    # One reading per 2 s (the chart's bucket): every reading gets a point of its own.
    feed(gw, "motor-1", 40, spike_at=36, interval_ms=2000, ago_ms=60_000)
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.open("/devices/motor-1")
        await user.should_see("seq 39")
        chart = user.find(kind=ui.echart, marker="device-chart").elements.pop()
        names = [s["name"] for s in chart.options["series"]]
        assert "temperature_c" in names
        assert "score (statistical)" in names
        pins = next(s for s in chart.options["series"] if s["name"] == "alert opened")
        assert len(pins["data"]) == 1  # the spike opened one alert, marked on the chart
        feed(gw, "motor-1", 5, first_seq=40, interval_ms=2000)
        await user.should_see("seq 44", retries=PATIENT)  # the page updated itself
        values = next(s for s in chart.options["series"] if s["name"] == "temperature_c")
        assert len(values["data"]) == 45


async def test_unknown_device_page_says_so(gw: Gateway) -> None:
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.open("/devices/nobody")
        await user.should_see(marker="unknown-device")


async def test_alert_acknowledged_on_the_panel_is_stored_queued_for_sync_with_its_comment(
        gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.open("/alerts")
        await user.should_see("1 open, 1 shown (open first)")
        await user.should_see("temperature_c")  # what drove it
        user.find(marker="ack-button").click()
        user.find(marker="ack-comment").type("bearing checked, grease added")
        user.find(marker="ack-author").type("Ana")
        user.find(marker="ack-confirm").click()
        await user.should_see("Alert on motor-1 acknowledged.")
        await user.should_see("Ana: bearing checked, grease added")
    stored = gw.store.alert(alert.alert_id)
    assert stored is not None
    assert stored.state == "acknowledged"
    # The same path as the HTTP ack: flagged for the next upload batch, counted, tracked.
    (dirty,) = gw.store.conn.execute("SELECT dirty FROM alerts WHERE alert_id = ?",
                                     (alert.alert_id,)).fetchone()
    assert dirty == 1
    assert gw.store.counters.get("alerts_acknowledged") == 1
    assert gw.alerts.find(alert.alert_id) is not None
    assert gw.alerts.find(alert.alert_id).state == "acknowledged"  # type: ignore[union-attr]


def test_acknowledging_twice_adds_the_comment_without_a_new_alert_version(gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    p = panel(gw)
    assert acknowledge(p, alert.alert_id, "first", "") == "Alert on motor-1 acknowledged."
    version = gw.store.alert(alert.alert_id)
    said = acknowledge(p, alert.alert_id, "second look", "Bo")
    assert "acknowledged already" in said
    assert gw.store.alert(alert.alert_id) == version
    comments = gw.store.alert_comments([alert.alert_id])[alert.alert_id]
    assert [(who, text) for _, who, text in comments] == [("panel", "first"), ("Bo", "second look")]


async def test_sync_models_and_health_pages_show_the_gateways_state(gw: Gateway) -> None:
    feed(gw, "motor-1", 12)
    gw.store.conn.execute(
        "INSERT INTO dead_letters (received_ms, topic, payload, reason, field) "
        "VALUES (1, 'smaint/v1/dev/x/telemetry', x'00', 'not JSON', NULL)")
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.open("/sync")
        await user.should_see("sync off: no cloud token")
        await user.should_see("12 rows not yet synced")
        await user.open("/models")
        await user.should_see("statistical detector (no model bundle)")
        await user.should_see("No rollout has reached this gateway for this profile.")
        await user.open("/health")
        await user.should_see("smaint/v1/dev/x/telemetry: not JSON")
        await user.should_see("13 / 12 (0 redeliveries dropped; status messages count as "
                              "received)")


async def test_the_site_ca_certificate_is_linked_from_health_and_downloadable(
        gw: Gateway) -> None:
    async with panel_user(panel(gw)) as user:
        missing = await user.http_client.get("/site-ca.crt")
        assert missing.status_code == 404  # no CA yet: the gateway makes it at its start
        ca = ensure_site_ca(gw.settings.ca_dir, gw.settings.gateway_id)
        # Public like any CA certificate: no sign-in needed to fetch it.
        got = await user.http_client.get("/site-ca.crt")
        assert got.status_code == 200
        assert got.content == ca.cert_path.read_bytes()
        assert b"PRIVATE KEY" not in got.content
        await sign_in(user)
        await user.open("/health")
        await user.should_see(marker="health-site-ca")


async def test_an_expired_session_cannot_acknowledge(gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    p = panel(gw)
    async with panel_user(p) as user:
        await sign_in(user)
        await user.open("/alerts")
        user.find(marker="ack-button").click()
        p.auth._sessions.clear()  # the session ran out while the dialog was open
        user.find(marker="ack-confirm").click()
        await user.should_see("Your session has ended")
        await wait_until_async(lambda: gw.store.alert(alert.alert_id) is not None, 1, "alert")
    stored = gw.store.alert(alert.alert_id)
    assert stored is not None
    assert stored.state == "open"


def test_password_hash_is_scrypt_salted_and_checks_only_the_password(gw: Gateway) -> None:
    p = panel(gw)
    text = p.auth.password_file.read_text()
    assert text.startswith("scrypt$")
    assert PASSWORD not in text
    assert p.auth.check(PASSWORD)
    assert not p.auth.check(PASSWORD + "x")
    assert oct(p.auth.password_file.stat().st_mode & 0o777) == "0o600"


def test_kept_for_rollback_names_neither_the_running_version_nor_one_on_trial() -> None:
    # The panel said the running version was kept for rollback after an over-the-air swap.
    def report(version: str, step: RolloutStep) -> RolloutReport:
        return RolloutReport(profile="motor", version=version, step=step, at_ms=1)

    kept = ["motor-3", "motor-2", "motor-1"]
    assert snapshot.rollback_versions(kept, "motor-2", report("motor-3", "shadow")) == [
        "motor-1"]
    assert snapshot.rollback_versions(kept, "motor-3", report("motor-3", "running")) == [
        "motor-2", "motor-1"]
    assert snapshot.rollback_versions(kept, "motor-2", report("motor-3", "rolled_back")) == [
        "motor-1"]
    assert snapshot.rollback_versions(["motor-1"], "motor-1", None) == []


async def test_models_page_shows_the_running_bundle_and_a_rollout_in_shadow(
        tmp_path: Path) -> None:
    from tests.fixtures.bundles import V1, V2, make_bundles  # noqa: PLC0415  (trains: slow)

    bundles = make_bundles()
    models = tmp_path / "models"
    kept = models / ".ota" / "versions" / "motor"
    kept.mkdir(parents=True)
    (models / "motor.smb").write_bytes(bundles.make(V1, bundles.manifest.created_ms))
    # V2 is kept on disk already: the rollout takes it from there (no download).
    (kept / f"{V2}.smb").write_bytes(bundles.make(V2, bundles.manifest.created_ms + 1000))
    gw = gateway(tmp_path, scoring={
        "warmup": 8, "models_dir": str(models),
        "trusted_keys": [public_key_text(bundles.key.public_key())]},
        rollout={"shadow_readings": 10_000})
    stop = asyncio.Event()
    task = asyncio.create_task(gw.rollout.run(stop))
    try:
        gw.on_desired(DesiredState(models={"motor": V2}))
        await wait_until_async(lambda: any(r.step == "shadow" for r in gw.rollout.reports()),
                               10, "V2 in shadow")
        # Past the model's warm-up: scored by V1, and by V2 in shadow beside it.
        feed(gw, "motor-1", bundles.manifest.spec.warmup + 30, interval_ms=100)
        async with panel_user(panel(gw)) as user:
            await sign_in(user)
            await user.open("/models")
            await user.should_see(V1)
            await user.should_see(f"bundle file {models / 'motor.smb'}")
            await user.should_see(f"Rollout of {V2}:")
            await user.should_see("shadow")
            await user.should_see(V2)  # what the cloud wants
            run = gw.rollout.reports()[0].shadow_readings
            assert run > 0
            await user.should_see(f"{run} readings scored beside the running model")
            await user.should_see(f"of {run} readings the candidate flagged")
            # V1 runs and V2 is on trial: neither is a version to go back to.
            await user.should_see("no earlier bundle on disk: a rollback resumes the "
                                  "statistical detector")
    finally:
        stop.set()
        await task
        gw.store.close()


def test_an_explanation_lists_each_metric_then_its_features_by_weight() -> None:
    rows = explanation_rows({"current_a": 0.2, "temperature_c": 0.8,
                             "temperature_c.excess": 0.3, "temperature_c.slope": 0.7,
                             "current_a.excess": 1.0, "vibration_rms_g.slope": 0.1})
    assert rows == [("temperature_c", 0.8, False), ("temperature_c.slope", 0.7, True),
                    ("temperature_c.excess", 0.3, True), ("current_a", 0.2, False),
                    ("current_a.excess", 1.0, True), ("vibration_rms_g.slope", 0.1, True)]
