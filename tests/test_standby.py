"""More than one machine: an active daemon and a standby on one real PostgreSQL store,
each a separate process, against a real Radicale — takeover after kill -9, the fence
after a pause, `doctor`, and the refusal on SQLite."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import Cli
from tests.postgres import PostgresServer
from tests.scenario import StudentSide, cli_for
from tests.test_daemon import RECORDER, DaemonProcess, calendars, history, invite_students
from tmcaldav.app import App, open_store
from tmcaldav.localhost import wait_for
from tmcaldav.store import Store
from tmcaldav.testing import FaultProxy, RadicaleServer

POLL = 0.3
# Short for a test, yet long enough that a busy machine does not starve a heartbeat.
TAKEOVER = 1.5
# What a daemon says when it stands by, takes over, and when it is fenced.
STANDING_BY = "standing by: this daemon takes over"
NOW_ACTIVE = "this daemon is now the active one"
FENCED = "this daemon lost the store lock"

_databases = iter(range(10**6))


@pytest.fixture
def student(radicale_server: RadicaleServer) -> StudentSide:
    return StudentSide(radicale_server)


@pytest.fixture
def hook_log(tmp_path: Path) -> Path:
    return tmp_path / "hooks.log"


@pytest.fixture
def pg_scenario(
    tmp_path: Path, radicale_server: RadicaleServer, postgres_server: PostgresServer
) -> Cli:
    """TM-1 with three invited students, on a PostgreSQL store; the daemons poll every
    0.3 s, take over after 1 s of silence, and record every hook they fire."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "recorder.py").write_text(RECORDER)
    url = postgres_server.create_database(f"standby_{next(_databases)}")
    tm = cli_for(
        tmp_path,
        radicale_server,
        url,
        extra=f"\n[daemon]\npoll_interval = {POLL}\nbackoff_max = 1.5\n"
        f"takeover_after = {TAKEOVER}\n\n"
        f'[plugins]\nenable = ["recorder"]\nplugin_dirs = ["{plugins}"]\n',
    )
    return invite_students(tm)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.process.poll() is None:
            d.process.send_signal(signal.SIGCONT)  # a stopped process cannot die
        d.kill()


def start(
    tm: Cli, log: Path, hook_log: Path, daemons: list[DaemonProcess], *args: str
) -> DaemonProcess:
    daemon = DaemonProcess(tm.config, log, {"TM_HOOK_LOG": str(hook_log)}, args)
    daemons.append(daemon)
    return daemon


def active_and_standby(
    tm: Cli, tmp_path: Path, hook_log: Path, daemons: list[DaemonProcess]
) -> tuple[DaemonProcess, DaemonProcess]:
    """An active daemon that has ticked (log a.log), then a standby (b.log) standing by."""
    active = start(tm, tmp_path / "a.log", hook_log, daemons)
    active.wait_log("tick:")
    standby = start(tm, tmp_path / "b.log", hook_log, daemons, "--standby")
    standby.wait_log(STANDING_BY)
    return active, standby


def href(tm: Cli) -> str:
    from tmcaldav.store import get_session

    app = App(str(tm.config))
    with app.store.scratch() as db:
        value = get_session(db, "TM-1").href
    app.store.close()
    assert value
    return value


def fired(hook_log: Path) -> list[list[str]]:
    if not hook_log.exists():
        return []
    return sorted(line.split()[1:] for line in hook_log.read_text().splitlines())


def store_of(tm: Cli) -> Store:
    return open_store(App(str(tm.config)).config.store.url)


