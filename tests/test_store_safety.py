"""The store and the config, hard to misuse: private files whatever the umask, a lost race
for the lock that names the winner, writers that wait for each other, and a config that
refuses clear-text passwords, CA files that are not PEM and logins without a password."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.conftest import Cli, write_config
from tests.scenario import radicale_config
from tests.test_daemon import DaemonProcess
from tmcaldav.app import open_store
from tmcaldav.store import Store
from tmcaldav.store.lock import AlreadyRunning, StoreLock
from tmcaldav.testing import RadicaleServer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- private files --------------------------------------------------------------------------

UNDER_UMASK_000 = textwrap.dedent(
    """
    import os, sys
    os.umask(0)
    from pathlib import Path
    from sqlalchemy import text
    from tmcaldav.imip.transport import MaildirInbox
    from tmcaldav.config import MaildirConfig
    from tmcaldav.app import open_store
    from tmcaldav.store.lock import StoreLock

    url, maildir = sys.argv[1], Path(sys.argv[2])
    open_store(url).upgrade()
    store = open_store(url)
    lock = StoreLock(store, role="daemon")
    lock.acquire()
    with store.transaction() as db:  # the -wal and -shm files exist while it is open
        db.execute(text("INSERT INTO people (email, name, created_at) "
                        "VALUES ('a@example.org', 'A', '2026-01-01')"))
        database = Path(url.removeprefix("sqlite:///"))
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm"), lock.path()]
        for path in files:
            print(path.name, oct(path.stat().st_mode & 0o777))
    (maildir / "new" / "1.host").write_bytes(b"From: a@b.example\\r\\n\\r\\nhi\\r\\n")
    with MaildirInbox(MaildirConfig(str(maildir))) as inbox:
        for message in inbox.messages():
            message.done()
    processed = maildir / ".tmcaldav-processed"
    for path in (processed, processed / "cur"):
        print(path.name, oct(path.stat().st_mode & 0o777))
    """
)


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    done = subprocess.run(
        [sys.executable, "-c", UNDER_UMASK_000, url, str(maildir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    modes = dict(line.split() for line in done.stdout.splitlines())
    assert modes == {
        "store.db": "0o600",
        "store.db-wal": "0o600",
        "store.db-shm": "0o600",
        "store.db.lock": "0o600",
        ".tmcaldav-processed": "0o700",
        "cur": "0o700",
    }


def test_doctor_warns_about_files_others_can_read(tmp_path: Path) -> None:
    store_file = tmp_path / "store.db"
    tm = Cli(write_config(tmp_path / "c.toml", f"sqlite:///{store_file}"))
    tm.ok("db", "upgrade")
    assert mode(store_file) == 0o600
    store_file.chmod(0o644)
    out = tm("doctor").output
    assert f"warn {store_file} can be read by others (-rw-r--r--)" in out
    assert f"run: chmod 600 {store_file}" in out
    store_file.chmod(0o600)
    assert "ok   tmcaldav's files are private" in tm("doctor").output


# ---- the store lock names who holds it ------------------------------------------------------


def test_a_lost_race_names_the_sync_that_won(store_url: str) -> None:
    store = open_store(store_url)
    store.upgrade()
    holder = StoreLock(store, role="sync")
    holder.acquire()
    try:
        loser = StoreLock(open_store(store_url), role="sync")
        with pytest.raises(AlreadyRunning) as caught:
            loser.acquire()
        message = str(caught.value)
        assert f"a `tmcaldav sync` (pid {os.getpid()}) is using this store" in message
        assert "try again when it has finished" in message
        assert "daemon" not in message and caught.value.holder == "sync"
    finally:
        holder.release()
        store.close()


def test_the_loser_waits_for_the_winner_to_write_its_name(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    lock_file = tmp_path / "store.db.lock"
    # The winner has the lock but has not written its name yet (the race in the issue).
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    timer = threading.Timer(0.3, lambda: os.pwrite(fd, b"4242 sync\n", 0))
    timer.start()
    try:
        with pytest.raises(AlreadyRunning) as caught:
            StoreLock(store, role="sync").acquire()
        assert "a `tmcaldav sync` (pid 4242)" in str(caught.value)
    finally:
        timer.join()
        os.close(fd)
        store.close()


def test_sync_beside_a_running_daemon_is_told_it_polls_by_itself(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    config = radicale_config(
        tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}",
        extra="\n[daemon]\npoll_interval = 0.3\n",
    )
    Cli(config).ok("db", "upgrade")
    daemon = DaemonProcess(config, tmp_path / "d.log")
    try:
        daemon.wait_log("tick:")
        result = Cli(config)("sync")
        assert result.exit_code == 75
        assert f"the tmcaldav daemon (pid {daemon.process.pid}) is using this store" in (
            result.output
        )
        assert "it polls by itself" in result.output
    finally:
        daemon.kill()


# ---- writers wait for each other --------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from tmcaldav.app import open_store
    from tmcaldav.store.roster import add_person
    url, who = sys.argv[1], sys.argv[2]
    failures = 0
    for i in range(12):
        store = open_store(url)  # a new process's first connection, as each CLI command opens
        try:
            with store.transaction() as db:
                add_person(db, f"{who}{i}@example.org", who)
                time.sleep(0.02)  # hold the write lock a little, as a real edit does
        except Exception as e:
            failures += 1
            print("FAILED", type(e).__name__, e)
        finally:
            store.close()
    print("failures", failures)
    """
)


