"""A crawler on both screens, in a real headless Chromium against seeded systems: it signs in,
follows every navigation entry and clicks every action button of every page once.

What it refuses on any page it reaches, and after every click:
- an error page (HTTP error text, a traceback) or a browser console error;
- an empty placeholder where data is expected: placeholder words ("TODO", "coming soon",
  "lorem", ...), a value never filled in ("None", "undefined", "NaN"), a table showing
  Quasar's default "No data available" instead of saying what is empty, a chart with no
  point drawn, a marked element with nothing in it;
- a dead button: every click must open a dialog, show a notification, navigate, download a
  file, or change which parts the page shows. A dialog is checked like a page, then cancelled
  and must close.

The gateway with its panel is the one tests/test_panel_browser.py starts (a real
``smaint gateway run``, simulated motors, a signed model); the cloud is the console tests'
seeded one (tests/fixtures/console.py). Screenshots of every page and dialog go to the test's
tmp_path.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By

from tests.fixtures.browser import (
    PLACEHOLDERS,
    body_text,
    check_page,
    console_errors,
    until,
    wait,
)
from tests.fixtures.console import ALERTS, SeededCloud
from tests.fixtures.waiting import wait_until
from tests.test_console_browser import at
from tests.test_console_browser import sign_in as console_sign_in
from tests.test_panel_browser import PASSWORD, Stack, stack  # noqa: F401 - the fixture
from ui.console.frame import NAV as CONSOLE_NAV
from ui.panel.frame import NAV as PANEL_NAV

pytestmark = pytest.mark.slow

# Words that stand in for content nobody wrote.
UNFINISHED = re.compile(r"(?i)\b(coming soon|lorem|ipsum|not implemented|FIXME|TBD|"
                        r"placeholder|under construction|No data available|"
                        r"No matching records found)\b")

# Empty parts of the page's content where data is expected: charts with no point, tables
# with Quasar's default empty text, marked leaf elements with no text and nothing drawn.
_EMPTIES = """
const shown = e => e.getClientRects().length > 0;  // offsetParent is null when fixed
const out = [];
for (const el of document.querySelectorAll('.q-page .nicegui-echart, .q-dialog .nicegui-echart')) {
  if (!shown(el)) continue;
  const chart = getElement(el.id.slice(1)).chart;
  const series = chart ? (chart.getOption().series || []) : [];
  const points = series.reduce((n, s) => n + ((s.data || []).length), 0);
  if (points === 0) out.push('a chart with no point drawn: ' + (el.dataset.marker || el.id));
}
for (const el of document.querySelectorAll('.q-page [data-marker], .q-dialog [data-marker]')) {
  // An empty box that takes room on the page; an empty label takes none (a status line
  // that fills in once there is something to say).
  const box = el.getBoundingClientRect();
  if (!shown(el) || el.children.length || box.width < 1 || box.height < 1) continue;
  if (['INPUT', 'TEXTAREA', 'IMG', 'CANVAS', 'svg', 'BUTTON', 'A'].includes(el.tagName)) continue;
  // A frame's content is a document of its own: judge that document's text.
  const text = el.tagName === 'IFRAME'
    ? (el.contentDocument && el.contentDocument.body ? el.contentDocument.body.innerText : '')
    : el.innerText;
  if (text.trim() === '') out.push('an empty element marked ' + el.dataset.marker);
}
return out;
"""

# The page content's enabled, visible buttons as [key, element id]: a button is known by its
# marker, else by its text (redraws replace the elements, and every card's copy of the same
# action runs the same code: each kind is clicked once).
_BUTTONS = """
return [...document.querySelectorAll('.q-page button')]
  .filter(b => !b.disabled && b.getAttribute('aria-disabled') !== 'true'
               && b.getClientRects().length > 0 && !b.closest('.q-dialog'))
  .map(b => [b.dataset.marker || (b.querySelector('.block') || b).innerText.trim()
              || b.getAttribute('aria-label') || '?', b.id || '']);
"""

# What a click can change that the page's own refresh does not: dialogs and notifications
# open, the address, the set of visible marked parts (an expander, a form shown).
_STATE = """
const shown = e => e.getClientRects().length > 0;  // offsetParent is null when fixed
return {
  dialogs: [...document.querySelectorAll('.q-dialog__inner')].filter(shown).length,
  notes: document.querySelectorAll('.q-notification').length,
  url: document.location.href,
  // The console names its parts (data-marker); the panel's are counted by kind.
  parts: [...new Set([...document.querySelectorAll('[data-marker]')].filter(shown)
                      .map(e => e.dataset.marker))].sort().join(' ') + ' | ' +
         ['.q-card', '.q-table', '.nicegui-echart', '.q-expansion-item--expanded', 'form']
           .map(k => [...document.querySelectorAll(k)].filter(shown).length).join(' '),
};
"""


@dataclass
class Crawl:
    """What the crawler saw: per page the buttons it clicked and what each click did."""

    shots: Path
    downloads: Path
    clicked: dict[str, dict[str, str]] = field(default_factory=dict)
    shot: int = 0

    def screenshot(self, d: webdriver.Chrome, name: str) -> None:
        """Save the browser's view as NN-name.png."""
        self.shot += 1
        safe = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        d.save_screenshot(str(self.shots / f"{self.shot:02d}-{safe}.png"))


