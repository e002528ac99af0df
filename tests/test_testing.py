"""The reusable Radicale fixtures: a real server that serves, restarts and isolates."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest
from caldav.collection import Calendar
from caldav.davclient import DAVClient
from caldav.lib.error import DAVError

from tmcaldav.localhost import BodyHandler, ThreadedHTTPServer
from tmcaldav.process import ServerProcess, start_with_retries
from tmcaldav.testing import FaultProxy, RadicaleServer, make_client, start_radicale

EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tmcaldav//tests//EN\r\n"
    "BEGIN:VEVENT\r\nUID:smoke-1\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART:20261201T090000Z\r\nDTEND:20261201T100000Z\r\nSUMMARY:Smoke\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _make_calendar(server: RadicaleServer) -> Calendar:
    client = make_client(server, server.organizer)
    return client.principal().make_calendar(name="trainings", cal_id="trainings")


def _uids(calendar: Calendar) -> list[str | None]:
    events = calendar.get_events()
    assert isinstance(events, list)  # a sync client returns no coroutine
    return [event.id for event in events]


def test_fixture_serves_a_calendar(radicale_server: RadicaleServer, radicale_url: str) -> None:
    assert radicale_url == radicale_server.url
    assert radicale_url.startswith("http://127.0.0.1:")
    assert radicale_server.running and radicale_server.pid
    calendar = _make_calendar(radicale_server)
    calendar.add_event(EVENT, increase_seqno=False)

    assert _uids(calendar) == ["smoke-1"]


def test_restart_on_the_same_storage_keeps_data(radicale_server: RadicaleServer) -> None:
    _make_calendar(radicale_server).add_event(EVENT, increase_seqno=False)
    port, first_pid = radicale_server.port, radicale_server.pid

    radicale_server.stop()
    assert not radicale_server.running and radicale_server.pid is None
    radicale_server.start()

    assert radicale_server.port == port
    assert radicale_server.pid != first_pid
    client = make_client(radicale_server, radicale_server.organizer)
    calendar = client.calendar(url=f"{radicale_server.url}organizer/trainings/")
    assert _uids(calendar) == ["smoke-1"]


def test_student_may_edit_items_but_not_delete_the_organizers_calendar(
    radicale_server: RadicaleServer, student_client: DAVClient
) -> None:
    _make_calendar(radicale_server).add_event(EVENT, increase_seqno=False)
    calendar = student_client.calendar(url=f"{radicale_server.url}organizer/trainings/")
    (event,) = calendar.get_events()
    event.icalendar_component["SUMMARY"] = "Edited by the student"
    event.save(increase_seqno=False)

    with pytest.raises(DAVError):
        calendar.delete()
    assert [str(e.icalendar_component["SUMMARY"]) for e in calendar.get_events()] == [
        "Edited by the student"
    ]


def test_organizer_password_fixture(organizer_password: str) -> None:
    assert organizer_password == "pw-organizer"


def test_a_server_already_on_the_port_is_not_adopted(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match="did not start"):
            start_radicale(tmp_path, port=port)


def test_custom_users_and_context_manager(tmp_path: Path) -> None:
    users = {"office": "secret-1", "ann": "secret-2"}
    with start_radicale(tmp_path, users=users) as server:
        assert server.organizer == "office"
        calendar = make_client(server, "office").principal().make_calendar(cal_id="c")
        assert str(calendar.url).endswith("/office/c/")
    assert not server.running


def test_fault_proxy_passes_through_and_injects(radicale_faults: FaultProxy) -> None:
    import niquests

    radicale_faults.fail_next(503, {"Retry-After": "3"})
    first = niquests.request("PROPFIND", radicale_faults.url, timeout=5)
    second = niquests.request("PROPFIND", radicale_faults.url, timeout=5)

    assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
    assert second.status_code == 401  # Radicale itself, asking for a login
    assert [method for method, _ in radicale_faults.seen] == ["PROPFIND", "PROPFIND"]


# ---- the launcher every server process goes through (tmcaldav.process) ------------------


def _python(tmp_path: Path, code: str) -> ServerProcess:
    process = ServerProcess("the test program", tmp_path / "program.log")
    process.spawn([sys.executable, "-c", code], cwd=tmp_path)
    return process


def test_a_process_that_dies_is_reported_with_its_status_and_output(tmp_path: Path) -> None:
    process = _python(tmp_path, "import sys; print('no config here', flush=True); sys.exit(3)")
    failure = process.wait_until_ready(lambda: False)
    assert "the test program exited with status 3" in failure
    assert "no config here" in failure
    process.stop()
    assert process.pid is None and not process.running


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    process = _python(
        tmp_path,
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n",
    )
    assert process.wait_until_ready(lambda: "ready" in process.log_text()) == ""
    pid = process.pid
    assert pid is not None
    process.stop(timeout=0.5)
    assert not process.running and not Path(f"/proc/{pid}").exists()


def test_a_port_clash_is_tried_again_and_other_failures_are_not() -> None:
    clash_then_up = ["error: [Errno 98] Address already in use", ""]
    cleaned_up: list[str] = []
    failure = start_with_retries(lambda: clash_then_up.pop(0), lambda: cleaned_up.append("!"))
    assert failure == "" and clash_then_up == [] and cleaned_up == ["!"]

    tries: list[str] = []

    def broken() -> str:
        tries.append("!")
        return "unknown option --frobnicate"

    assert start_with_retries(broken, lambda: None) == "unknown option --frobnicate"
    assert tries == ["!"]


def test_a_server_never_started_stops_at_once() -> None:
    """Stopping a bound server that never served (a set-up failed half-way) must not
    wait forever for a serve loop that does not run."""
    server = ThreadedHTTPServer(BodyHandler, "never-started")
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=5)
    assert not stopper.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_a_readiness_check_that_raises_leaves_no_process(tmp_path: Path) -> None:
    sleeper = ServerProcess("sleeper", tmp_path / "sleeper.log")

    def start_once() -> str:
        sleeper.spawn([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)
        raise RuntimeError("the readiness check itself broke")

    with pytest.raises(RuntimeError, match="broke"):
        start_with_retries(start_once, sleeper.stop)
    assert not sleeper.running and sleeper.pid is None