def test_kill_9_of_the_active_while_answers_arrive_standby_takes_over(
    pg_scenario: Cli,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    student: StudentSide,
    hook_log: Path,
    radicale_server: RadicaleServer,
    radicale_faults: FaultProxy,
) -> None:
    tm = pg_scenario
    event = href(tm)
    # The daemons talk to the server through a proxy that can hold a request.
    tm.config.write_text(tm.config.read_text().replace(radicale_server.url, radicale_faults.url))
    active, standby = active_and_standby(tm, tmp_path, hook_log, daemons)
    student.answer(event, {"ann@example.org": "ACCEPTED"})
    wait_for(lambda: calendars(tm)["ann@example.org"] == "accepted", what="ann's answer")
    # Bob answers, and the active daemon dies in the middle of the poll that reads it.
    student.answer(event, {"bob@example.org": "DECLINED"})
    reports = sum(1 for method, _ in radicale_faults.seen if method == "REPORT")
    radicale_faults.stall_next(3)
    wait_for(
        lambda: sum(1 for method, _ in radicale_faults.seen if method == "REPORT") > reports,
        what="the active daemon's next REPORT",
    )
    active.process.send_signal(signal.SIGKILL)
    active.wait()
    student.answer(event, {"cy@example.org": "TENTATIVE"})
    standby.wait_log(NOW_ACTIVE)
    # It took over because PostgreSQL released the lock when the process died, at once:
    # not after waiting out takeover_after of silence (bench/failover.py times it).
    assert "has been silent" not in standby.text()
    wait_for(lambda: calendars(tm)["cy@example.org"] == "tentative", what="cy's answer")
    wait_for(lambda: len(fired(hook_log)) >= 3, what="three hooks")
    # A few more ticks of the new active daemon: nothing may be recorded or fire twice.
    standby.wait_log("tick:", count=standby.text().count("tick:") + 3)
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0
    for email, answer in (
        ("ann@example.org", "accepted"),
        ("bob@example.org", "declined"),
        ("cy@example.org", "tentative"),
    ):
        assert [h["calendar"] for h in history(tm, email)] == [answer], email
    assert fired(hook_log) == [
        ["ann@example.org", "accepted"],
        ["bob@example.org", "declined"],
        ["cy@example.org", "tentative"],
    ]


def written(store: Store) -> str:
    """Every row version of every table: its place (ctid), the transaction that wrote it
    (xmin) and its content. Any write — even an UPDATE to the same values — changes it."""
    with store.engine.connect() as connection:
        tables = list(
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            ).scalars()
        )
        content = {
            table: [
                list(row)
                for row in connection.execute(
                    text(f'SELECT ctid::text, xmin::text, t::text FROM "{table}" t ORDER BY 1')
                )
            ]
            for table in tables
        }
    return json.dumps(content, sort_keys=True)


def test_a_paused_active_is_fenced_and_writes_nothing_after_it_wakes(
    pg_scenario: Cli,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    student: StudentSide,
    hook_log: Path,
) -> None:
    tm = pg_scenario
    event = href(tm)
    active, standby = active_and_standby(tm, tmp_path, hook_log, daemons)
    student.answer(event, {"ann@example.org": "ACCEPTED"})
    wait_for(lambda: calendars(tm)["ann@example.org"] == "accepted", what="ann's answer")
    # A frozen machine, a long pause: its connections stay open, PostgreSQL cannot tell.
    active.signal(signal.SIGSTOP)
    student.answer(event, {"bob@example.org": "DECLINED"})
    standby.wait_log(NOW_ACTIVE)
    assert "has been silent for" in standby.text()
    wait_for(lambda: calendars(tm)["bob@example.org"] == "declined", what="bob's answer")
    wait_for(lambda: len(fired(hook_log)) >= 2, what="bob's hook")
    # Stop the new active daemon too, so that any write from now on is the old one's.
    standby.signal(signal.SIGSTOP)
    store = store_of(tm)
    before = written(store)
    hooks_before = fired(hook_log)
    student.answer(event, {"cy@example.org": "TENTATIVE"})
    active.signal(signal.SIGCONT)
    assert active.wait() == 3
    assert FENCED in active.text(), active.text()
    assert "writes nothing more" in active.text() or "without writing" in active.text()
    after = written(store)
    assert after == before
    assert fired(hook_log) == hooks_before
    # The new active daemon goes on, and records what arrived meanwhile, once.
    standby.signal(signal.SIGCONT)
    wait_for(lambda: calendars(tm)["cy@example.org"] == "tentative", what="cy's answer")
    standby.wait_log("tick:", count=standby.text().count("tick:") + 3)
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0
    store.close()
    for email in ("ann@example.org", "bob@example.org", "cy@example.org"):
        assert len(history(tm, email)) == 1, email
    assert fired(hook_log) == [
        ["ann@example.org", "accepted"],
        ["bob@example.org", "declined"],
        ["cy@example.org", "tentative"],
    ]


