"""The browser tests' world: Chromium through Selenium, `tmcaldav web`, the daemon and
Radicale around one session; also used to take the README's screenshot
(`python -m tests.browser_support docs/web-session-page.png`)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Cli
from tests.scenario import StudentSide, cli_for
from tests.web_support import PASSWORDS, Process, WebServer, add_users
from tmcaldav.app import open_store
from tmcaldav.localhost import wait_for
from tmcaldav.radicale import RadicaleServer, start_radicale
from tmcaldav.store import Store, get_session

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

KEY = "WEB-1"
ZONE = "Europe/Berlin"
POLL = 0.5
SCRIPT_NAME = '<script>alert("owned")</script>'
STUDENTS = {
    "ann@example.org": "Ann Lee",
    "bob@example.org": "Bob Müller",
    "cy@example.org": "Cy O'Neil",
    "dee@example.org": "Dee Okafor",
    "zed@example.org": SCRIPT_NAME,
    "eve@example.org": "Eve Ng",
}


@dataclass
class Site:
    """Everything the browser tests run against."""

    tm: Cli
    radicale: RadicaleServer
    web: WebServer
    daemon: Process
    store: Store
    driver: WebDriver
    shots: Path

    def open(self, path: str) -> None:
        """Load a page of the web interface."""
        self.driver.get(self.web.url + path)

    def href(self) -> str:
        """The session's event on Radicale."""
        with self.store.scratch() as db:
            href = get_session(db, KEY).href
        assert href is not None
        return href

    def calendar_of(self, email: str) -> str:
        """The calendar status the store holds for a student."""
        with self.store.scratch() as db:
            for e in get_session(db, KEY).enrollments:
                if e.person.email == email:
                    return e.calendar_status
        raise AssertionError(email)

    def cell(self, email: str) -> WebElement:
        """A student's Calendar cell on the open session page."""
        return self.driver.find_element(By.CSS_SELECTOR, f'tr[data-email="{email}"] td.cal')

    def shown(self, email: str, what: str) -> str | None:
        """What the open page shows in a student's Calendar cell (`data-calendar`, the
        icon's text …), read in one step: a live update may replace the row any time,
        and a held element would go stale."""
        found: str | None = self.driver.execute_script(
            """const cell = document.querySelector(`tr[data-email="${arguments[0]}"] td.cal`);
            if (!cell) return null;
            return arguments[1] === 'icon' ? cell.querySelector('.cal-icon').textContent
                                           : cell.getAttribute(arguments[1]);""",
            email,
            what,
        )
        return found

    def login(self, name: str) -> None:
        """Log in through the login form."""
        self.driver.delete_all_cookies()
        self.open("/login")
        self.driver.find_element(By.NAME, "name").send_keys(name)
        self.driver.find_element(By.NAME, "password").send_keys(PASSWORDS[name], Keys.ENTER)
        WebDriverWait(self.driver, 10).until(lambda d: "/sessions" in d.current_url)


def answer(site: Site, email: str, partstat: str) -> None:
    """The student answers in their calendar (a second CalDAV login edits PARTSTAT)."""
    StudentSide(site.radicale).answer(site.href(), {email: partstat})


def chromium(profile: Path) -> WebDriver:
    """Headless Chromium, as root, with a fresh profile and nothing phoning home."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


@contextmanager
def open_site(tmp: Path) -> Iterator[Site]:
    """Radicale, the store, users and a session; the daemon, the web interface and
    Chromium running; Ann's acceptance recorded; logged in as the admin `boss`."""
    radicale = start_radicale(tmp / "radicale")
    started: list[Process] = []
    driver = None
    store = None
    try:
        tm = cli_for(
            tmp, radicale, f"sqlite:///{tmp / 'store.db'}",
            extra=f'\n[daemon]\npoll_interval = {POLL}\nbackoff_max = 2\n\n'
            '[plugins]\nenable = ["waitlist"]\n',
        )
        add_users(tm)
        for email, name in STUDENTS.items():
            tm.ok("person", "add", email, "--name", name)
        tm.ok("session", "add", KEY, "--title", "Excel basics", "--start", "2027-02-01T09:00",
              "--end", "2027-02-01T12:00", "--tz", ZONE, "--capacity", "5",
              "--location", "Room 2.14")
        tm.ok("enroll", KEY, "ann@example.org", "bob@example.org", "cy@example.org",
              "dee@example.org", "zed@example.org")
        tm.ok("enroll", KEY, "eve@example.org", "--waitlist")
        tm.ok("invite", KEY, "ann@example.org", "bob@example.org", "zed@example.org")
        store = open_store(f"sqlite:///{tmp / 'store.db'}")
        daemon = Process(tm.config, tmp / "daemon.log", "run")
        started.append(daemon)
        web = WebServer(tm.config, tmp / "web.log")
        started.append(web)
        driver = chromium(tmp / "profile")
        result = Site(tm, radicale, web, daemon, store, driver, tmp / "screenshots")
        answer(result, "ann@example.org", "ACCEPTED")
        wait_for(lambda: result.calendar_of("ann@example.org") == "accepted", 30,
                 "the daemon to record Ann's answer")
        result.login("boss")
        yield result
    finally:
        if driver is not None:
            driver.quit()
        for process in reversed(started):
            process.stop()
        if store is not None:
            store.close()
        radicale.stop()




def take_screenshot(out: Path) -> None:
    """The README's picture: the session page with answers in and a tooltip open."""
    import tempfile

    from selenium.webdriver.common.action_chains import ActionChains

    with tempfile.TemporaryDirectory() as folder, open_site(Path(folder)) as site:
        site.tm.ok("invite", KEY, "cy@example.org", "dee@example.org")
        answer(site, "bob@example.org", "DECLINED")
        answer(site, "cy@example.org", "TENTATIVE")
        wait_for(lambda: site.calendar_of("cy@example.org") == "tentative", 30, "answers")
        site.open(f"/sessions/{KEY}")
        WebDriverWait(site.driver, 15).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#suggestions li"))
        site.driver.set_window_size(1200, 760)
        icon = site.cell("ann@example.org").find_element(By.CSS_SELECTOR, ".cal-icon")
        ActionChains(site.driver).move_to_element(icon).perform()
        site.driver.save_screenshot(str(out))


if __name__ == "__main__":
    take_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/web-session-page.png"))
