"""Answer links (issue 17): the signed tokens, the links in the invitation mails, and the
student's page over HTTP on a real `tmcaldav web` (imip mode, real Radicale, real SMTP
sink): a GET records nothing, the button's POST records once (store, history with
source `link`, the organizer's copy on Radicale), an altered token is a 404, an expired
one says so, one from before a reschedule asks again, a cancelled enrollment is told,
a cross-site POST is refused, and the public listener serves nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tests.conftest import Cli
from tests.imip_support import parse, smtp_section
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.test_verbs import future, href_of, students
from tests.web_support import WebServer
from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.links import LinkState, link_key, make_token, read_token, verify
from tmcaldav.localhost import HOST, free_port
from tmcaldav.store import Store
from tmcaldav.store.model import Enrollment, Outbox, Response
from tmcaldav.testing import RadicaleServer
from tmcaldav.testing_mail import SmtpSink
from tmcaldav.web.answers import language
from tmcaldav.web.auth import load_secret

KEY = link_key("k" * 64)
END = datetime(2030, 1, 1, 17, tzinfo=UTC)
NOW = datetime(2029, 12, 1, tzinfo=UTC)

# ---- the tokens -------------------------------------------------------------------------


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**31 - 1))
def test_a_token_reads_back_what_it_was_made_of(enrollment: int, sequence: int) -> None:
    token = make_token(KEY, enrollment, sequence, END)
    assert re.fullmatch(r"[A-Za-z0-9_-]{48}", token)
    read = read_token(KEY, token)
    assert read is not None and (read.enrollment_id, read.sequence, read.expires) == (
        enrollment, sequence, END,
    )
    # The id is not in clear: not as digits, nor as the bytes at the token's start.
    assert str(enrollment) not in token or enrollment < 10


@given(
    st.integers(1, 10**9),
    st.integers(0, 47),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
)
def test_any_altered_character_is_forged(enrollment: int, where: int, char: str) -> None:
    token = make_token(KEY, enrollment, 3, END)
    altered = token[:where] + char + token[where + 1 :]
    if altered != token:
        assert read_token(KEY, altered) is None
        assert verify(KEY, altered, now=NOW) is None


@given(st.binary(min_size=36, max_size=36), st.integers(0, 35), st.integers(1, 255))
def test_an_altered_byte_is_forged(raw: bytes, where: int, flip: int) -> None:
    import base64

    token = make_token(KEY, 7, 1, END)
    data = bytearray(base64.urlsafe_b64decode(token))
    data[where] ^= flip
    assert read_token(KEY, base64.urlsafe_b64encode(bytes(data)).decode()) is None
    # Random bytes of the right length are no token either.
    assert read_token(KEY, base64.urlsafe_b64encode(raw).decode()) is None


def test_other_key_truncated_padded_or_junk_is_forged() -> None:
    token = make_token(KEY, 42, 1, END)
    assert read_token(link_key("x" * 64), token) is None
    for bad in (token[:-1], token + "=", token + "A", "", "é" * 48, "/" * 48):
        assert read_token(KEY, bad) is None


def test_expired_then_stale_then_valid() -> None:
    token = make_token(KEY, 42, 2, END)
    assert verify(KEY, token, now=END, sequence=2).state is LinkState.EXPIRED  # type: ignore[union-attr]
    assert verify(KEY, token, now=NOW, sequence=3).state is LinkState.STALE  # type: ignore[union-attr]
    found = verify(KEY, token, now=NOW, sequence=2)
    assert found is not None and found.state is LinkState.VALID and found.enrollment_id == 42


def test_the_page_language_follows_accept_language() -> None:
    assert language("de-DE,de;q=0.9,en;q=0.8") == "de"
    assert language("en-US,de;q=0.5") == "en"
    assert language("fr-FR,de;q=0.7,en;q=0.3") == "de"
    assert language(None) == "en" and language("fr") == "en"


# ---- over HTTP --------------------------------------------------------------------------


@dataclass
class World:
    tm: Cli
    web: WebServer
    sink: SmtpSink
    radicale: RadicaleServer
    public: str

    def store(self) -> Store:
        return open_store(load_config(self.tm.config).store.url)


PEOPLE = {"ann@example.org": "Ann Lee", "bob@example.org": "Bob Müller"}


@pytest.fixture
def world(
    tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink
) -> Iterator[World]:
    public_port = free_port()
    public = f"http://{HOST}:{public_port}"
    tm = cli_for(
        tmp_path,
        radicale_server,
        f"sqlite:///{tmp_path / 'store.db'}",
        mode="imip",
        extra=smtp_section(smtp_sink.port)
        + f'\n[web]\npublic_url = "{public}"\npublic_listen = "{HOST}:{public_port}"\n',
    )
    add_people(tm, PEOPLE)
    add_session(tm, "TM-1", "--location", "Room 1", start=future(10), end=future(10, 17))
    tm.ok("enroll", "TM-1", *PEOPLE)
    web = WebServer(tm.config, tmp_path / "web.log")
    try:
        yield World(tm, web, smtp_sink, radicale_server, public)
    finally:
        web.stop()


def links_for(world: World, address: str, count: int = 2) -> dict[str, str]:
    """The answer links in the latest REQUEST mail to `address` (text part)."""
    mails = world.sink.wait_for(count)
    mail = [m for m in mails if m.rcpt_tos == [address]][-1]
    message = parse(mail.content)
    text = str(message.get_body(("plain",)).get_content()).replace("\r\n", "\n")  # type: ignore[union-attr]
    rich = str(message.get_body(("html",)).get_content())  # type: ignore[union-attr]
    found = dict(re.findall(r"^  (Yes|Maybe|No|Your answer page): (\S+)$", text, re.M))
    assert set(found) == {"Yes", "Maybe", "No", "Your answer page"}, text
    for url in found.values():
        assert url.startswith(world.public + "/a/") and url.replace("&", "&amp;") in rich
    assert address not in "".join(found.values())
    return found


def nonce_of(html: str) -> str:
    found = re.search(r'name="nonce" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def post(url: str, answer: str, page: httpx.Response, **headers: str) -> httpx.Response:
    return httpx.post(
        url.split("?")[0], data={"answer": answer, "nonce": nonce_of(page.text)},
        headers=headers, timeout=30,
    )


def test_get_records_nothing_post_records_once(world: World) -> None:
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    links = links_for(world, "ann@example.org")
    href = href_of(world.tm)
    # A mail scanner opens every link: nothing changes.
    for url in links.values():
        seen = httpx.get(url, timeout=30)
        assert seen.status_code == 200 and "Course" not in seen.headers.get("set-cookie", "")
        assert "set-cookie" not in seen.headers
    page = httpx.get(links["Yes"], timeout=30)
    assert "Room 1" in page.text and "Ann Lee" in page.text and "bob@" not in page.text
    assert students(world.tm)["ann@example.org"]["calendar"] == "invited"

    done = post(links["Yes"], "tentative", page)
    assert done.status_code == 200, done.text
    assert 'data-status="tentative"' in done.text
    assert students(world.tm)["ann@example.org"]["calendar"] == "tentative"
    assert StudentSide(world.radicale).partstats(href)["ann@example.org"] == "TENTATIVE"
    again = post(links["Yes"], "tentative", page)
    assert again.status_code == 200
    store = world.store()
    with store.transaction() as db:
        enrollment = db.scalars(
            select(Enrollment).where(Enrollment.calendar_status == "tentative")
        ).one()
        sources = db.scalars(
            select(Response.source).where(Response.enrollment_id == enrollment.id)
        ).all()
        hooks = db.scalars(
            select(Outbox.hook).where(Outbox.enrollment_id == enrollment.id)
        ).all()
    store.close()
    assert list(sources) == ["link"]
    assert list(hooks) == ["response"], hooks
    # German when the browser asks for it.
    german = httpx.get(links["No"], headers={"accept-language": "de"}, timeout=30)
    assert "Vielleicht" in german.text and 'lang="de"' in german.text


def test_forged_expired_cross_site_and_the_public_listener(world: World) -> None:
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    links = links_for(world, "bob@example.org")
    page_url = links["Your answer page"]
    token = page_url.rsplit("/", 1)[1]
    altered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    bad = httpx.get(page_url.replace(token, altered), timeout=30)
    assert bad.status_code == 404 and "Bob" not in bad.text
    # A cross-site POST (another site's form) is refused, even with the nonce.
    page = httpx.get(page_url, timeout=30)
    foreign = post(page_url, "accepted", page, **{"sec-fetch-site": "cross-site"})
    assert foreign.status_code == 403
    foreign = post(page_url, "accepted", page, origin="https://evil.example")
    assert foreign.status_code == 403
    no_nonce = httpx.post(page_url, data={"answer": "accepted"}, timeout=30)
    assert no_nonce.status_code == 403
    assert students(world.tm)["bob@example.org"]["calendar"] == "invited"
    # Expired: a token made with the same key, its expiry passed.
    config = load_config(world.tm.config)
    key = link_key(load_secret(config.web.secret_path(config.path)))
    read = read_token(key, token)
    assert read is not None
    old = make_token(key, read.enrollment_id, read.sequence, datetime.now(UTC) - timedelta(1))
    expired = httpx.get(f"{world.public}/a/{old}", timeout=30)
    assert expired.status_code == 410 and "expired" in expired.text
    # The public listener serves the answer pages and nothing of the administrators'.
    assert httpx.get(world.public + "/sessions", timeout=30).status_code == 404
    assert httpx.get(world.public + "/login", timeout=30).status_code == 404
    assert httpx.get(world.public + "/api/sessions", timeout=30).status_code == 404
    assert httpx.get(world.web.url + "/login", timeout=30).status_code == 200


def test_reschedule_asks_again_and_cancelled_is_told(world: World) -> None:
    world.tm.ok("invite", "TM-1", "--all-enrolled")
    links = links_for(world, "ann@example.org")
    bob = links_for(world, "bob@example.org")
    world.tm.ok("session", "edit", "TM-1", "--start", future(12), "--end", future(12, 17))
    page = httpx.get(links["Yes"], timeout=30)
    assert page.status_code == 200 and "new time" in page.text
    assert future(12)[:10] in page.text
    # The old page's button: not recorded, asked again.
    stale = httpx.get(links["Yes"], timeout=30)
    refused = httpx.post(
        links["Yes"].split("?")[0], data={"answer": "accepted", "nonce": nonce_of(stale.text)},
        timeout=30,
    )
    assert refused.status_code in (403, 409)
    assert students(world.tm)["ann@example.org"]["calendar"] == "invited"
    # The page's own form (a link for the new time) records.
    action = re.search(r'action="([^"]+)"', stale.text)
    assert action
    fresh = world.public + action.group(1)
    done = post(fresh, "accepted", httpx.get(fresh, timeout=30))
    assert done.status_code == 200
    assert students(world.tm)["ann@example.org"]["calendar"] == "accepted"
    # Bob is taken off the list: his link says so and shows nothing else.
    world.tm.ok("set-status", "TM-1", "bob@example.org", "cancelled")
    gone = httpx.get(bob["Yes"], timeout=30)
    assert gone.status_code == 410 and "no longer enrolled" in gone.text
    assert "Room 1" not in gone.text