def test_doctor_shows_the_active_daemon_and_the_standby(
    pg_scenario: Cli, tmp_path: Path, daemons: list[DaemonProcess], hook_log: Path
) -> None:
    tm = pg_scenario
    assert "warn daemon: no daemon is active" in tm.ok("doctor").output
    active = start(tm, tmp_path / "a.log", hook_log, daemons)
    active.wait_log("tick:")
    # Under systemd the standby is ready (READY=1) as a standby, and says so (STATUS=).
    address = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(address)
    notify.settimeout(20)
    standby = DaemonProcess(
        tm.config,
        tmp_path / "b.log",
        {"TM_HOOK_LOG": str(hook_log), "NOTIFY_SOCKET": address},
        ("--standby",),
    )
    daemons.append(standby)
    ready = notify.recv(4096).decode().split("\n")
    assert ready[0] == "READY=1" and ready[1].startswith("STATUS=standby: "), ready
    host = socket.gethostname()

    def active_named() -> str | None:
        for line in notify.recv(4096).decode().split("\n"):
            if line.startswith("STATUS=standby: the active daemon is on"):
                return line
        return None

    status = wait_for(active_named, what="the standby's status naming the active daemon")
    assert f"on {host} (pid {active.process.pid}, active since " in status
    notify.close()
    standby.wait_log(STANDING_BY)
    out = tm.ok("doctor").output
    assert f"ok   daemon: active on {host} (pid {active.process.pid}) since " in out, out
    assert f"ok   daemon: standing by on {host} (pid {standby.process.pid}) since " in out, out
    assert "no daemon is active" not in out
    # A plain second `run` on the store still exits 75, naming the holder.
    second = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(tm.config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 75, second.stderr
    # Stopping cleanly removes a daemon's row.
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0
    active.signal(signal.SIGTERM)
    assert active.wait() == 0
    out = tm.ok("doctor").output
    assert "daemon: active on" not in out and "standing by on" not in out
    assert "warn daemon: no daemon is active" in out


def test_standby_is_refused_on_sqlite(tmp_path: Path, radicale_server: RadicaleServer) -> None:
    tm = cli_for(tmp_path, radicale_server, f"sqlite:///{tmp_path / 'store.db'}")
    run = [sys.executable, "-m", "tmcaldav", "-c", str(tm.config), "run"]
    done = subprocess.run([*run, "--standby"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "a standby daemon needs a PostgreSQL store" in done.stderr
    assert "one machine" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*run, "--standby", "--once"], capture_output=True, text=True)
    assert done.returncode == 2 and "do not go together" in done.stderr
    tm.config.write_text(tm.config.read_text() + "\n[daemon]\nstandby = true\n")
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "a standby daemon needs a PostgreSQL store" in done.stderr
    result = tm("check-config")
    assert result.exit_code == 2
    assert "daemon.standby: a standby daemon needs a PostgreSQL store" in result.output


def test_the_lock_connection_tells_postgresql_to_notice_a_dead_peer(
    pg_scenario: Cli,
) -> None:
    from tmcaldav.store.lock import StoreLock

    store = store_of(pg_scenario)
    lock = StoreLock(store)
    lock.dead_peer_after = 12
    lock.acquire()
    try:
        assert lock.connection is not None
        shown = {
            name: lock.connection.execute(text(f"SHOW {name}")).scalar()
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
            )
        }
    finally:
        lock.release()
        store.close()
    # The server's side of the socket: probes after 6 s idle, every 2 s, 3 of them, and
    # unacknowledged data given up after 12 s: a vanished machine is noticed in ~12 s.
    assert shown == {
        "tcp_keepalives_idle": "6",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "12000",
    }


