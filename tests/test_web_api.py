"""The web interface over HTTP, as scripts and browsers without script see it: a real
`tmcaldav web` process on 127.0.0.1 over a real store (SQLite and PostgreSQL) and a
real Radicale; logins, roles, CSRF, the JSON API, errors, the live channel."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cli
from tests.plugin_world import config_for, dispatcher_for
from tests.scenario import StudentSide, cli_for
from tests.web_support import PASSWORDS, WebServer, add_users, browser_client, csrf_of
from tmcaldav.app import open_store
from tmcaldav.localhost import wait_for
from tmcaldav.radicale import RadicaleServer, start_radicale
from tmcaldav.store import Store, get_session
from tmcaldav.views import SuggestionSpec

STUDENTS = {
    "ann@example.org": "Ann Lee",
    "bob@example.org": "Bob Müller",
    "cy@example.org": "<img src=x onerror=alert(1)>",
    "dee@example.org": "Dee",
}


@dataclass
class World:
    """One store with users and sessions, Radicale, and `tmcaldav web` over them."""

    tm: Cli
    web: WebServer
    radicale: RadicaleServer
    store: Store
    tokens: dict[str, str]

    def api(self, name: str | None = "boss") -> httpx.Client:
        """An API client with `name`'s bearer token (no cookies)."""
        headers = {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}
        return httpx.Client(base_url=self.web.url, headers=headers, timeout=30)

    def page(self, key: str) -> dict[str, object]:
        """`session show KEY --json`."""
        return json.loads(self.tm.ok("session", "show", key, "--json").output)  # type: ignore[no-any-return]


def session(tm: Cli, key: str, *emails: str, start: str = "2027-03-01T09:00") -> None:
    """A session with these students enrolled."""
    tm.ok(
        "session", "add", key, "--title", f"Course {key}", "--start", start,
        "--end", start[:11] + "17:00", "--capacity", "10", "--location", "Room 1",
    )
    if emails:
        tm.ok("enroll", key, *emails)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("web")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(
            f"web_{tmp.name.replace('-', '_')}"
        )
    radicale = start_radicale(tmp / "radicale")
    try:
        tm = cli_for(tmp, radicale, url)
        add_users(tm)
        tokens = {
            name: tm.ok("user", "token", name).stdout.strip() for name in ("boss", "watcher")
        }
        for email, name in STUDENTS.items():
            tm.ok("person", "add", email, "--name", name)
        web = WebServer(tm.config, tmp / "web.log")
        store = open_store(url)
        try:
            yield World(tm, web, radicale, store, tokens)
        finally:
            web.stop()
            store.close()
    finally:
        radicale.stop()


