"""The session page in a real browser: Debian's Chromium, driven by Selenium, against a
real `tmcaldav web`, a real daemon (`tmcaldav run`) and a real Radicale.

One browser for the module (it is the slow part). A failing test leaves a screenshot
next to its temp files (the path is printed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium")
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_support import (
    CHROMEDRIVER,
    CHROMIUM,
    KEY,
    POLL,
    SCRIPT_NAME,
    ZONE,
    Site,
    answer,
    open_site,
)
from tests.scenario import StudentSide
from tmcaldav.localhost import wait_for
from tmcaldav.store import get_session

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the browser tests need Debian's chromium and chromium-driver "
    "(python3 dev.py test installs them)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with open_site(tmp_path_factory.mktemp("browser")) as opened:
        yield opened


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest, site: Site) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        site.shots.mkdir(exist_ok=True)
        path = site.shots / f"{request.node.name}.png"
        site.driver.save_screenshot(str(path))
        print(f"screenshot of the failure: {path}")


def test_hover_the_answer_shows_its_time(site: Site) -> None:
    site.open(f"/sessions/{KEY}")
    cell = site.cell("ann@example.org")
    assert cell.get_attribute("data-calendar") == "accepted"
    responded = cell.get_attribute("data-responded-at")
    assert responded is not None
    moment = datetime.fromisoformat(responded).astimezone(ZoneInfo(ZONE))
    tip = cell.find_element(By.CSS_SELECTOR, ".tip")
    assert not tip.is_displayed()
    ActionChains(site.driver).move_to_element(cell.find_element(By.CSS_SELECTOR, ".cal-icon")
                                              ).perform()
    WebDriverWait(site.driver, 5).until(lambda d: tip.is_displayed())
    text = tip.text
    assert text.startswith("Accepted on "), text
    assert f"{moment.day} {moment:%b %Y}, {moment:%H:%M} {moment.tzname()}" in text, text
    assert "in their calendar" in text
    assert cell.find_element(By.CSS_SELECTOR, ".cal-icon").text.startswith("✓")
    # Clicking the icon opens the full history of the student's answers.
    cell.find_element(By.CSS_SELECTOR, ".cal-icon").click()
    WebDriverWait(site.driver, 10).until(lambda d: "/students/ann@example.org" in d.current_url)
    rows = site.driver.find_elements(By.CSS_SELECTOR, "table.history tbody tr")
    assert [r.get_attribute("data-calendar") for r in rows][-1] == "accepted"


def test_invite_two_students_through_the_review_step(site: Site) -> None:
    site.open(f"/sessions/{KEY}")
    for email in ("cy@example.org", "dee@example.org"):
        site.driver.find_element(
            By.CSS_SELECTOR, f'tr[data-email="{email}"] input[type=checkbox]').click()
    site.driver.find_element(By.CSS_SELECTOR, 'button[value="invite"]').click()
    WebDriverWait(site.driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".recipients"))
    recipients = [li.get_attribute("data-email") for li in
                  site.driver.find_elements(By.CSS_SELECTOR, ".recipients li")]
    assert recipients == ["cy@example.org", "dee@example.org"]
    assert "Excel basics" in site.driver.find_element(By.CSS_SELECTOR, ".message").text
    # Without the confirmation nothing is sent.
    site.driver.find_element(By.CSS_SELECTOR, "form.review button[type=submit]").click()
    WebDriverWait(site.driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
    assert "Confirm calendar invitation" in site.driver.find_element(By.CSS_SELECTOR,
                                                                     ".error").text
    assert set(StudentSide(site.radicale).partstats(site.href())) == {
        "ann@example.org", "bob@example.org", "zed@example.org"}
    confirm = site.driver.find_element(By.NAME, "confirm")
    label = confirm.find_element(By.XPATH, "..").text
    assert label.strip() == "Confirm calendar invitation"
    confirm.click()
    site.driver.find_element(By.CSS_SELECTOR, "form.review button[type=submit]").click()
    WebDriverWait(site.driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert "Calendar invitation sent to cy@example.org, dee@example.org" in (
        site.driver.find_element(By.CSS_SELECTOR, ".flash").text)
    assert set(StudentSide(site.radicale).partstats(site.href())) == {
        "ann@example.org", "bob@example.org", "zed@example.org", "cy@example.org",
        "dee@example.org"}
    assert site.shown("cy@example.org", "data-calendar") == "invited"


def bob_declines(site: Site) -> None:
    """Bob declines in his calendar (once), and the daemon records it."""
    if site.calendar_of("bob@example.org") != "declined":
        answer(site, "bob@example.org", "DECLINED")
        wait_for(lambda: site.calendar_of("bob@example.org") == "declined", 30,
                 "the daemon to record Bob's answer")


def test_an_answer_appears_without_a_reload(site: Site) -> None:
    site.open(f"/sessions/{KEY}")
    site.driver.execute_script("window.tmcaldavSamePage = true;")
    assert site.shown("bob@example.org", "data-calendar") == "invited"
    # Ticks survive the live update.
    site.driver.find_element(By.CSS_SELECTOR, 'tr[data-email="cy@example.org"] input').click()
    answer(site, "bob@example.org", "DECLINED")
    # The daemon records the answer at its next poll; from that commit the open page
    # shows it within the poll interval + 1 s, without a reload.
    wait_for(lambda: site.calendar_of("bob@example.org") == "declined", 30,
             "the daemon to record Bob's answer", step=0.02)
    WebDriverWait(site.driver, POLL + 1, poll_frequency=0.05).until(
        lambda d: site.shown("bob@example.org", "data-calendar") == "declined")
    assert site.driver.execute_script("return window.tmcaldavSamePage === true;")
    assert (site.shown("bob@example.org", "icon") or "").startswith("✗")
    assert site.driver.execute_script(
        "return document.querySelector('tr[data-email=\"cy@example.org\"] input').checked")
    # The waitlist plugin's suggestions arrive the same way.
    WebDriverWait(site.driver, 15).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '#suggestions li[data-kind="cancel_enrollment"]'))


def test_apply_a_suggestion_from_the_page(site: Site) -> None:
    bob_declines(site)
    site.open(f"/sessions/{KEY}")
    WebDriverWait(site.driver, 15).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '#suggestions li[data-kind="cancel_enrollment"]'))

    def apply_it(driver: object) -> bool:
        # Found and clicked in one go: a live update may replace the list meanwhile.
        item = site.driver.find_element(By.CSS_SELECTOR,
                                        '#suggestions li[data-kind="cancel_enrollment"]')
        assert "bob@example.org" in item.text
        item.find_element(By.CSS_SELECTOR, "button.apply").click()
        return True

    WebDriverWait(site.driver, 10, ignored_exceptions=(StaleElementReferenceException,)
                  ).until(apply_it)
    WebDriverWait(site.driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert "bob@example.org cancelled in WEB-1" in site.driver.find_element(
        By.CSS_SELECTOR, ".flash").text
    row = site.driver.find_element(By.CSS_SELECTOR, 'tr[data-email="bob@example.org"]')
    assert row.get_attribute("data-status") == "cancelled"
    assert not site.driver.find_elements(
        By.CSS_SELECTOR, '#suggestions li[data-kind="cancel_enrollment"]')
    assert "bob@example.org" not in StudentSide(site.radicale).partstats(site.href())


def test_a_name_with_markup_shows_as_text(site: Site) -> None:
    site.open(f"/sessions/{KEY}")
    name = site.driver.find_element(By.CSS_SELECTOR, 'tr[data-email="zed@example.org"] .name')
    assert name.text == SCRIPT_NAME
    with pytest.raises(NoAlertPresentException):
        site.driver.switch_to.alert.text  # noqa: B018 - raises when no script ran
    assert site.driver.execute_script("return document.scripts.length") == 1


def test_a_form_without_its_csrf_token_is_refused(site: Site) -> None:
    site.open(f"/sessions/{KEY}")
    site.driver.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove());")
    row = 'tr[data-email="dee@example.org"]'
    site.driver.find_element(By.CSS_SELECTOR, f"{row} .add-note input").send_keys(
        "forged", Keys.ENTER)
    WebDriverWait(site.driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
    assert site.driver.find_element(By.CSS_SELECTOR, ".error").get_attribute(
        "data-status") == "403"
    site.open(f"/sessions/{KEY}")
    assert "forged" not in site.driver.find_element(By.CSS_SELECTOR, row).text


def test_keyboard_alone_at_360_pixels(site: Site) -> None:
    site.driver.set_window_size(360, 800)
    try:
        site.open(f"/sessions/{KEY}")
        width = site.driver.execute_script("return window.innerWidth")
        assert width <= 400
        assert site.driver.execute_script(
            "return document.documentElement.scrollWidth") <= width
        target = site.cell("ann@example.org").find_element(By.CSS_SELECTOR, ".cal-icon")
        body = site.driver.find_element(By.TAG_NAME, "body")
        body.click()
        for _ in range(80):
            ActionChains(site.driver).send_keys(Keys.TAB).perform()
            if site.driver.switch_to.active_element == target:
                break
        else:
            raise AssertionError("Tab never reached Ann's Calendar icon")
        tip = site.cell("ann@example.org").find_element(By.CSS_SELECTOR, ".tip")
        WebDriverWait(site.driver, 5).until(lambda d: tip.is_displayed())
        assert tip.text.startswith("Accepted on ")
        box = tip.rect
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1
        # Escape closes it; Enter opens the student's history.
        ActionChains(site.driver).send_keys(Keys.ESCAPE).perform()
        WebDriverWait(site.driver, 5).until(lambda d: not tip.is_displayed())
        ActionChains(site.driver).send_keys(Keys.ENTER).perform()
        WebDriverWait(site.driver, 10).until(
            lambda d: "/students/ann@example.org" in d.current_url)
    finally:
        site.driver.set_window_size(1280, 900)


def test_a_viewer_sees_but_cannot_act(site: Site) -> None:
    try:
        site.login("watcher")
        site.open(f"/sessions/{KEY}")
        assert site.driver.find_elements(By.CSS_SELECTOR, "tr[data-email]")
        assert not site.driver.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
        assert not site.driver.find_elements(By.CSS_SELECTOR, "button.apply")
        assert not site.driver.find_elements(By.CSS_SELECTOR, 'button[value="invite"]')
        # Even a hand-made form with a valid token is refused.
        site.driver.execute_script("""
            const form = document.createElement('form');
            form.method = 'post'; form.action = location.pathname + '/cancel';
            for (const [name, value] of [['confirm', 'yes'],
                ['csrf_token', document.querySelector('input[name=csrf_token]').value]]) {
              const input = document.createElement('input');
              input.type = 'hidden'; input.name = name; input.value = value;
              form.appendChild(input);
            }
            document.body.appendChild(form); form.submit();""")
        WebDriverWait(site.driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
        assert "viewers read, admins act" in site.driver.find_element(
            By.CSS_SELECTOR, ".error").text
        with site.store.scratch() as db:
            assert get_session(db, KEY).status == "scheduled"
    finally:
        site.login("boss")
