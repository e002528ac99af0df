"""Pytest fixtures that run a real Radicale CalDAV server for tmcaldav and its plugins.

Registered as the ``tmcaldav`` pytest11 plugin, so this module must import cheaply:
caldav is imported inside the fixtures that need it, and Radicale only ever runs in a
child process.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from caldav.davclient import DAVClient

__all__ = [
    "DEFAULT_USERS",
    "FaultProxy",
    "RadicaleServer",
    "imap_server",
    "make_client",
    "organizer_password",
    "radicale_faults",
    "radicale_server",
    "radicale_url",
    "smtp_sink",
    "start_radicale",
    "student_client",
    "tls_files",
]

#: The first user owns the calendars (the training office); every other user plays
#: the part of a student's scheduling server and may edit the organizer's events.
DEFAULT_USERS: Mapping[str, str] = {"organizer": "pw-organizer", "student": "pw-student"}

_HOST = "127.0.0.1"
_READY_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
# A port we picked ourselves can be taken by someone else between our probe and
# Radicale's bind (parallel test workers do exactly that): try a fresh one.
_PORT_ATTEMPTS = 5


class RadicaleServer:
    """One Radicale process serving a temporary storage folder on 127.0.0.1.

    The server is identified by a random authentication realm: readiness means an
    unauthenticated request is challenged with *that* realm, so a different server that
    happens to listen on the port is never mistaken for ours.

    Configuration: htpasswd (plain), no auth delay, ``strict_preconditions`` (a PUT over
    an existing item needs If-Match), no hooks, no web UI. Rights come from a rights file:
    each user owns ``/<user>/``, and every other user may read and write events in the
    first user's (the organizer's) calendars, as a scheduling server would.
    """

    def __init__(
        self,
        base_dir: Path,
        users: Mapping[str, str],
        port: int = 0,
        server_options: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare (but do not start) a server whose files all live in ``base_dir``."""
        if not users:
            raise ValueError("Radicale needs at least one user (the organizer)")
        for name, password in users.items():
            if not name or ":" in name or "\n" in name or "\n" in password:
                raise ValueError(f"user name {name!r} or its password cannot go in htpasswd")
        self.base_dir = base_dir
        self.users: dict[str, str] = dict(users)
        # Extra [server] settings, e.g. {"max_resource_size": "20000"}.
        self.server_options = dict(server_options or {})
        self.port = port
        self.storage_dir = base_dir / "collections"
        self.config_path = base_dir / "radicale.conf"
        self.log_path = base_dir / "radicale.log"
        self._realm = f"tmcaldav-test-{secrets.token_hex(8)}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def organizer(self) -> str:
        """The user who owns the calendars under test (the first user given)."""
        return next(iter(self.users))

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:40123/``."""
        if not self.port:
            raise RuntimeError("the Radicale server has not been started yet")
        return f"http://{_HOST}:{self.port}/"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None when it is stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while our Radicale process is alive."""
        return self._process is not None and self._process.poll() is None

    def principal_url(self, user: str) -> str:
        """URL of ``user``'s principal collection (Radicale keeps it at ``/<user>/``)."""
        return f"{self.url}{user}/"

    def start(self) -> None:
        """Start the server, or restart it on the same storage folder and port."""
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        self._write_users_and_rights()
        if self.port:
            # A fixed port (given by the caller, or kept for a restart) is tried once:
            # if someone else holds it, trying again will not help.
            self._start_with_retries(lambda: self.port, attempts=1)
        else:
            self._start_with_retries(_free_port, attempts=_PORT_ATTEMPTS)

    def stop(self) -> None:
        """Stop the server by its process id: terminate, wait, kill if it lingers."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> RadicaleServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_text(self) -> str:
        """What Radicale wrote to stderr/stdout so far (for failure messages)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- internals ---------------------------------------------------------------------

    def _write_users_and_rights(self) -> None:
        users_path = self.base_dir / "users"
        users_path.write_text(
            "".join(f"{name}:{password}\n" for name, password in self.users.items()),
            encoding="utf-8",
        )
        users_path.chmod(0o600)
        # Why a rights file and not `owner_only` or `authenticated`: owner_only would
        # stop the other users from answering in the organizer's copy (which is how the
        # tests play a scheduling server), and `authenticated` would let anyone rewrite
        # anything. Here every user owns their own tree; the other users may read and
        # write items in the organizer's calendars but not delete or overwrite those
        # calendars (`d`, `o`). Radicale ties item writes to `w` on the calendar path, so
        # they could still create a new calendar next to the organizer's: harmless here.
        organizer = self.organizer
        rules = f"""\
[root]
user: .+
collection:
permissions: R

[own-principal]
user: .+
collection: {{user}}
permissions: RW

[own-calendars]
user: .+
collection: {{user}}/[^/]+
permissions: rw

[organizer-principal-for-others]
user: .+
collection: {organizer}
permissions: R

[organizer-calendars-for-others]
user: .+
collection: {organizer}/[^/]+
permissions: rwdo
"""
        (self.base_dir / "rights").write_text(rules, encoding="utf-8")

    def _write_config(self) -> None:
        config = f"""\
[server]
hosts = {_HOST}:{self.port}
max_connections = 20
{"".join(f"{k} = {v}{chr(10)}" for k, v in self.server_options.items())}
[auth]
type = htpasswd
htpasswd_filename = {self.base_dir / "users"}
htpasswd_encryption = plain
delay = 0
realm = {self._realm}

[rights]
type = from_file
file = {self.base_dir / "rights"}

[storage]
filesystem_folder = {self.storage_dir}
strict_preconditions = true

[web]
type = none

[hook]
type = none

[logging]
level = warning
"""
        self.config_path.write_text(config, encoding="utf-8")

    def _start_with_retries(self, pick_port: Callable[[], int], attempts: int) -> None:
        failure = ""
        for _attempt in range(attempts):
            self.port = pick_port()
            self._write_config()
            self._spawn()
            failure = self._wait_until_ready()
            if not failure:
                return
            self.stop()
            if not _looks_like_port_clash(failure):
                break
            time.sleep(0.2)
        raise RuntimeError(f"Radicale did not start on {_HOST}:{self.port}; its output:\n{failure}")

    def _spawn(self) -> None:
        # Output goes to a file rather than a pipe: nobody drains a pipe while tests run,
        # and a full pipe would block the server mid-request.
        self._log_file = self.log_path.open("ab")
        env = {key: value for key, value in os.environ.items() if key != "RADICALE_CONFIG"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            env=env,
        )

    def _wait_until_ready(self) -> str:
        """Return "" once our server answers, else the reason it will not."""
        assert self._process is not None
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return self.log_text()[log_offset:] or (
                    f"process exited with status {self._process.returncode}"
                )
            if self._answers_with_our_realm():
                return ""
            time.sleep(0.02)
        return f"not ready after {_READY_TIMEOUT:.0f} s\n{self.log_text()[log_offset:]}"

    def _answers_with_our_realm(self) -> bool:
        # A short timeout: a squatter that accepts but never answers must not hold up
        # the loop that notices our own process has died.
        connection = http.client.HTTPConnection(_HOST, self.port, timeout=0.5)
        try:
            connection.request("PROPFIND", "/", headers={"Depth": "0"})
            response = connection.getresponse()
            response.read()
        except OSError:
            return False
        finally:
            connection.close()
        challenge = response.getheader("WWW-Authenticate") or ""
        return response.status == 401 and f'realm="{self._realm}"' in challenge


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _looks_like_port_clash(output: str) -> bool:
    lowered = output.lower()
    return "address already in use" in lowered or "no servers started" in lowered


