"""Servers on 127.0.0.1 for the demo and the tests: a free port, waiting for a condition,
and small HTTP servers in a thread of this process (the test proxies, the receivers).

Runtime code (the demo) and the test harnesses share these; nothing here imports pytest.
Servers in a child process are :mod:`tmcaldav.process`.
"""

from __future__ import annotations

import ctypes
import http.client
import http.server
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Self, TypeVar

log = logging.getLogger(__name__)

HOST = "127.0.0.1"

#: How long stopping a server may take before we give up on it.
STOP_TIMEOUT = 10.0

#: Headers that belong to one connection, never forwarded by a proxy.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (a server may still race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], T | None], timeout: float = 20.0, what: str = "", step: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    TimeoutError naming `what` when the deadline passes first: a test that waits for
    something to happen fails when it does not, instead of sleeping and hoping.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(step)


def die_with_parent() -> None:
    """In a child process (`preexec_fn`): ask Linux to SIGTERM it when its parent dies,
    so a demo killed with -9 leaves no server behind. Elsewhere it does nothing."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalServer:
    """A server with ``start()`` and ``stop()``: a ``with`` block starts it and stops it."""

    def start(self) -> None:
        """Start serving."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving and release what it holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server whose failed requests go to the log, not to stderr.

    The clients of these servers are killed, time out or refuse certificates on purpose;
    socketserver's default prints a traceback to stderr from the server's thread, which
    lands in whatever command output a test is capturing at that moment.
    """

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("a request from %s failed", client_address, exc_info=True)


class ThreadedHTTPServer(LocalServer):
    """An http.server on 127.0.0.1 serving from a daemon thread of this process.

    The kernel picks the port when the server binds (at construction), so there is no
    race with other tests for it.
    """

    def __init__(self, handler: type[socketserver.BaseRequestHandler], name: str) -> None:
        """Bind (not yet serve) a server whose requests go to `handler`; `name` names the
        thread."""
        self.server: http.server.ThreadingHTTPServer = _QuietHTTPServer((HOST, 0), handler)
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            # A short poll keeps stop() quick: shutdown waits for the next poll.
            kwargs={"poll_interval": 0.05},
            name=name,
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The port the kernel gave the server."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve requests from now on."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if it ever started) and close the listening socket."""
        # shutdown() waits for serve_forever to notice: forever, if it never ran.
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=STOP_TIMEOUT)
        self.server.server_close()


class BodyHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 handler that logs nothing (test output stays quiet) and passes every
    request of every WebDAV method, its body read, to :meth:`answer`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, body: bytes) -> None:
        """Answer the request whose body is `body` (a subclass says how)."""
        raise NotImplementedError

    def _read_and_answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.answer(self.rfile.read(length) if length else b"")

    do_GET = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = do_POST = _read_and_answer
    do_PROPFIND = do_PROPPATCH = do_REPORT = do_MKCALENDAR = do_MKCOL = _read_and_answer
    do_MOVE = do_COPY = _read_and_answer


def forward(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request on `connection` (its hop-by-hop headers dropped), close it and
    return the answer: (status, headers, body); a 502 when the server cannot be reached."""
    sent = {name: value for name, value in headers.items() if name.lower() not in HOP_BY_HOP}
    try:
        connection.request(method, path, body=body or None, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except OSError as exc:
        return 502, {"Content-Type": "text/plain"}, f"upstream failed: {exc}\n".encode()
    finally:
        connection.close()


def send_head(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    headers: Mapping[str, str],
    length: int,
) -> None:
    """Send the status line, the end-to-end `headers` and a Content-Length of `length`."""
    handler.send_response(status)
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(length))
    handler.end_headers()


def reply(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> None:
    """Answer with `status`, the end-to-end `headers` and `body` (none to a HEAD)."""
    send_head(handler, status, headers, len(body))
    if handler.command != "HEAD":
        handler.wfile.write(body)


def relay(
    handler: http.server.BaseHTTPRequestHandler,
    connection: http.client.HTTPConnection,
    body: bytes,
    headers: Mapping[str, str],
) -> None:
    """Send the handler's request to `connection` and reply with what came back."""
    reply(handler, *forward(connection, handler.command, handler.path, headers, body))