def test_the_fence_refuses_every_transaction_once_the_lock_connection_ends(
    pg_scenario: Cli,
) -> None:
    """In one process: end the lock's connection from outside (as a standby does), and
    the next transaction and the next read raise Fenced, and nothing is written."""
    from tmcaldav.standby import Lease
    from tmcaldav.store import StoreError
    from tmcaldav.store.daemons import Fenced, list_daemons
    from tmcaldav.store.lock import StoreLock
    from tmcaldav.store.model import Note

    store = store_of(pg_scenario)
    lost: list[str] = []
    lock = StoreLock(store)
    lease = Lease(store, lock, 60.0, lost.append)
    lock.acquire()
    lease.activate()
    try:
        with store.transaction() as db:
            db.execute(text("SELECT 1"))
        [me] = list_daemons(store)
        assert me.role == "active"
        outside = store_of(pg_scenario)
        # A store connection (not the lock's) that drops fails its unit of work with a
        # StoreError, not a traceback; the next one reconnects, and the fence lets it
        # through: the lock is still ours.
        with outside.engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": f"tmcaldav-daemon-{lease.record_id}"},
            )
        with pytest.raises(StoreError) as dropped, store.scratch():
            pass
        assert not isinstance(dropped.value, Fenced)
        with store.transaction() as db:
            db.execute(text("SELECT 1"))
        assert not lost
        with outside.engine.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": lease.lock_pid}
            )
        with pytest.raises(Fenced), store.transaction() as db:
            db.add(Note(enrollment_id=1, text="must not be written"))
        assert lost and "lock connection" in lost[0]
        with pytest.raises(Fenced), store.scratch():
            pass
        with outside.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM notes")).scalar() == 0
        outside.close()
    finally:
        lease.close()
        lock.release()
        store.close()


def test_a_standby_that_may_not_end_the_active_ones_connection_says_so_and_waits(
    pg_scenario: Cli,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    postgres_server: PostgresServer,
    hook_log: Path,
) -> None:
    """The standby's database role is not the active daemon's (a superuser's here) and has
    no pg_signal_backend: it cannot end a paused daemon's connection, says what to grant,
    and does not take over; when the active daemon dies, it takes over as usual."""
    tm = pg_scenario
    url = App(str(tm.config)).config.store.url
    role = f"standby_{next(_databases)}"
    owner = store_of(tm)
    with owner.engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
        connection.execute(text(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    owner.close()
    other = Cli(tmp_path / "standby.toml")
    other.config.write_text(
        tm.config.read_text().replace(url, url.replace("://tmcaldav@", f"://{role}@"))
    )
    active = start(tm, tmp_path / "a.log", hook_log, daemons)
    active.wait_log("tick:")
    standby = DaemonProcess(
        other.config, tmp_path / "b.log", {"TM_HOOK_LOG": str(hook_log)}, ("--standby",)
    )
    daemons.append(standby)
    standby.wait_log(STANDING_BY)
    active.signal(signal.SIGSTOP)
    standby.wait_log("cannot end the silent daemon's connection")
    assert "GRANT pg_signal_backend" in standby.text()
    active.signal(signal.SIGCONT)
    ticks = active.text().count("tick:")
    active.wait_log("tick:", count=ticks + 2)
    assert NOW_ACTIVE not in standby.text() and active.process.poll() is None
    active.process.send_signal(signal.SIGKILL)
    active.wait()
    standby.wait_log(NOW_ACTIVE)
    standby.wait_log("tick:", count=standby.text().count("tick:") + 2)
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0


def test_config_keys_standby_and_takeover_after() -> None:
    from tmcaldav.config import ConfigError, parse_config

    base = {
        "store": {"url": "postgresql+psycopg://t@db/t"},
        "scheduling": {"organizer_email": "t@example.org"},
    }
    config = parse_config(base)
    assert config.daemon.standby is False
    assert config.daemon.takeover_seconds == 120.0  # two poll intervals of 60 s
    config = parse_config({**base, "daemon": {"poll_interval": 5, "standby": True}})
    assert config.daemon.standby is True and config.daemon.takeover_seconds == 10.0
    config = parse_config({**base, "daemon": {"takeover_after": 30}})
    assert config.daemon.takeover_seconds == 30.0
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "daemon": {"standby": "yes", "takeover_after": 0}})
    problems = "\n".join(info.value.problems)
    assert "daemon.standby: expected true or false, got 'yes'" in problems
    assert "daemon.takeover_after: must be positive" in problems


def test_the_daemons_table_matches_its_migration(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tmcaldav.store.model import Base

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in differences if "daemons" in repr(d)] == []