def check_content(d: webdriver.Chrome, base: str) -> None:
    """No error or console error, nothing unfinished, nothing empty where data belongs."""
    check_page(d, base)
    text = body_text(d)
    found = UNFINISHED.search(text)
    assert found is None, f"unfinished content on {d.current_url}: {found.group(0)!r}"
    empties = d.execute_script(_EMPTIES)
    assert empties == [], f"empty placeholders on {d.current_url}: {empties}"


def _element(d: webdriver.Chrome, key: str, element_id: str) -> object:
    if element_id:
        return d.find_element(By.ID, element_id)
    return next(b for b in d.find_elements(By.CSS_SELECTOR, ".q-page button")
                if b.is_displayed() and (b.get_attribute("data-marker") or b.text.strip()) == key)


def click_each_action(d: webdriver.Chrome, base: str, crawl: Crawl, page: str,
                      cancel: Callable[[webdriver.Chrome], None]) -> None:
    """Click every kind of action button on the page once; each must do something visible."""
    done: dict[str, str] = {}
    while True:
        todo = [(k, i) for k, i in d.execute_script(_BUTTONS) if k not in done]
        if not todo:
            break
        key, element_id = todo[0]
        before = d.execute_script(_STATE)
        files = set(crawl.downloads.iterdir())
        try:
            button = _element(d, key, element_id)
            button.click()  # type: ignore[attr-defined]
        except (StaleElementReferenceException, StopIteration):
            continue  # redrawn by the page's refresh in between: look again
        except (ElementClickInterceptedException, ElementNotInteractableException) as exc:
            pytest.fail(f"{page}: button {key!r} cannot be clicked: {exc.msg}")
        effect: list[str] = []

        def changed(drv: webdriver.Chrome, before: dict[str, object] = before,
                    files: set[Path] = files, effect: list[str] = effect) -> bool:
            now = drv.execute_script(_STATE)
            if now["dialogs"] > before["dialogs"]:
                effect.append("dialog")
            elif now["notes"] > before["notes"]:
                effect.append("notification")
            elif now["url"] != before["url"]:
                effect.append("navigation")
            elif set(crawl.downloads.iterdir()) - files:
                effect.append("download")
            elif now["parts"] != before["parts"]:
                effect.append("page changed")
            return bool(effect)

        wait(d, 10).until(changed, f"{page}: button {key!r} did nothing (dead button)")
        done[key] = effect[0]
        assert not d.find_elements(By.CSS_SELECTOR, ".q-notification.bg-negative"), (
            f"{page}: button {key!r} failed: {body_text(d)}")
        check_content(d, base)
        crawl.screenshot(d, f"{page}-{key}")  # with the dialog, if any
        if effect[0] == "dialog":
            cancel(d)
            until(lambda drv: not any(e.is_displayed() for e in drv.find_elements(
                By.CSS_SELECTOR, ".q-dialog__inner, .q-dialog__backdrop")),
                f"{page}: the dialog of {key!r} stayed open", d)
            check_content(d, base)
        elif effect[0] == "navigation":
            d.back()
            until(at(str(before["url"])), f"{page}: back from {key!r}", d)
    crawl.clicked[page] = done


def visit_every_entry(d: webdriver.Chrome, base: str, nav: tuple[tuple[str, str, str], ...], *,
                      crawl: Crawl, settled: Callable[[webdriver.Chrome, str], None],
                      cancel: Callable[[webdriver.Chrome], None]) -> None:
    """Follow each navigation entry from the left drawer; check the page, click its actions."""
    console_errors(d)  # start from a clean console log
    for label, path, _ in nav:
        d.find_element(By.XPATH, f"//aside//a[.//div[normalize-space()='{label}']]").click()
        until(at(f"{base}{path}"), f"navigation to {label}", d)
        settled(d, label)
        check_content(d, base)
        crawl.screenshot(d, label.lower().replace(" ", "-"))
        click_each_action(d, base, crawl, label, cancel)


def sign_out(d: webdriver.Chrome, base: str, closed_page: str) -> None:
    """The header's sign-out leads to the sign-in page, and the pages are closed again."""
    d.find_element(By.XPATH, "//header//button[.//span[normalize-space()='Sign out']]").click()
    until(lambda drv: "/login" in drv.current_url, "the sign-in page after signing out", d)
    d.get(f"{base}{closed_page}")
    until(lambda drv: "/login" in drv.current_url, "the sign-in page for a closed page", d)


# -- the gateway panel ------------------------------------------------------------------------


