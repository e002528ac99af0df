"""Test helpers for scenarios against a real Radicale: config, the student's side.

A student's answer is played the way a scheduling server produces it: a second user
edits that attendee's PARTSTAT in the organizer's copy, with If-Match and without
touching SEQUENCE.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin

import niquests

from tests.conftest import Cli, write_config
from tmcaldav import ical
from tmcaldav.testing import RadicaleServer

CALENDAR = "trainings"


def radicale_config(
    tmp_path: Path,
    server: RadicaleServer,
    store_url: str,
    *,
    mode: str = "server",
    extra: str = "",
) -> Path:
    """A config file for the organizer on `server`, with a private password file."""
    pw = tmp_path / "caldav.pw"
    pw.write_text(server.users[server.organizer])
    pw.chmod(0o600)
    return write_config(
        tmp_path / "daemon.toml",
        store_url,
        f'mode = "{mode}"\n\n[caldav]\nurl = "{server.url}"\nusername = "{server.organizer}"\n'
        f'password_file = "{pw}"\ncalendar = "{CALENDAR}"\ntimeout = 10\n' + extra,
    )


def cli_for(tmp_path: Path, server: RadicaleServer, store_url: str, **kw: str) -> Cli:
    """The CLI on an upgraded store, talking to `server`."""
    tm = Cli(radicale_config(tmp_path, server, store_url, **kw))
    tm.ok("db", "upgrade")
    return tm


class StudentSide:
    """Plays the students' scheduling server: reads and edits the organizer's events."""

    def __init__(self, server: RadicaleServer, user: str = "student"):
        self.server = server
        self.http = niquests.Session()
        self.http.auth = (user, server.users[user])

    def url(self, href: str) -> str:
        """Absolute URL of an href."""
        return urljoin(self.server.url, href)

    def get(self, href: str) -> tuple[str, str]:
        """The event's text and ETag."""
        r = self.http.get(self.url(href))
        assert r.status_code == 200, (r.status_code, href)
        return r.text, r.headers["ETag"]

    def event(self, href: str) -> ical.EventState:
        """The event as parsed."""
        return ical.read_event(self.get(href)[0])

    def partstats(self, href: str) -> dict[str, str]:
        """address -> raw PARTSTAT on the server."""
        return {a: s.partstat for a, s in self.event(href).attendees.items()}

    def answer(self, href: str, answers: dict[str, str]) -> str:
        """Set PARTSTATs as a scheduling server applies a REPLY; returns the new ETag."""
        text, etag = self.get(href)
        return self.put(href, ical.set_partstats(text, answers), etag)

    def put(self, href: str, text: str, etag: str | None = None) -> str:
        """PUT raw text (If-Match when an ETag is given)."""
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        if etag:
            headers["If-Match"] = etag
        r = self.http.put(self.url(href), data=text.encode(), headers=headers)
        assert r.status_code in (201, 204), (r.status_code, r.text)
        return r.headers["ETag"]

    def delete(self, href: str) -> None:
        """Delete an event (as another client would)."""
        r = self.http.delete(self.url(href))
        assert r.status_code in (200, 204), r.status_code

    def hrefs(self, calendar: str = CALENDAR) -> list[str]:
        """Every event href in the organizer's calendar."""
        r = self.http.request(
            "PROPFIND",
            self.url(f"/{self.server.organizer}/{calendar}/"),
            headers={"Depth": "1", "Content-Type": "application/xml"},
            data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>',
        )
        assert r.status_code == 207
        import re

        found = re.findall(r"<(?:\w+:)?href>([^<]+\.ics)</(?:\w+:)?href>", r.text)
        return sorted(found)


def add_people(tm: Cli, people: dict[str, str]) -> None:
    """`person add` for each address → name."""
    for email, name in people.items():
        tm.ok("person", "add", email, "--name", name)


def add_session(
    tm: Cli,
    key: str = "TM-1",
    *options: str,
    title: str = "Intro",
    start: str = "2026-12-01T09:00",
    end: str = "2026-12-01T17:00",
) -> None:
    """`session add` with the tests' usual title and times, plus `options`."""
    tm.ok("session", "add", key, "--title", title, "--start", start, "--end", end, *options)
