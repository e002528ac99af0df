"""Server faults against a real Radicale behind the fault-injecting proxy: a reply that
trickles a byte at a time, one unreadable object in a multiget, a certificate for the
wrong name; and the daemon acting on SIGTERM and SIGUSR1 while a request is in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.store_support import session_href
from tests.test_daemon import DaemonProcess
from tmcaldav.app import open_store
from tmcaldav.caldav import Unreachable
from tmcaldav.config import load_config
from tmcaldav.localhost import wait_for
from tmcaldav.publish import Publisher
from tmcaldav.store.model import Response, SyncRetry, utcnow
from tmcaldav.sync import Poller
from tmcaldav.testing import FaultProxy, RadicaleServer

STUDENTS = {"ann@example.org": "Ann", "bob@example.org": "Bob", "cy@example.org": "Cy"}


def through(tm: Cli, server: RadicaleServer, proxy: FaultProxy, **keys: object) -> None:
    """Point the config at the proxy instead of the server (and set [caldav] keys)."""
    text = tm.config.read_text().replace(server.url, proxy.url)
    for key, value in keys.items():
        line = next(x for x in text.splitlines() if x.startswith(f"{key} = "))
        text = text.replace(line, f"{key} = {json.dumps(value)}")
    tm.config.write_text(text)


@pytest.fixture
def tm(tmp_path: Path, radicale_server: RadicaleServer) -> Cli:
    runner = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    add_people(runner, STUDENTS)
    add_session(runner, "TM-1", start="2027-01-04T09:00", end="2027-01-04T12:00")
    runner.ok("enroll", "TM-1", *STUDENTS)
    runner.ok("invite", "TM-1", "--all-enrolled")
    runner.ok("sync")
    return runner


def students(tm: Cli) -> dict[str, dict]:
    page = json.loads(tm.ok("session", "show", "TM-1", "--json").output)
    return {s["email"]: s for s in page["students"]}


class Polling:
    """A poller of the test's config, as the daemon builds it."""

    def __init__(self, tm: Cli):
        config = load_config(tm.config)
        self.store = open_store(config.store.url)
        self.publisher = Publisher(config, self.store)
        from tmcaldav.sync import state_key

        self.poller = Poller(
            self.store, self.publisher.calendar, config.scheduling.organizer_email,
            state_key(config),
        )

    def close(self) -> None:
        self.publisher.calendar.close()
        self.store.close()


@pytest.fixture
def polling(tm: Cli, radicale_server: RadicaleServer, radicale_faults: FaultProxy
            ) -> Iterator[Polling]:
    through(tm, radicale_server, radicale_faults)
    p = Polling(tm)
    yield p
    p.close()


# ---- one unreadable object ----------------------------------------------------------------


