"""The gateway panel in a real headless Chromium, against a real gateway process.

``python -m smaint gateway run`` (panel included) on a private broker, simulated motors
publishing through it; Debian's chromium and chromedriver (scripts/bootstrap.sh installs
them). Each test saves screenshots in its tmp_path.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from shared.bundle import public_key_text
from simulator.fleet import Fleet
from tests.fixtures.browser import chromium
from tests.fixtures.bundles import V1, make_bundles
from tests.fixtures.process import ServiceProcess
from tests.fixtures.waiting import wait_until
from ui.panel.auth import hash_password
from ui.panel.frame import NAV

pytestmark = pytest.mark.slow

PASSWORD = "browser test password"
DEVICE = "pb-motor-001"
WAIT_S = 20
# Text that means a value was never filled in (or an error page), anywhere on a page.
_PLACEHOLDERS = re.compile(r"\b(None|null|undefined|NaN|TODO|Internal Server Error|Traceback)\b")


@dataclass
class Stack:
    """The running gateway (with panel), its fleet and where its database is."""

    base: str
    db: Path
    fleet: Fleet
    gateway: ServiceProcess


@pytest.fixture(scope="module")
def stack(broker: PrivateMosquitto, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("panel-gateway")
    port = free_port()
    # A signed motor model copied in, as an operator would: the Models page must show it.
    bundles = make_bundles()
    (work / "models").mkdir()
    (work / "models" / "motor.smb").write_bytes(bundles.make(V1, bundles.manifest.created_ms))
    gw = ServiceProcess(["-m", "smaint", "gateway", "run"], env={
        "SMAINT_GATEWAY_GATEWAY_ID": "gw-browser",
        **broker.gateway_env(),
        "SMAINT_GATEWAY_STORAGE__PATH": str(work / "gateway.db"),
        "SMAINT_GATEWAY_HTTP__PORT": str(port),
        "SMAINT_GATEWAY_PANEL__PASSWORD_HASH": hash_password(PASSWORD),
        "SMAINT_GATEWAY_PANEL__REFRESH_S": "0.5",
        "SMAINT_GATEWAY_SCORING__WARMUP": "8",
        "SMAINT_GATEWAY_SCORING__MODELS_DIR": str(work / "models"),
        "SMAINT_GATEWAY_SCORING__TRUSTED_KEYS": json.dumps(
            [public_key_text(bundles.key.public_key())]),
        "SMAINT_GATEWAY_ALERTS__OPEN_AFTER": "2",
        "SMAINT_GATEWAY_ALERTS__RESOLVE_AFTER": "100000",  # the test acknowledges it first
    }, log=work / "gateway.log", port=port, name="gateway with panel")
    gw.start(timeout_s=60)
    base = f"http://127.0.0.1:{port}"

    def subscribed() -> bool:
        try:
            return bool(httpx.get(f"{base}/api/status", timeout=2).json()["mqtt_connected"])
        except httpx.HTTPError:
            return False

    fleet = Fleet(broker.host, broker.port, n_devices=2, rate_hz=10, profile="motor", seed=5,
                  id_prefix="pb-",
                  login=broker.fixture_device_login)
    try:
        wait_until(subscribed, 30, "the gateway's broker session")
        fleet.start()
        yield Stack(base, work / "gateway.db", fleet, gw)
    finally:
        fleet.stop()
        gw.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    d = chromium(tmp_path_factory.mktemp("downloads"))
    try:
        yield d
    finally:
        d.quit()


def wait(d: webdriver.Chrome, what: str, timeout_s: float = WAIT_S) -> WebDriverWait[
        webdriver.Chrome]:
    """A WebDriverWait whose timeout message says what was awaited."""
    return WebDriverWait(d, timeout_s, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,))


def text_shown(d: webdriver.Chrome, text: str) -> None:
    """Wait until ``text`` is in the page's visible text."""
    wait(d, text).until(lambda drv: text in drv.find_element(By.TAG_NAME, "body").text,
                        f"page never showed {text!r}")