def start_radicale(
    tmp_dir: Path | str,
    users: Mapping[str, str] = DEFAULT_USERS,
    port: int = 0,
    server_options: Mapping[str, str] | None = None,
) -> RadicaleServer:
    """Start Radicale on 127.0.0.1 with its config and storage under ``tmp_dir``.

    ``users`` maps user names to plain-text passwords; the first one is the organizer.
    ``port`` 0 picks a free port (retrying if another process takes it first).
    ``server_options`` adds settings to Radicale's ``[server]`` section. The caller
    stops the server with ``stop()`` (or uses it as a context manager).
    """
    server = RadicaleServer(Path(tmp_dir), users, port, server_options)
    server.start()
    return server


def make_client(server: RadicaleServer, user: str) -> DAVClient:
    """A caldav client for ``user`` that reads no config file, netrc or proxy variables."""
    from caldav.davclient import DAVClient

    client = DAVClient(
        url=server.url,
        username=user,
        password=server.users[user],
        # Without an explicit auth type Radicale answers each new client's first request
        # with a delayed 401 (DESIGN §8).
        auth_type="basic",
        enable_rfc6764=False,
        timeout=30,
    )
    # Proxy variables or a ~/.netrc on a developer machine must not leak into tests.
    client.session.trust_env = False
    return client