def test_strangers_are_turned_away(world: World) -> None:
    anonymous = world.api(None)
    refused = anonymous.get("/api/sessions")
    assert refused.status_code == 401
    assert refused.json()["status"] == 401 and "Bearer" in refused.json()["error"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    wrong = anonymous.get("/api/sessions", headers={"Authorization": "Bearer tmc_nope"})
    assert wrong.status_code == 401
    page = anonymous.get("/sessions/ANY", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fsessions%2FANY"
    assert anonymous.get("/sessions/ANY/live").status_code == 401


def test_the_api_serves_the_clis_objects(world: World) -> None:
    session(world.tm, "API-1", "ann@example.org", "bob@example.org")
    world.tm.ok("note", "API-1", "bob@example.org", "phoned, will come")
    api = world.api()
    got = api.get("/api/sessions/API-1")
    assert got.status_code == 200
    assert got.json() == world.page("API-1")
    listed = api.get("/api/sessions").json()
    assert listed == json.loads(world.tm.ok("session", "list", "--json").output)
    history = api.get("/api/sessions/API-1/students/ann@example.org/history")
    assert history.status_code == 200 and history.json() == []
    assert api.get("/api/me").json() == {"name": "boss", "role": "admin"}
    # The token's use is recorded (to the minute), for `user list`.
    users = {r["name"]: r for r in json.loads(world.tm.ok("user", "list", "--json").output)}
    assert users["boss"]["tokens_last_used_at"] is not None
    missing = api.get("/api/sessions/NOPE")
    assert missing.status_code == 404 and "no session with key 'NOPE'" in missing.json()["error"]
    stranger = api.get("/api/sessions/API-1/students/zed@example.org/history")
    assert stranger.status_code == 404


def test_actions_through_the_api_reach_the_calendar(world: World) -> None:
    session(world.tm, "API-2", "ann@example.org", "bob@example.org", "dee@example.org")
    api = world.api()
    invited = api.post("/api/sessions/API-2/invite", json={"emails": ["ann@example.org",
                                                                       "BOB@example.org"]})
    assert invited.status_code == 200, invited.text
    assert invited.json() == {
        "session": "API-2", "invited": ["ann@example.org", "bob@example.org"], "resent": False,
    }
    with world.store.scratch() as db:
        href = get_session(db, "API-2").href
    assert href is not None
    assert set(StudentSide(world.radicale).partstats(href)) == {
        "ann@example.org", "bob@example.org",
    }

    status = api.post("/api/sessions/API-2/status",
                      json={"email": "dee@example.org", "status": "waitlisted", "note": "later"})
    assert status.status_code == 200, status.text
    assert status.json()["changes"] == [
        {"email": "dee@example.org", "old": "enrolled", "status": "waitlisted"}
    ]
    # An answer given by phone: recorded by hand (source manual), the server untouched.
    phoned = api.post("/api/sessions/API-2/answer",
                      json={"email": "bob@example.org", "answer": "tentative"})
    assert phoned.status_code == 200, phoned.text
    assert phoned.json()["recorded"] == ["bob@example.org"]
    bob = {s["email"]: s for s in world.page("API-2")["students"]}["bob@example.org"]  # type: ignore[attr-defined]
    assert (bob["calendar"], bob["by_hand"]) == ("tentative", True)
    assert StudentSide(world.radicale).partstats(href)["bob@example.org"] == "NEEDS-ACTION"
    refused = api.post("/api/sessions/API-2/answer",
                       json={"email": "bob@example.org", "answer": "maybe"})
    assert refused.status_code == 400 and "unknown answer 'maybe'" in refused.json()["error"]
    noted = api.post("/api/sessions/API-2/notes", json={"email": "ann@example.org",
                                                        "text": "needs parking"})
    assert noted.status_code == 201
    students = {s["email"]: s for s in world.page("API-2")["students"]}  # type: ignore[attr-defined]
    assert students["dee@example.org"]["status"] == "waitlisted"
    assert [n["text"] for n in students["ann@example.org"]["notes"]] == ["needs parking"]

    # Bad input: 400 with the service's own message, and nothing changes.
    bad = api.post("/api/sessions/API-2/status", json={"email": "ann@example.org",
                                                       "status": "gone"})
    assert bad.status_code == 400 and "unknown status 'gone'" in bad.json()["error"]
    assert api.post("/api/sessions/API-2/invite", json={"emails": "ann"}).status_code == 400
    assert api.post("/api/sessions/API-2/invite", content=b"{not json",
                    headers={"Content-Type": "application/json"}).status_code == 400
    assert api.post("/api/sessions/API-2/edit",
                    json={"start": "2027-03-01T18:00"}).status_code == 400
    assert api.post("/api/sessions/API-2/notes",
                    json={"email": "zed@example.org", "text": "x"}).status_code == 404
    assert api.post("/api/sessions/NOPE/cancel").status_code == 404

    moved = api.post("/api/sessions/API-2/edit", json={"start": "2027-03-02T09:00",
                                                       "end": "2027-03-02T17:00"})
    assert moved.status_code == 200 and moved.json()["changed"] == ["end", "start"]
    assert StudentSide(world.radicale).event(href).sequence == 1
    cancelled = api.post("/api/sessions/API-2/cancel")
    assert cancelled.json() == {"session": "API-2", "status": "cancelled", "event_updated": True}
    assert api.post("/api/sessions/API-2/cancel").status_code == 400


def test_a_viewer_reads_but_cannot_act(world: World) -> None:
    session(world.tm, "API-3", "ann@example.org")
    viewer = world.api("watcher")
    assert viewer.get("/api/sessions/API-3").status_code == 200
    refused = viewer.post("/api/sessions/API-3/invite", json={"emails": ["ann@example.org"]})
    assert refused.status_code == 403 and "viewer" in refused.json()["error"]
    browser = browser_client(world.web.url, "watcher")
    page = browser.get("/sessions/API-3")
    assert page.status_code == 200 and 'data-email="ann@example.org"' in page.text
    assert "Send calendar invitation" not in page.text and 'name="email"' not in page.text
    form = browser.post("/sessions/API-3/act", data={
        "csrf_token": csrf_of(page.text), "action": "status", "status": "cancelled",
        "email": "ann@example.org",
    })
    assert form.status_code == 403 and "viewers read, admins act" in form.text
    assert world.page("API-3")["students"][0]["status"] == "enrolled"  # type: ignore[index]


def test_a_form_without_its_csrf_token_is_refused(world: World) -> None:
    session(world.tm, "API-4", "ann@example.org")
    browser = browser_client(world.web.url, "boss")
    page = browser.get("/sessions/API-4")
    fields = {"action": "status", "status": "cancelled", "email": "ann@example.org"}
    refused = browser.post("/sessions/API-4/act", data=fields)
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = browser.post("/sessions/API-4/act", data=fields | {"csrf_token": "forged"})
    assert forged.status_code == 403
    api_with_cookie = browser.post("/api/sessions/API-4/status",
                                   json={"email": "ann@example.org", "status": "cancelled"})
    assert api_with_cookie.status_code == 403
    assert world.page("API-4")["students"][0]["status"] == "enrolled"  # type: ignore[index]
    done = browser.post("/sessions/API-4/act", data=fields | {"csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == "/sessions/API-4"
    assert "Status set: ann@example.org (enrolled → cancelled)" in browser.get(
        "/sessions/API-4").text
    assert world.page("API-4")["students"][0]["status"] == "cancelled"  # type: ignore[index]


def test_suggestions_apply_once_then_409(world: World) -> None:
    session(world.tm, "API-5", "ann@example.org", "bob@example.org")
    from tests.plugin_world import answer

    class Advice:
        from tmcaldav.hookspecs import hookimpl

        @hookimpl
        def on_decline(self, change):  # type: ignore[no-untyped-def]
            return [SuggestionSpec("contact_student", change.email, "ask why"),
                    SuggestionSpec("contact_student", "bob@example.org", "ask Bob too")]

    with world.store.transaction() as db:
        for e in get_session(db, "API-5").enrollments:
            e.calendar_status = "invited"
    answer(world.store, "API-5", "ann@example.org", "declined")
    dispatcher_for(config_for(world.store.url), world.store, ("advice", Advice())).run()
    api = world.api()
    rows = api.get("/api/suggestions", params={"session": "API-5"}).json()
    assert [(r["kind"], r["email"], r["state"]) for r in rows] == [
        ("contact_student", "ann@example.org", "open"),
        ("contact_student", "bob@example.org", "open"),
    ]
    first, second = rows[0]["id"], rows[1]["id"]
    applied = api.post(f"/api/suggestions/{first}/apply", json={"note": "phoned"})
    assert applied.status_code == 200 and applied.json()["state"] == "applied"
    again = api.post(f"/api/suggestions/{first}/apply")
    assert again.status_code == 409 and "applied" in again.json()["error"]
    assert api.post(f"/api/suggestions/{first}/dismiss").status_code == 409
    assert api.post(f"/api/suggestions/{second}/dismiss").json()["state"] == "dismissed"
    assert api.post("/api/suggestions/99999/apply").status_code == 404
    assert api.post("/api/suggestions/x/apply").status_code == 400
    assert api.get("/api/suggestions", params={"session": "API-5"}).json() == []
    everything = api.get("/api/suggestions", params={"session": "API-5", "all": "1"}).json()
    assert [r["state"] for r in everything] == ["applied", "dismissed"]
    students = {s["email"]: s for s in world.page("API-5")["students"]}  # type: ignore[attr-defined]
    assert [n["text"] for n in students["ann@example.org"]["notes"]] == ["phoned"]
    # The web page shows them too, with the Apply button beside the list (admins only).
    browser = browser_client(world.web.url, "boss")
    assert "No suggestions" not in browser.get("/suggestions?all=1").text
    assert f'data-suggestion="{first}"' in browser.get("/suggestions?all=1").text


def test_pages_escape_what_students_wrote(world: World) -> None:
    session(world.tm, "API-6", "cy@example.org")
    world.tm.ok("note", "API-6", "cy@example.org", "<script>alert('note')</script>")
    browser = browser_client(world.web.url, "boss")
    for path in ("/sessions/API-6", "/sessions/API-6/students/cy@example.org", "/sessions"):
        html = browser.get(path).text
        assert "<img src=x" not in html and "<script>alert" not in html, path
    page = browser.get("/sessions/API-6").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(&#39;note&#39;)&lt;/script&gt;" in page


def test_security_headers_and_the_login_cookie(world: World) -> None:
    anonymous = httpx.Client(base_url=world.web.url)
    login = anonymous.get("/login")
    csp = login.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert login.headers["x-content-type-options"] == "nosniff"
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["cache-control"] == "no-store"
    assert "<script>" not in login.text and " style=" not in login.text
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert anonymous.get("/static/app.css").headers["x-content-type-options"] == "nosniff"


def test_logins_slow_down_after_failures(world: World) -> None:
    browser = httpx.Client(base_url=world.web.url)
    token = csrf_of(browser.get("/login").text)

    def attempt(password: str) -> httpx.Response:
        return browser.post("/login", data={"name": "boss", "password": password,
                                            "csrf_token": token})

    for _ in range(3):
        assert attempt("wrong").status_code == 401
    refused = attempt(PASSWORDS["boss"])
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert int(refused.headers["retry-after"]) >= 1
    # After the wait, the right password works (and clears the count).
    ok = wait_for(lambda: attempt(PASSWORDS["boss"]).status_code == 303, 10, "the login")
    assert ok


def test_removing_a_user_ends_their_logins_and_tokens(world: World) -> None:
    world.tm.ok("user", "add", "temp", "--role", "admin", input="temp-password\n")
    token = world.tm.ok("user", "token", "temp").stdout.strip()
    api = httpx.Client(base_url=world.web.url, headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/me").json() == {"name": "temp", "role": "admin"}
    PASSWORDS["temp"] = "temp-password"
    browser = browser_client(world.web.url, "temp")
    assert browser.get("/sessions").status_code == 200
    world.tm.ok("user", "remove", "temp")
    assert api.get("/api/me").status_code == 401
    assert browser.get("/sessions", follow_redirects=False).status_code == 303


def read_events(stream: Iterator[str], until: str, limit: float = 15.0) -> list[str]:
    """Lines of an SSE stream up to the first that starts with `until`."""
    lines = []
    deadline = time.monotonic() + limit
    for line in stream:
        lines.append(line)
        if line.startswith(until) or time.monotonic() > deadline:
            break
    return lines


def test_the_live_channel_pushes_changes_and_catches_up(world: World) -> None:
    session(world.tm, "LIVE-1", "ann@example.org")
    session(world.tm, "LIVE-2", "bob@example.org")
    api = world.api()
    with api.stream("GET", "/sessions/LIVE-1/live",
                    timeout=httpx.Timeout(20, read=20)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        # A change to another session does not wake this page; one to this session does.
        world.tm.ok("note", "LIVE-2", "bob@example.org", "elsewhere")
        world.tm.ok("note", "LIVE-1", "ann@example.org", "here")
        got = read_events(lines, "data:")
        assert "event: change" in got, got
        event_id = int(next(x for x in got if x.startswith("id: "))[4:])
        assert json.loads(got[-1][5:]) == {"session": "LIVE-1", "change": event_id}
    # Reconnecting from before that change brings it at once; from it, nothing is due.
    with api.stream("GET", "/sessions/LIVE-1/live",
                    headers={"Last-Event-ID": str(event_id - 1)}) as response:
        got = read_events(response.iter_lines(), "data:")
        # At once, and at least that change (changes made meanwhile are coalesced: the
        # page refetches once, whatever came since).
        assert int(next(x for x in got if x.startswith("id: "))[4:]) >= event_id
    world.tm.ok("set-status", "LIVE-1", "ann@example.org", "waitlisted")
    with api.stream("GET", "/sessions/LIVE-1/live", params={"after": str(event_id)}) as response:
        got = read_events(response.iter_lines(), "data:")
        assert int(next(x for x in got if x.startswith("id: "))[4:]) > event_id


def test_the_sessions_page_pages_and_counts(world: World, tmp_path: Path) -> None:
    browser = browser_client(world.web.url, "watcher")
    html = browser.get("/sessions").text
    assert "Upcoming sessions" in html and "Past sessions (" in html
    session(world.tm, "OLD-1", "ann@example.org", start="2020-01-01T09:00")
    past = browser.get("/sessions?past=1").text
    assert 'data-key="OLD-1"' in past and 'data-key="API-1"' not in past
    assert "Reports" in browser.get("/reports").text


def test_attendance_reschedule_and_cancel_ask_first(world: World) -> None:
    session(world.tm, "API-7", "ann@example.org", "bob@example.org", "dee@example.org")
    world.tm.ok("invite", "API-7", "ann@example.org", "bob@example.org")
    browser = browser_client(world.web.url, "boss")
    token = csrf_of(browser.get("/sessions/API-7").text)

    # Attendance: everyone at once; only what changed is recorded.
    form = browser.get("/sessions/API-7/attendance").text
    assert form.count('type="radio"') == 9
    done = browser.post("/sessions/API-7/attendance", data={
        "csrf_token": token, "attendance:ann@example.org": "attended",
        "attendance:bob@example.org": "no_show", "attendance:dee@example.org": "enrolled",
    })
    assert done.status_code == 303
    statuses = {s["email"]: s["status"] for s in world.page("API-7")["students"]}  # type: ignore[attr-defined]
    assert statuses == {"ann@example.org": "attended", "bob@example.org": "no_show",
                        "dee@example.org": "enrolled"}

    # Reschedule: the first POST shows who will be asked again; only the confirmed one acts.
    fields = {"csrf_token": token, "start": "2027-03-08T09:00", "end": "2027-03-08T17:00",
              "tz": "Europe/Berlin", "location": "Room 1"}
    review = browser.post("/sessions/API-7/reschedule", data=fields)
    assert review.status_code == 200 and "Please confirm" in review.text
    assert "ann@example.org" in review.text and "dee@example.org" not in review.text
    assert world.page("API-7")["start"] == "2027-03-01T09:00:00+01:00"
    moved = browser.post("/sessions/API-7/reschedule", data=fields | {"confirm": "yes"})
    assert moved.status_code == 303
    assert world.page("API-7")["start"] == "2027-03-08T09:00:00+01:00"

    # Cancel: refused (400, nothing done) until the box is ticked.
    asked = browser.get("/sessions/API-7/cancel").text
    assert "will receive a cancellation" in asked and "bob@example.org" in asked
    unconfirmed = browser.post("/sessions/API-7/cancel", data={"csrf_token": token})
    assert unconfirmed.status_code == 400 and world.page("API-7")["status"] == "scheduled"
    confirmed = browser.post("/sessions/API-7/cancel", data={"csrf_token": token,
                                                             "confirm": "yes"})
    assert confirmed.status_code == 303 and world.page("API-7")["status"] == "cancelled"
    # A cancelled session offers no actions on its page.
    assert 'value="invite"' not in browser.get("/sessions/API-7").text


def test_reports_draw_their_charts(world: World) -> None:
    session(world.tm, "OLD-2", "ann@example.org", "bob@example.org", start="2020-02-03T09:00")
    world.tm.ok("set-status", "OLD-2", "bob@example.org", "no_show")
    browser = browser_client(world.web.url, "watcher")
    page = browser.get("/reports").text
    assert page.count("<svg") == 2 and 'id="no-show-chart"' in page
    assert 'data-email="bob@example.org"' in page
    api = world.api("watcher")
    assert "bob@example.org" in [r["email"] for r in api.get("/api/reports/no-shows").json()]
    timing = api.get("/api/reports/answer-timing").json()
    assert set(timing) == {"answered", "unanswered", "median_hours", "buckets"}