def button(d: webdriver.Chrome, label: str, within: str = "") -> WebElement:
    """The first visible button with this label."""
    found: list[WebElement] = []

    def visible(drv: webdriver.Chrome) -> bool:
        found[:] = [b for b in drv.find_elements(
            By.XPATH, f"{within}//button[.//span[normalize-space()='{label}']]")
            if b.is_displayed()]
        return bool(found)

    wait(d, label).until(visible, f"no visible button {label!r}")
    return found[0]


def click(d: webdriver.Chrome, label: str, within: str = "") -> None:
    """Click the first visible button with this label, finding it again if the page redrew
    it meanwhile (the alerts list redraws when an alert changes, e.g. escalates)."""
    def clicked(drv: webdriver.Chrome) -> bool:
        button(drv, label, within).click()
        return True

    wait(d, label).until(clicked, f"could not click {label!r}")


def no_dialog(d: webdriver.Chrome) -> None:
    """Wait until no dialog is shown (closing ones fade out)."""
    wait(d, "the dialog to close").until(lambda drv: not any(
        e.is_displayed() for e in drv.find_elements(By.CSS_SELECTOR, ".q-dialog")),
        "a dialog stayed open")


def console_errors(d: webdriver.Chrome) -> list[str]:
    """Browser console entries of level SEVERE since the last call."""
    entries = d.get_log("browser")  # type: ignore[no-untyped-call]
    return [str(e["message"]) for e in entries if e["level"] == "SEVERE"]


def heading_is(title: str) -> Callable[[webdriver.Chrome], bool]:
    """A wait condition: the page's title heading reads ``title``."""
    def check(d: webdriver.Chrome) -> bool:
        return any(h.text == title for h in d.find_elements(By.CSS_SELECTOR, ".text-h5"))
    return check


def connected(d: webdriver.Chrome) -> None:
    """Wait until the page's NiceGUI connection is up (input typed before it is not sent)."""
    wait(d, "the page's connection").until(
        lambda drv: drv.execute_script("return window.did_handshake === true"),
        "the page never connected back to the gateway")


def sign_in(d: webdriver.Chrome, base: str) -> None:
    """Sign in unless signed in already; ends on the Devices page."""
    d.get(f"{base}/")
    wait(d, "a page").until(lambda drv: "/login" in drv.current_url or
                            "Devices" in drv.find_element(By.TAG_NAME, "body").text)
    if "/login" in d.current_url:
        connected(d)
        field = d.find_element(By.CSS_SELECTOR, "input[type=password]")
        field.send_keys(PASSWORD)
        button(d, "Sign in").click()
    text_shown(d, "devices known")


def check_page(d: webdriver.Chrome, base: str) -> None:
    """No console error, no placeholder text, nothing fetched from anywhere but the gateway."""
    assert console_errors(d) == []
    body = d.find_element(By.TAG_NAME, "body").text
    assert not _PLACEHOLDERS.search(body), _PLACEHOLDERS.search(body)
    urls = d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat([document.location.href])")
    foreign = [u for u in urls if not u.startswith(base)]
    assert foreign == [], f"fetched from elsewhere: {foreign}"


def test_sign_in_and_every_page_renders_from_the_gateway_alone(
        stack: Stack, driver: webdriver.Chrome, tmp_path: Path) -> None:
    driver.get(f"{stack.base}/alerts")
    wait(driver, "the sign-in page").until(lambda drv: "/login" in drv.current_url)
    driver.save_screenshot(str(tmp_path / "00-login.png"))
    sign_in(driver, stack.base)
    text_shown(driver, DEVICE)
    for i, (label, path, _) in enumerate(NAV):
        driver.get(f"{stack.base}{path}")
        wait(driver, label).until(heading_is(label))
        check_page(driver, stack.base)
        if label == "Models":
            text_shown(driver, f"{V1}")  # the bundle copied in runs, and the page says so
            text_shown(driver, "bundle file")
        driver.save_screenshot(str(tmp_path / f"{i + 1:02d}-{label.lower()}.png"))