def test_sqlite_writers_under_contention_wait_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url).upgrade()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"w{n}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for n in range(5)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert all("failures 0" in out for out in outputs), outputs
    assert "database is locked" not in "".join(outputs)
    store = open_store(url)
    from tmcaldav.store import list_people

    with store.scratch() as db:
        assert len(list_people(db)) == 60
    store.close()


# ---- the config: transport security, CA files, password sources -----------------------------


def caldav_config(tmp_path: Path, caldav: str) -> Path:
    pw = tmp_path / "pw"
    pw.write_text("secret")
    pw.chmod(0o600)
    return write_config(
        tmp_path / "c.toml",
        f"sqlite:///{tmp_path / 's.db'}",
        "[caldav]\n" + caldav.replace("PW", f'password_file = "{pw}"'),
    )


def test_plain_http_to_another_host_is_refused(tmp_path: Path) -> None:
    config = caldav_config(tmp_path, 'url = "http://dav.example.org/"\nusername = "u"\nPW\n')
    result = Cli(config)("check-config")
    assert result.exit_code == 2
    assert "caldav.url: plain http:// to dav.example.org would send the password in clear" in (
        result.output
    )
    assert "allow_insecure_http = true" in result.output
    for loopback in ("127.0.0.1", "localhost", "[::1]", "127.0.1.1"):
        local = caldav_config(
            tmp_path, f'url = "http://{loopback}:5232/"\nusername = "u"\nPW\n'
        )
        Cli(local).ok("check-config")
    allowed = caldav_config(
        tmp_path,
        'url = "http://dav.example.org/"\nusername = "u"\nPW\nallow_insecure_http = true\n',
    )
    result = Cli(allowed).ok("check-config")
    assert "crosses the network in clear text" in result.output


def test_allow_insecure_http_is_warned_about_at_every_start(
    tmp_path: Path, radicale_server: RadicaleServer
) -> None:
    config = radicale_config(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    config.write_text(
        config.read_text().replace("timeout = 10", "timeout = 10\nallow_insecure_http = true")
    )
    # The loopback server is not insecure: no warning for it.
    tm = Cli(config)
    tm.ok("db", "upgrade")
    once = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(config), "run", "--once"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "clear text" not in once.stderr
    config.write_text(config.read_text().replace(radicale_server.url, "http://localhost.invalid/"))
    once = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(config), "run", "--once"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "allow_insecure_http = true: the password for http://localhost.invalid/" in once.stderr


def test_a_ca_file_that_is_not_pem_fails_check_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"\x30\x82\x01\x0a not a PEM certificate")
    config = caldav_config(
        tmp_path,
        f'url = "https://dav.example.org/"\nusername = "u"\nPW\ntls_ca_file = "{ca}"\n',
    )
    result = Cli(config)("check-config")
    assert result.exit_code == 2
    assert f"caldav.tls_ca_file: {ca} holds no PEM certificate" in result.output


def test_a_login_without_a_password_source_fails_check_config(tmp_path: Path) -> None:
    config = caldav_config(tmp_path, 'url = "https://dav.example.org/"\nusername = "u"\n')
    result = Cli(config)("check-config")
    assert result.exit_code == 2
    assert "caldav: set one of password_file, password_command, password_env" in result.output


def test_the_models_and_the_migrations_agree(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tmcaldav.store.model import Base

    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