@pytest.mark.parametrize("garbage", [False, True], ids=["server-error", "not-icalendar"])
def test_an_unreadable_object_is_read_again_and_its_answer_keeps_its_time(
    garbage: bool,
    tm: Cli,
    polling: Polling,
    radicale_faults: FaultProxy,
    radicale_server: RadicaleServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    href = session_href(tm.config)
    StudentSide(radicale_server).answer(href, {"bob@example.org": "ACCEPTED"})
    radicale_faults.spoil_item(href.rsplit("/", 1)[-1], garbage=garbage)
    seen = utcnow()
    with caplog.at_level("WARNING", logger="tmcaldav"):
        first = polling.poller.poll()
    assert radicale_faults.pending_faults == 0  # the object really was spoiled
    assert first.answers == 0 and first.retrying == [href]
    assert first.missing == []  # an unreadable event is not a deleted one
    # One line names the object; the sync token moved on all the same.
    lines = [r.getMessage() for r in caplog.records if href in r.getMessage()]
    assert len(lines) == 1 and "fetched again on the next polls" in lines[0]
    with polling.store.scratch() as db:
        (retry,) = db.query(SyncRetry).all()
        assert retry.href == href and retry.attempts == 1
    assert students(tm)["bob@example.org"]["calendar"] == "invited"
    assert "unreadable event skipped" in first.summary()

    read = utcnow()
    second = polling.poller.poll()
    assert second.answers == 1 and second.retrying == []
    bob = students(tm)["bob@example.org"]
    assert bob["calendar"] == "accepted"
    # Dated when the first poll saw the change, not when it could be read.
    assert seen.replace(microsecond=0) <= datetime.fromisoformat(bob["responded_at"]) <= read
    history = json.loads(
        tm.ok("session", "history", "TM-1", "bob@example.org", "--json").output
    )
    assert len(history) == 1 and history[0]["responded_at"] == bob["responded_at"]
    with polling.store.scratch() as db:
        (response,) = db.query(Response).all()
        assert seen <= response.responded_at < read <= response.observed_at
    with polling.store.scratch() as db:
        assert db.query(SyncRetry).count() == 0
    assert polling.poller.poll().answers == 0


def test_an_object_that_stays_unreadable_is_counted_and_shown_by_doctor(
    tm: Cli, polling: Polling, radicale_faults: FaultProxy, radicale_server: RadicaleServer
) -> None:
    href = session_href(tm.config)
    StudentSide(radicale_server).answer(href, {"cy@example.org": "DECLINED"})
    radicale_faults.spoil_item(href.rsplit("/", 1)[-1], count=3)
    for _ in range(3):
        assert polling.poller.poll().retrying == [href]
    with polling.store.scratch() as db:
        assert db.query(SyncRetry).one().attempts == 3
    doctor = tm("doctor")
    assert f"warn {href} on the server could not be read in 3 polls" in doctor.output
    assert polling.poller.poll().answers == 1
    assert students(tm)["cy@example.org"]["calendar"] == "declined"


# ---- a reply that trickles ----------------------------------------------------------------


def _in_thread(target: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_a_trickling_reply_is_cut_at_the_timeout(
    tm: Cli, radicale_server: RadicaleServer, radicale_faults: FaultProxy
) -> None:
    through(tm, radicale_server, radicale_faults, timeout=2)
    polling = Polling(tm)
    try:
        # Every read gets a byte within the timeout: only a deadline on the whole
        # request ends this (the answer would take many minutes).
        radicale_faults.trickle_next(0.2, methods=("REPORT",))
        thread, errors = _in_thread(polling.poller.poll)
        thread.join(60)
        assert not thread.is_alive(), "the poll is still reading a trickling answer"
        assert len(errors) == 1 and isinstance(errors[0], Unreachable), errors
        assert "did not answer within 2 s" in str(errors[0])
        assert "the whole answer must arrive in that time" in str(errors[0])
        # The service is usable again at once.
        assert polling.poller.poll().answers == 0
    finally:
        polling.close()


def test_sync_ends_at_the_timeout_when_the_reply_trickles(
    tm: Cli, radicale_server: RadicaleServer, radicale_faults: FaultProxy
) -> None:
    through(tm, radicale_server, radicale_faults, timeout=2)
    radicale_faults.trickle_next(0.2, methods=("REPORT",))
    env = {k: v for k, v in os.environ.items() if k != "TMCALDAV_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(tm.config), "sync"],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "did not answer within 2 s" in done.stderr
    assert "Traceback" not in done.stderr


# ---- the daemon while a request is in flight ----------------------------------------------


def test_sigusr1_and_sigterm_are_acted_on_while_a_request_is_in_flight(
    tm: Cli, tmp_path: Path, radicale_server: RadicaleServer, radicale_faults: FaultProxy
) -> None:
    through(tm, radicale_server, radicale_faults, timeout=120)
    tm.config.write_text(tm.config.read_text() + "\n[daemon]\npoll_interval = 0.3\n")
    daemon = DaemonProcess(tm.config, tmp_path / "d.log")
    try:
        daemon.wait_log("tick:")
        StudentSide(radicale_server).answer(
            session_href(tm.config), {"ann@example.org": "TENTATIVE"}
        )
        reports = sum(1 for method, _ in radicale_faults.seen if method == "REPORT")
        radicale_faults.trickle_next(0.5, methods=("REPORT",))
        wait_for(
            lambda: radicale_faults.pending_faults == 0
            and sum(1 for m, _ in radicale_faults.seen if m == "REPORT") > reports,
            30,
            "the trickled request",
        )
        daemon.signal(signal.SIGUSR1)
        daemon.wait_log("a poll was asked for (SIGUSR1) during a tick", timeout=5)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
        text = daemon.text()
        assert "stopping now: the tick in progress is abandoned" in text
        assert "Traceback" not in text
    finally:
        daemon.kill()
    # Nothing half-done: the next sync records the answer, once.
    tm.config.write_text(tm.config.read_text().replace("timeout = 120", "timeout = 10"))
    tm.ok("sync")
    assert students(tm)["ann@example.org"]["calendar"] == "tentative"
    history = json.loads(tm.ok("session", "history", "TM-1", "ann@example.org", "--json").output)
    assert [h["calendar"] for h in history] == ["tentative"]


# ---- TLS: a certificate for another name ----------------------------------------------------


@pytest.fixture
def tls_front(tmp_path: Path, radicale_server: RadicaleServer) -> Iterator[tuple[FaultProxy, Path]]:
    """Radicale behind an HTTPS front end whose certificate names dav.example.org only."""
    trustme = pytest.importorskip("trustme", reason="the TLS tests need trustme (test extra)")
    ca = trustme.CA()
    cert = ca.issue_cert("dav.example.org")
    folder = tmp_path / "tls"
    folder.mkdir()
    ca_file, chain, key = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key))
    with chain.open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    proxy = FaultProxy(radicale_server.url, tls=(str(chain), str(key)))
    proxy.start()
    try:
        yield proxy, ca_file
    finally:
        proxy.stop()


def test_a_name_mismatch_is_not_blamed_on_the_ca_file(
    tm: Cli, radicale_server: RadicaleServer, tls_front: tuple[FaultProxy, Path]
) -> None:
    proxy, ca_file = tls_front
    through(tm, radicale_server, proxy)
    tm.config.write_text(
        tm.config.read_text().replace("timeout = 10", f'timeout = 10\ntls_ca_file = "{ca_file}"')
    )
    result = tm("sync")
    assert result.exit_code == 1
    assert "is not issued for that name" in result.output
    assert "set [caldav] url to a name the certificate names" in result.output
    assert "tls_ca_file cannot fix a name mismatch" in result.output
    assert "set [caldav] tls_ca_file to" not in result.output
    # Without the CA file the advice is the CA file.
    tm.config.write_text(tm.config.read_text().replace(f'tls_ca_file = "{ca_file}"\n', ""))
    result = tm("sync")
    assert result.exit_code == 1
    assert "signed by a CA this system does not trust" in result.output
    assert "set [caldav] tls_ca_file" in result.output


# ---- SMTP and IMAP servers that trickle ------------------------------------------------------


class Trickler:
    """A TCP server on 127.0.0.1 that answers every connection with a long greeting, one
    byte every 0.2 s: each read gets data in time, so only a deadline ends it."""

    def __init__(self, greeting: bytes):
        import socket

        self.greeting = greeting
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: object) -> None:
        try:
            for i in range(len(self.greeting)):
                if self.stop.wait(0.2):
                    break
                connection.sendall(self.greeting[i : i + 1])  # type: ignore[attr-defined]
        except OSError:
            pass
        finally:
            connection.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("protocol", ["smtp", "imap"])
def test_a_trickling_mail_server_is_cut_at_the_timeout(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tmcaldav.config import ImapConfig, SmtpConfig
    from tmcaldav.imip.transport import ImapInbox, MailError, SmtpSender

    first = b"220-" if protocol == "smtp" else b"* OK "
    server = Trickler(first + b"x" * 2000 + b"\r\n")
    monkeypatch.setenv("TMCALDAV_TEST_PW", "pw")
    try:
        if protocol == "smtp":
            sender = SmtpSender(
                SmtpConfig(host="127.0.0.1", port=server.port, security="none", timeout=2),
                "training@example.org",
            )
            action = sender.check
        else:
            inbox = ImapInbox(
                ImapConfig(
                    host="127.0.0.1", username="u", port=server.port, security="none",
                    timeout=2, password_env="TMCALDAV_TEST_PW",
                )
            )

            def action() -> None:
                with inbox:
                    pass

        thread, errors = _in_thread(action)
        thread.join(60)
        assert not thread.is_alive(), f"the {protocol} client is still reading the greeting"
        assert len(errors) == 1 and isinstance(errors[0], MailError), errors
        assert "no answer within 2 s" in str(errors[0])
    finally:
        server.close()
