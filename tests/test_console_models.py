"""The console's Models page in a real headless Chromium: an admin retrains through the page
(the cloud's own job worker trains on the seeded readings and MLflow lists the run), deploys
the run's bundle to a canary and the fleet, then rolls the rollout back.

Its cloud runs a job worker and has a signing key, unlike the other console browser tests'.
Screenshots are saved in the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from devstack.postgres import PrivatePostgres
from shared.bundle import generate_key
from tests.fixtures.browser import check_page, field, marked, one_marked, text_shown, until
from tests.fixtures.console import SeededCloud, fresh_database, seed, serve
from tests.test_console_browser import click_marked, dialog, no_dialog, open_page, sign_in

pytestmark = pytest.mark.slow

TRAINING_S = 90  # one quick training of the seeded readings; it takes about 15 s


@pytest.fixture(scope="module")
def training_cloud(pg_cluster: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[SeededCloud]:
    """A seeded cloud with console, a job worker and a signing key: it trains when asked."""
    with fresh_database(pg_cluster, "console_models") as dsn:
        cloud = seed(dsn)
        workdir = tmp_path_factory.mktemp("console-models-cloud")
        generate_key(workdir / "signing.key")
        proc = serve(cloud, workdir, SMAINT_CLOUD_JOBS__WORKER_ENABLED="true",
                     SMAINT_CLOUD_JOBS__WORKER_POLL_S="0.2",
                     SMAINT_CLOUD_TRAINING__SIGNING_KEY_FILE=str(workdir / "signing.key"),
                     SMAINT_CLOUD_TRAINING__N_ESTIMATORS="20",
                     SMAINT_CLOUD_TRAINING__MIN_TRAIN_WINDOWS="200",
                     SMAINT_CLOUD_TRAINING__MIN_HELDOUT_WINDOWS="50")
        try:
            yield cloud
        finally:
            proc.stop()


def _card(d: webdriver.Chrome, prefix: str) -> WebElement:
    """The first visible card whose marker starts with ``prefix`` (the newest)."""
    found: list[WebElement] = []

    def shown(drv: webdriver.Chrome) -> bool:
        found[:] = [e for e in marked(drv, "") if any(
            m.startswith(prefix) for m in (e.get_attribute("data-marker") or "").split())]
        return bool(found)

    until(shown, f"a card marked {prefix}*", d)
    return found[0]


def test_an_admin_retrains_deploys_the_new_version_and_rolls_it_back(
        training_cloud: SeededCloud, driver: webdriver.Chrome, tmp_path: Path) -> None:
    cloud = training_cloud
    sign_in(driver, cloud, "admin")
    open_page(driver, cloud, "/models", "Models")
    text_shown(driver, "No training run in MLflow yet")
    driver.save_screenshot(str(tmp_path / "models-empty.png"))

    click_marked(driver, "retrain")
    text_shown(driver, "queued: every profile, the last week's data")
    until(lambda drv: ": done" in one_marked(drv, "retrain-job").text
          or ": failed" in one_marked(drv, "retrain-job").text,
          "the training job to finish", driver, TRAINING_S)
    assert ": done" in one_marked(driver, "retrain-job").text, one_marked(
        driver, "retrain-job").text
    until(lambda drv: "promoted" in _card(drv, "run-").text, "the run's gate decision", driver)
    run = _card(driver, "run-")
    assert "registry version 1" in run.text
    assert "Gate: first version" in run.text
    registered = one_marked(driver, "registered-versions").text
    assert "champion" in registered
    check_page(driver, cloud.base)
    driver.save_screenshot(str(tmp_path / "models-trained.png"))

    # The run's bundle to gw-1 first, then gw-2 (the dialog's defaults).
    click_marked(driver, "deploy", run)
    box = dialog(driver)
    assert "Deploy motor motor-" in box.text
    driver.save_screenshot(str(tmp_path / "models-deploy-dialog.png"))
    click_marked(driver, "dialog-confirm", box)
    no_dialog(driver)
    until(lambda drv: one_marked(drv, "rollout-state", _card(drv, "rollout-")).text
          == "canary", "the rollout in its canary stage", driver)
    rollout = _card(driver, "rollout-")
    targets = one_marked(driver, "rollout-targets", rollout).text
    assert "gw-1" in targets
    assert "gw-2" in targets
    assert "0 of 2 gateways run it" in rollout.text
    driver.execute_script("arguments[0].scrollIntoView()", rollout)
    driver.save_screenshot(str(tmp_path / "models-canary.png"))

    click_marked(driver, "rollback", rollout)
    box = dialog(driver)
    field(driver, "dialog-comment", box).send_keys("checking the canary by hand first")
    click_marked(driver, "dialog-confirm", box)
    no_dialog(driver)
    until(lambda drv: one_marked(drv, "rollout-state", _card(drv, "rollout-")).text
          == "rolled_back", "the rollout rolled back", driver)
    text_shown(driver, "rolled back by admin: checking the canary by hand first")
    assert not marked(driver, "rollback")
    check_page(driver, cloud.base)
    driver.execute_script("arguments[0].scrollIntoView()", _card(driver, "rollout-"))
    driver.save_screenshot(str(tmp_path / "models-rolled-back.png"))

    # The API holds what the page shows.
    rollouts = httpx.get(f"{cloud.base}/api/v1/rollouts", timeout=10,
                         headers={"Authorization": f"Bearer {cloud.keys['viewer']}"}).json()
    assert [(r["state"], r["created_by"], [t["gateway"] for t in r["targets"]])
            for r in rollouts] == [("rolled_back", "admin", ["gw-1", "gw-2"])]

    # A second training meets a champion: the gate compares both on the same held-out data.
    retrain = one_marked(driver, "retrain")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", retrain)
    retrain.click()
    until(lambda drv: marked(drv, "comparison"), "the champion and challenger comparison",
          driver, TRAINING_S)
    comparison = one_marked(driver, "comparison")
    assert "Challenger (this run)" in comparison.text
    assert "held-out windows flagged (share)" in comparison.text
    run = comparison.find_element(By.XPATH, "./ancestor::*[starts-with(@data-marker, 'run-')]")
    assert "registry version 2" in run.text
    check_page(driver, cloud.base)
    driver.execute_script("arguments[0].scrollIntoView()", run)
    driver.save_screenshot(str(tmp_path / "models-champion-challenger.png"))