def _panel_cancel(d: webdriver.Chrome) -> None:
    dialog = next(e for e in d.find_elements(By.CSS_SELECTOR, ".q-dialog__inner")
                  if e.is_displayed())
    dialog.find_element(By.XPATH, ".//button[.//span[normalize-space()='Cancel']]").click()


def _panel_settled(d: webdriver.Chrome, label: str) -> None:
    until(lambda drv: any(h.text == label for h in drv.find_elements(By.CSS_SELECTOR, ".text-h5")),
          f"the {label} page's heading", d)
    if label == "Devices":
        until(lambda drv: "online" in body_text(drv) and "pb-motor" in body_text(drv),
              "the devices table filled", d)


def test_the_panel_crawl_finds_no_error_empty_placeholder_or_dead_button(
        stack: Stack, driver: webdriver.Chrome, browser_downloads: Path,  # noqa: F811
        tmp_path: Path) -> None:
    other = "pb-motor-002"  # an open alert, so the Alerts page has its action to click
    with sqlite3.connect(f"file:{stack.db}?mode=ro", uri=True) as conn:
        # Past its warm-up first: a spike among the first readings is stored unscored.
        wait_until(lambda: conn.execute("SELECT count(*) FROM readings WHERE device = ? AND "
                                        "score IS NOT NULL", (other,)).fetchone()[0] > 0,
                   20, "the second device scored")
        stack.fleet.inject(other, "spike", samples=6, magnitude=6)
        wait_until(lambda: conn.execute("SELECT count(*) FROM alerts WHERE device = ? AND "
                                        "state = 'open'", (other,)).fetchone()[0] > 0,
                   20, "an open alert on the second device")
    crawl = Crawl(tmp_path, browser_downloads)
    driver.get(f"{stack.base}/login")
    until(lambda drv: drv.execute_script("return window.did_handshake === true"),
          "the sign-in page connected", driver)
    driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(PASSWORD)
    driver.find_element(By.XPATH, "//button[.//span[normalize-space()='Sign in']]").click()
    until(lambda drv: "/login" not in drv.current_url, "signed in", driver)
    visit_every_entry(driver, stack.base, PANEL_NAV, crawl=crawl, settled=_panel_settled,
                      cancel=_panel_cancel)
    # The page each device's link leads to, and its actions.
    driver.find_element(By.XPATH, "//aside//a[.//div[normalize-space()='Devices']]").click()

    def follow(drv: webdriver.Chrome) -> bool:
        # Found again on each try: the table redraws itself every refresh.
        drv.find_element(By.XPATH, f"//a[normalize-space()='{other}']").click()
        return True

    wait(driver).until(follow, "the device's link")
    until(lambda drv: "points drawn; newest reading" in body_text(drv), "the device chart",
          driver)
    check_content(driver, stack.base)
    crawl.screenshot(driver, "device")
    click_each_action(driver, stack.base, crawl, "device", _panel_cancel)
    print(crawl.clicked)
    assert crawl.clicked["Alerts"] == {"ACKNOWLEDGE": "dialog"}, crawl.clicked
    sign_out(driver, stack.base, "/health")


# -- the cloud console ------------------------------------------------------------------------


def _console_cancel(d: webdriver.Chrome) -> None:
    dialog = next(e for e in d.find_elements(By.CSS_SELECTOR, ".q-dialog__inner")
                  if e.is_displayed())
    dialog.find_element(By.CSS_SELECTOR, "[data-marker~=dialog-cancel]").click()


def _console_settled(d: webdriver.Chrome, label: str) -> None:
    until(lambda drv: "database ok" in body_text(drv), f"the {label} page's status line", d)


def test_the_console_crawl_finds_no_error_empty_placeholder_or_dead_button(
        seeded_cloud: SeededCloud, driver: webdriver.Chrome, browser_downloads: Path,
        tmp_path: Path) -> None:
    # An open order, so the board has its workflow's actions to click.
    order = httpx.post(f"{seeded_cloud.base}/api/v1/alerts/gw-1/{ALERTS[2][0]}/orders",
                       json={"title": "Crawler's order"}, timeout=10,
                       headers={"Authorization": f"Bearer {seeded_cloud.keys['operator']}"})
    assert order.status_code == 201, order.text
    crawl = Crawl(tmp_path, browser_downloads)
    console_sign_in(driver, seeded_cloud, "admin")
    visit_every_entry(driver, seeded_cloud.base, CONSOLE_NAV, crawl=crawl,
                      settled=_console_settled, cancel=_console_cancel)
    # Each kind of action once: a button that vanished from a seeded page fails here too.
    assert {page: len(done) for page, done in crawl.clicked.items()} == {
        "Fleet": 0, "Device explorer": 1, "Alerts": 5, "Orders": 3, "Models": 1, "Reports": 4}
    assert PLACEHOLDERS.search(body_text(driver)) is None
    sign_out(driver, seeded_cloud.base, "/orders")
