"""Answer links in the real Chromium of the web tests: the student opens the Maybe link
from the REQUEST mail captured at the SMTP sink, sees the page, clicks Maybe; the store,
the Calendar column (`session show`) and the organizer's copy on Radicale show it.

`TMCALDAV_SCREENSHOT=docs/answer-page.png` also saves what the student saw (README)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser_support import CHROMEDRIVER, CHROMIUM, chromium
from tests.scenario import StudentSide
from tests.test_answer_links import World, links_for, world  # noqa: F401 - the fixture
from tests.test_verbs import href_of, students

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromedriver (python3 dev.py installs them)",
)


def test_click_maybe_in_the_browser(world: World, tmp_path: Path) -> None:  # noqa: F811
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    links = links_for(world, "ann@example.org")
    driver = chromium(tmp_path / "profile")
    try:
        driver.set_window_size(420, 800)
        driver.get(links["Maybe"])
        assert "Room 1" in driver.page_source
        # Opening the link recorded nothing.
        assert students(world.tm)["ann@example.org"]["calendar"] == "invited"
        shot = os.environ.get("TMCALDAV_SCREENSHOT")
        if shot:
            driver.save_screenshot(str(tmp_path / "page.png"))
            shutil.copy(tmp_path / "page.png", shot)
        driver.find_element(By.CSS_SELECTOR, "button.answer-tentative").click()
        WebDriverWait(driver, 15).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '[data-status="tentative"]')
        )
    finally:
        driver.quit()
    assert students(world.tm)["ann@example.org"]["calendar"] == "tentative"
    assert StudentSide(world.radicale).partstats(href_of(world.tm))["ann@example.org"] == (
        "TENTATIVE"
    )
