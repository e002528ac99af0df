"""What the web interface stands on: users and tokens (`tmcaldav user …`), the [web]
config, the cookie key file, the change feed the live pages follow, the reports it
draws, and proxies it may believe."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import Cli, write_config
from tests.plugin_world import answer, seed
from tests.web_support import WebServer, add_users
from tmcaldav.app import open_store
from tmcaldav.config import ConfigError, parse_config
from tmcaldav.store import Store, get_enrollment, get_session
from tmcaldav.store.changes import changed_since, changes_after, latest_change
from tmcaldav.store.model import (
    ApiToken,
    Base,
    Change,
    Suggestion,
    WebThrottle,
    WebUser,
    utcnow,
)
from tmcaldav.store.reports import answer_timing
from tmcaldav.web.auth import Proxies, SecretFileError, load_secret
from tmcaldav.web.throttle import KEEP_SECONDS, PRUNE_EVERY, LinkThrottle, LoginThrottle
from tmcaldav.web.users import check_password, hash_password, token_hash


def test_user_add_list_token_remove(tm: Cli, store_url: str) -> None:
    added = tm.ok("user", "add", "boss", "--role", "admin", input="correct horse\n")
    assert added.output.strip() == "added user boss (admin)"
    tm.ok("user", "add", "watcher", input="battery staple\n")
    rows = json.loads(tm.ok("user", "list", "--json").output)
    assert [(r["name"], r["role"], r["tokens"]) for r in rows] == [
        ("boss", "admin", 0),
        ("watcher", "viewer", 0),
    ]
    token = tm.ok("user", "token", "boss").stdout.strip()
    assert token.startswith("tmc_") and len(token) > 40
    store = open_store(store_url)
    with store.scratch() as db:
        user = db.scalars(select(WebUser).where(WebUser.name == "boss")).one()
        # Only hashes are kept: neither the password nor the token is in the store.
        assert "correct horse" not in user.password_hash
        assert check_password("correct horse", user.password_hash)
        assert not check_password("correct horsE", user.password_hash)
        hashes = db.scalars(select(ApiToken.token_hash)).all()
        assert hashes == [token_hash(token)] and token not in hashes
    assert tm.ok("user", "list").output.splitlines()[1].split()[:3] == ["boss", "admin", "1"]
    # Bad input changes nothing and says what to do.
    taken = tm("user", "add", "boss", input="another one\n")
    assert taken.exit_code == 1 and "exists already" in taken.stderr
    short = tm("user", "add", "shorty", input="1234567\n")
    assert short.exit_code == 2 and "too short" in short.stderr
    for bad in ("has space", "-dash", ""):
        refused = tm("user", "add", bad, input="long enough\n")
        assert refused.exit_code == 2, bad
    role = tm("user", "add", "x", "--role", "root", input="long enough\n")
    assert role.exit_code == 2
    empty = tm("user", "add", "nobody", input="")
    assert empty.exit_code == 2 and "standard input" in empty.stderr
    missing = tm("user", "token", "ghost")
    assert missing.exit_code == 1 and "tmcaldav user list" in missing.stderr
    tm.ok("user", "remove", "boss")
    assert [r["name"] for r in json.loads(tm.ok("user", "list", "--json").output)] == ["watcher"]
    with store.scratch() as db:
        assert db.scalars(select(ApiToken)).all() == []
    store.close()
    assert tm("user", "remove", "boss").exit_code == 1


def test_password_hashes_are_salted_scrypt() -> None:
    one, two = hash_password("same"), hash_password("same")
    assert one != two and one.startswith("scrypt$32768$8$3$")
    assert check_password("same", one) and check_password("same", two)
    assert not check_password("same", "md5$whatever") and not check_password("same", "garbage")


def test_web_config_keys() -> None:
    base = {"store": {"url": "sqlite:///x.db"}, "scheduling": {"organizer_email": "t@example.org"}}
    config = parse_config(base)
    assert config.web.listen == "127.0.0.1:8080" and config.web.base_url is None
    assert config.web.secret_path("/etc/tmcaldav/daemon.toml") == Path("/etc/tmcaldav/web.secret")
    good = parse_config(base | {"web": {
        "listen": "[::1]:9000", "base_url": "https://t.example.org/tmc/",
        "secret_file": "/var/lib/tmcaldav/web.secret", "trusted_user_header": "X-Remote-User",
        "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"],
        "public_url": "https://t.example.org/answer/", "public_listen": "127.0.0.1:8081",
    }})
    assert good.web.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    with pytest.raises(ConfigError) as info:
        parse_config(base | {"web": {
            "listen": "8080", "base_url": "ftp://x", "trusted_user_header": "X Remote",
            "trusted_proxies": ["proxy.example.org"], "public_listen": "::1:80",
            "public_url": "https://x/?a=1",
        }})
    problems = "\n".join(info.value.problems)
    for expected in (
        "web.listen: expected host:port",
        "web.base_url: not an http(s) URL",
        "web.trusted_user_header: not a header name",
        "web.trusted_proxies: not an IP address or network: 'proxy.example.org'",
        "web.public_listen: write an IPv6 address in brackets",
        "web.public_url: no query or fragment",
    ):
        assert expected in problems, (expected, problems)
    with pytest.raises(ConfigError, match=r"web\.colour: unknown key"):
        parse_config(base | {"web": {"colour": "blue"}})
    with pytest.raises(ConfigError, match=r"needs web\.trusted_proxies"):
        parse_config(base | {"web": {"trusted_user_header": "X-Remote-User"}})


def test_the_cookie_key_is_made_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "web.secret"
    first = load_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    assert load_secret(path) == first
    path.chmod(0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        load_secret(path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(SecretFileError, match="too short"):
        load_secret(path)
    with pytest.raises(SecretFileError, match="secret_file"):
        load_secret(tmp_path / "no" / "such" / "folder" / "web.secret")


def test_logins_wait_longer_after_each_failure(store: Store) -> None:
    now = [1_000_000.0]
    throttle = LoginThrottle(store, cap=8, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait_needed("boss", "10.0.0.1") == 0
        throttle.failed("boss", "10.0.0.1")
    assert throttle.wait_needed("boss", "10.0.0.1") == 1
    assert throttle.wait_needed("BOSS", "10.0.0.9") == 1  # the name, from anywhere
    assert throttle.wait_needed("other", "10.0.0.1") == 1  # the address, any name
    assert throttle.wait_needed("other", "10.0.0.2") == 0
    now[0] += 1
    assert throttle.wait_needed("boss", "10.0.0.1") == 0
    for expected in (2, 4, 8, 8):
        throttle.failed("boss", "10.0.0.1")
        assert throttle.wait_needed("boss", "10.0.0.1") == expected
    throttle.succeeded("boss", "10.0.0.1")
    assert throttle.wait_needed("boss", "10.0.0.1") == 0
    # Counted in the store: another web node (another throttle) sees the same counts,
    # and a quiet quarter of an hour forgets them.
    for _ in range(4):
        throttle.failed("eve", "10.0.0.7")
    other_node = LoginThrottle(store, cap=8, clock=lambda: now[0])
    assert other_node.wait_needed("eve", "10.0.0.8") == 2
    now[0] += LoginThrottle.FORGET + 1
    assert other_node.wait_needed("eve", "10.0.0.7") == 0
    other_node.failed("eve", "10.0.0.7")
    assert throttle.wait_needed("eve", "10.0.0.7") == 0  # one failure, not five


def test_a_long_attack_waits_the_cap_and_old_counts_are_pruned(store: Store) -> None:
    now = [1_000_000.0]
    throttle = LoginThrottle(store, cap=8, clock=lambda: now[0])
    throttle.failed("boss", "10.0.0.1")
    # Counts add up across nodes and restarts: thousands of failures still wait the cap
    # (2.0 ** 1024 would overflow).
    with store.transaction() as db:
        db.execute(update(WebThrottle).values(hits=5_000))
    assert throttle.wait_needed("boss", "10.0.0.1") == 8
    # An hour and more later, the next count (of anyone) deletes the stale rows.
    now[0] += KEEP_SECONDS + PRUNE_EVERY + 1
    throttle.failed("eve", "10.0.0.7")
    with store.scratch() as db:
        assert db.scalars(select(WebThrottle.hits)).all() == [1, 1]


def test_an_answer_link_answers_a_few_times_per_window(store: Store) -> None:
    now = [1_000_000.0]
    throttle = LinkThrottle(store, limit=3, window=600, clock=lambda: now[0])
    other_node = LinkThrottle(store, limit=3, window=600, clock=lambda: now[0])
    assert [throttle.allow("tok-a"), other_node.allow("tok-a"), throttle.allow("tok-a")] == [
        True, True, True,
    ]
    assert not other_node.allow("tok-a")
    assert throttle.allow("tok-b")  # per link
    now[0] += 601
    assert other_node.allow("tok-a")  # a new window


def test_only_trusted_proxies_are_believed() -> None:
    parsed = parse_config({
        "store": {"url": "sqlite:///x.db"}, "scheduling": {"organizer_email": "t@example.org"},
        "web": {"trusted_user_header": "X-Remote-User", "trusted_proxies": ["10.0.0.0/24"]},
    })
    proxies = Proxies(parsed.web)
    assert proxies.header == "x-remote-user"
    assert proxies.trusted("10.0.0.7") and not proxies.trusted("10.0.1.7")
    assert not proxies.trusted("not an address") and not proxies.trusted(None)
    assert proxies.client_address("10.0.0.7", "198.51.100.4, 10.0.0.5") == "198.51.100.4"
    # From anyone else, X-Forwarded-For is whatever they like: ignored.
    assert proxies.client_address("192.0.2.1", "198.51.100.4") == "192.0.2.1"


def test_every_unit_of_work_writes_the_change_feed(store: Store) -> None:
    seed(store, "TM-1")
    seed(store, "TM-2", enrolled=["dee@example.org"])
    with store.scratch() as db:
        start = latest_change(db)
        tm1, tm2 = get_session(db, "TM-1").id, get_session(db, "TM-2").id
    answer(store, "TM-1", "ann@example.org", "accepted")
    with store.scratch() as db:
        rows = changes_after(db, start)
        assert [s for _, s in rows] == [tm1]
        after_answer = latest_change(db)
        assert changed_since(db, tm1, start) == after_answer
        assert changed_since(db, tm2, start) is None
    # A transaction that fails, a read, and a scratch leave no trace.
    with pytest.raises(RuntimeError), store.transaction() as db:
        get_enrollment(db, get_session(db, "TM-2"), "dee@example.org").status = "cancelled"
        raise RuntimeError("changed my mind")
    with store.transaction() as db:
        get_session(db, "TM-2")
    with store.scratch() as db:
        get_session(db, "TM-2").title = "never kept"
        db.flush()
    with store.scratch() as db:
        assert latest_change(db) == after_answer
    # A note reaches its session through its enrollment; a bulk update reaches everyone.
    with store.transaction() as db:
        from tmcaldav.store import add_note

        add_note(db, get_enrollment(db, get_session(db, "TM-2"), "dee@example.org"), "hi")
    with store.transaction() as db:
        db.execute(update(Suggestion).where(Suggestion.id == -1).values(state="dismissed"))
    with store.scratch() as db:
        assert [s for _, s in changes_after(db, after_answer)] == [tm2, None]
        everything = latest_change(db)
        assert changed_since(db, tm1, after_answer) == everything
        assert db.scalar(select(Change.created_at).where(Change.id == everything)) is not None


def test_models_and_migrations_agree(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_answer_timing(store: Store) -> None:
    seed(store, "TM-1", enrolled=["ann@example.org", "bob@example.org", "cy@example.org",
                                  "dee@example.org"], capacity=None)
    invited = utcnow() - timedelta(days=10)
    with store.transaction() as db:
        for e in get_session(db, "TM-1").enrollments:
            e.invited_at = invited
    answer(store, "TM-1", "ann@example.org", "accepted")
    answer(store, "TM-1", "bob@example.org", "declined")
    answer(store, "TM-1", "bob@example.org", "accepted")
    answer(store, "TM-1", "cy@example.org", "invited")
    with store.transaction() as db:
        from tmcaldav.store.model import Response

        for r in db.scalars(select(Response)):
            email = r.enrollment.person.email
            r.responded_at = invited + (timedelta(minutes=30) if email == "ann@example.org"
                                        else timedelta(days=2))
    with store.scratch() as db:
        report = answer_timing(db)
    assert report["answered"] == 2 and report["unanswered"] == 2
    assert [b["count"] for b in report["buckets"]] == [1, 0, 1, 0, 0]
    assert report["median_hours"] == pytest.approx((0.5 + 48) / 2)


def test_behind_a_proxy_with_tls(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "daemon.toml", f"sqlite:///{tmp_path / 'store.db'}",
        '\n[web]\nbase_url = "https://training.example.org/tmc/"\n'
        'trusted_user_header = "X-Remote-User"\ntrusted_proxies = ["127.0.0.1"]\n',
    )
    tm = Cli(config)
    tm.ok("db", "upgrade")
    add_users(tm)
    web = WebServer(config, tmp_path / "web.log")
    try:
        client = httpx.Client(base_url=web.url)
        page = client.get("/sessions", headers={"X-Remote-User": "watcher"})
        assert page.status_code == 200 and "watcher" in page.text
        # Links carry base_url's path; the cookie is Secure, for that path only.
        assert 'href="/tmc/reports"' in page.text
        login = client.get("/login")
        cookie = login.headers["set-cookie"]
        assert "secure" in cookie.lower() and "path=/tmc" in cookie
        assert "max-age=31536000" in login.headers["strict-transport-security"]
        unknown = client.get("/sessions", headers={"X-Remote-User": "ghost"},
                             follow_redirects=False)
        assert unknown.status_code == 303
    finally:
        web.stop()
    # The same header from an address that is not a trusted proxy is ignored.
    text = config.read_text().replace('["127.0.0.1"]', '["192.0.2.10"]')
    config.write_text(text)
    web = WebServer(config, tmp_path / "web2.log")
    try:
        refused = httpx.get(web.url + "/api/me", headers={"X-Remote-User": "boss"})
        assert refused.status_code == 401
    finally:
        web.stop()


def test_web_refuses_an_old_store_and_a_busy_port(tmp_path: Path) -> None:
    config = write_config(tmp_path / "daemon.toml", f"sqlite:///{tmp_path / 'store.db'}")
    tm = Cli(config)
    old = tm("web", "--listen", "127.0.0.1:1")
    assert old.exit_code == 2 and "tmcaldav db upgrade" in old.stderr
    tm.ok("db", "upgrade")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = tm("web", "--listen", f"127.0.0.1:{port}")
    assert busy.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    bad = tm("web", "--listen", "localhost")
    assert bad.exit_code == 2 and "host:port" in bad.stderr


def test_roles_are_checked_by_the_store(store: Store) -> None:
    from tmcaldav.store import StoreError

    with pytest.raises(StoreError), store.transaction() as db:
        db.add(WebUser(name="x", role="root", password_hash="scrypt$"))


def test_the_sessions_overview_reads_one_page(store: Store) -> None:
    from tmcaldav.web.reads import sessions_overview

    base = utcnow().replace(microsecond=0)
    for n in range(5):
        seed(store, f"UP-{n}", enrolled=["ann@example.org"], start=base + timedelta(days=n + 1))
    seed(store, "DONE-1", enrolled=["bob@example.org", "cy@example.org"],
         start=base - timedelta(days=3))
    answer(store, "UP-0", "ann@example.org", "accepted")
    with store.scratch() as db:
        first = sessions_overview(db, per_page=2)
        second = sessions_overview(db, per_page=2, page=2)
        past = sessions_overview(db, past=True)
    assert [r["key"] for r in first.rows] == ["UP-0", "UP-1"] and first.has_more
    assert [r["key"] for r in second.rows] == ["UP-4"] and not second.has_more
    assert (first.upcoming_count, first.past_count) == (5, 1)
    row = first.rows[0]
    assert row["calendar"]["accepted"] == 1 and row["seats_taken"] == 1
    assert [r["key"] for r in past.rows] == ["DONE-1"]
    assert past.rows[0]["calendar"]["invited"] == 2