def test_the_device_chart_updates_itself(stack: Stack, driver: webdriver.Chrome,
                                         tmp_path: Path) -> None:
    sign_in(driver, stack.base)
    driver.get(f"{stack.base}/devices/{DEVICE}")
    text_shown(driver, "points drawn; newest reading")

    def newest(drv: webdriver.Chrome) -> str:
        return str(drv.find_element(By.XPATH, "//*[contains(text(), 'points drawn')]").text)

    def canvas(drv: webdriver.Chrome) -> str:
        return str(drv.execute_script("return document.querySelector('canvas').toDataURL()"))

    first, first_pixels = newest(driver), canvas(driver)
    driver.save_screenshot(str(tmp_path / "device-before.png"))
    # No reload: the same page shows a newer reading, and the drawn chart changed.
    wait(driver, "a newer reading").until(lambda drv: newest(drv) != first,
                                          "the chart's newest reading never changed")
    wait(driver, "a redraw").until(lambda drv: canvas(drv) != first_pixels,
                                   "the chart was never redrawn")
    check_page(driver, stack.base)
    driver.save_screenshot(str(tmp_path / "device-after.png"))


def _alert_state(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [(str(a), str(s), int(d)) for a, s, d in conn.execute(
            "SELECT alert_id, state, dirty FROM alerts WHERE device = ?", (DEVICE,))]


def test_an_alert_is_acknowledged_with_a_comment_in_the_browser(
        stack: Stack, driver: webdriver.Chrome, tmp_path: Path) -> None:
    stack.fleet.inject(DEVICE, "spike", samples=6, magnitude=6)
    wait_until(lambda: any(s == "open" for _, s, _ in _alert_state(stack.db)), WAIT_S,
               "an open alert on the device (the spike's, or one the model raised before)")
    sign_in(driver, stack.base)
    driver.get(f"{stack.base}/alerts")
    card = f"//div[contains(@class, 'q-card')][.//a[normalize-space()='{DEVICE}']]"
    click(driver, "Acknowledge", within=card)
    # The dialog opens once the gateway answered the click: wait for it.
    wait(driver, "the dialog").until(lambda drv: any(
        t.is_displayed() for t in drv.find_elements(By.CSS_SELECTOR, ".q-dialog textarea")),
        "the acknowledge dialog never opened")
    driver.find_element(By.CSS_SELECTOR, ".q-dialog textarea").send_keys("checked the mount")
    driver.save_screenshot(str(tmp_path / "ack-dialog.png"))
    click(driver, "Acknowledge", within="//div[contains(@class, 'q-dialog')]")
    text_shown(driver, "panel: checked the mount")
    no_dialog(driver)
    check_page(driver, stack.base)
    driver.save_screenshot(str(tmp_path / "acknowledged.png"))
    # Stored as the HTTP ack stores it: acknowledged, flagged for the next upload (no cloud
    # token here, so it stays flagged).
    assert [(s, d) for _, s, d in _alert_state(stack.db)] == [("acknowledged", 1)]
    with sqlite3.connect(f"file:{stack.db}?mode=ro", uri=True) as conn:
        (n,) = conn.execute("SELECT count(*) FROM alert_comments WHERE comment = ?",
                            ("checked the mount",)).fetchone()
    assert n == 1
    status = httpx.get(f"{stack.base}/api/status", timeout=5).json()
    assert status["alerts_open"] >= 1  # an acknowledged alert is still tracked until resolved


def test_cross_site_requests_are_refused_and_the_gateway_api_still_answers(stack: Stack) -> None:
    evil = {"Origin": "http://evil.example"}
    url = f"{stack.base}/api/alerts/0123abcd-0000/ack"
    token = (stack.db.parent / "api-token").read_text().strip()
    api = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert httpx.post(url, headers={**api, **evil}, timeout=5).status_code == 403
    assert httpx.post(url, headers=api, timeout=5).status_code == 404  # a script: it answers
    assert httpx.post(url, headers={**api, "Origin": stack.base}, timeout=5).status_code == 404
    assert httpx.post(url, timeout=5).status_code == 401  # no token: refused
    poll = f"{stack.base}/_nicegui_ws/socket.io/?EIO=4&transport=polling"
    assert httpx.post(poll, headers=evil, content=b"40", timeout=5).status_code == 403
    assert httpx.get(f"{stack.base}/healthz", headers=evil, timeout=5).text == "ok"
    assert "smaint_gateway_received" in httpx.get(f"{stack.base}/metrics", timeout=5).text