@dataclass
class _Fault:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stall: float = 0.0
    methods: frozenset[str] = frozenset()
    when: Callable[[str, str, bytes], bool] | None = None

    def applies_to(self, method: str, path: str, body: bytes) -> bool:
        if self.methods and method not in self.methods:
            return False
        return self.when is None or self.when(method, path, body)


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of a real server that can misbehave on cue.

    Requests pass through to ``upstream`` unchanged until a fault is queued; each queued
    fault answers (or stalls) one request instead of the server. This is how tests see
    503 with Retry-After, 500, malformed XML or a timeout without mocking the client.
    """

    def __init__(self, upstream: str) -> None:
        """Prepare a proxy for ``upstream`` (``http://host:port/``); call ``start()``."""
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"FaultProxy forwards to plain http only, not {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: Requests that reached the proxy (method, path), faulted or not.
        self.seen: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        """The proxy's root URL; use it wherever the server's URL would go."""
        if self._server is None:
            raise RuntimeError("the proxy has not been started")
        return f"http://{_HOST}:{self._server.server_address[1]}/"

    def fail_next(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        count: int = 1,
        methods: tuple[str, ...] = (),
        when: Callable[[str, str, bytes], bool] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` instead of the server.

        Only requests using one of ``methods`` (if given) and for which
        ``when(method, path, body)`` is true (if given) are answered this way.
        """
        fault = _Fault(status, dict(headers or {}), body, 0.0, frozenset(methods), when)
        with self._lock:
            self._faults.extend([fault] * count)

    def garble_next(self, *, count: int = 1, methods: tuple[str, ...] = ()) -> None:
        """Answer the next requests with a 207 whose XML body is broken."""
        self.fail_next(
            207,
            {"Content-Type": "text/xml; charset=utf-8"},
            b'<?xml version="1.0"?><multistatus xmlns="DAV:"><response><href>',
            count=count,
            methods=methods,
        )

    def stall_next(self, seconds: float, *, count: int = 1) -> None:
        """Hold the next requests for ``seconds`` before passing them on."""
        with self._lock:
            self._faults.extend([_Fault(stall=seconds)] * count)

    def start(self) -> None:
        """Listen on a free port (the kernel picks it, so there is no race)."""
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path))
                fault = proxy._take_fault(self.command, self.path, body)
                if fault is not None and fault.stall:
                    proxy._closing.wait(fault.stall)
                elif fault is not None:
                    self._reply(fault.status, fault.headers, fault.body)
                    return
                status, headers, answer = proxy._forward(
                    self.command, self.path, dict(self.headers.items()), body
                )
                self._reply(status, headers, answer)

            def _reply(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _handle
            do_PROPFIND = do_PROPPATCH = do_REPORT = do_MKCALENDAR = do_MKCOL = _handle
            do_POST = do_MOVE = _handle

        self._server = http.server.ThreadingHTTPServer((_HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # A short poll keeps stop() quick: shutdown waits for the next poll.
            kwargs={"poll_interval": 0.05},
            name="tmcaldav-fault-proxy",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and release stalled requests."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=_STOP_TIMEOUT)
            self._thread = None

    def _take_fault(self, method: str, path: str, body: bytes) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(method, path, body):
                    self._faults.remove(fault)
                    return fault
        return None

    def _forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            forwarded = {
                name: value for name, value in headers.items() if name.lower() not in _HOP_BY_HOP
            }
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except OSError as exc:
            return 502, {"Content-Type": "text/plain"}, f"upstream failed: {exc}".encode()
        finally:
            connection.close()


_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


@pytest.fixture
def radicale_server(tmp_path: Path) -> Iterator[RadicaleServer]:
    """A fresh Radicale with the users ``organizer`` and ``student``, stopped afterwards."""
    server = start_radicale(tmp_path / "radicale")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def radicale_url(radicale_server: RadicaleServer) -> str:
    """Root URL of the test Radicale (the organizer's principal is ``<url>organizer/``)."""
    return radicale_server.url


@pytest.fixture
def organizer_password(radicale_server: RadicaleServer) -> str:
    """Password of the organizer, the user tmcaldav logs in as."""
    return radicale_server.users[radicale_server.organizer]


@pytest.fixture
def radicale_faults(radicale_server: RadicaleServer) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of ``radicale_server``: connect to its ``url``."""
    proxy = FaultProxy(radicale_server.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def student_client(radicale_server: RadicaleServer) -> Iterator[DAVClient]:
    """A caldav client logged in as the second user, to play a scheduling server.

    It may read and write events in the organizer's calendars (see the rights file).
    """
    others = [user for user in radicale_server.users if user != radicale_server.organizer]
    if not others:
        raise RuntimeError("student_client needs a second user on the Radicale server")
    client = make_client(radicale_server, others[0])
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


# ---- mail (iMIP): an SMTP sink and an IMAP server; see tmcaldav.testing_mail ------------


@pytest.fixture
def tls_files(tmp_path: Path) -> object:
    """A private CA and a certificate for 127.0.0.1 (needs the `trustme` test extra)."""
    pytest.importorskip("trustme", reason="the TLS mail tests need trustme (test extra)")
    from tmcaldav.testing_mail import make_tls_files

    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def smtp_sink() -> Iterator[object]:
    """An aiosmtpd SMTP server on 127.0.0.1 (no TLS, no auth) that keeps every message."""
    from tmcaldav.testing_mail import SmtpSink

    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def imap_server(tls_files: object) -> Iterator[object]:
    """Dovecot on 127.0.0.1 with the user ``training@example.org`` (password
    ``pw-imap``); skipped, saying why, where Dovecot is not installed."""
    from tmcaldav.testing_mail import DovecotServer, ImapUnavailable, TlsFiles

    assert isinstance(tls_files, TlsFiles)
    server = DovecotServer({"training@example.org": "pw-imap"}, tls=tls_files)
    try:
        server.start()
    except ImapUnavailable as e:
        pytest.skip(f"IMAP tests need Dovecot: {e}")
    try:
        yield server
    finally:
        server.stop()
