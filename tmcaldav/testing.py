"""Pytest fixtures that run a real Radicale CalDAV server for tmcaldav and its plugins.

Registered as the ``tmcaldav`` pytest11 plugin, so this module must import cheaply:
caldav is imported inside the fixtures that need it, and Radicale only ever runs in a
child process.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tmcaldav.localhost import HOST as _HOST
from tmcaldav.localhost import (
    BodyHandler,
    LocalServer,
    ThreadedHTTPServer,
    forward,
    reply,
    send_head,
)
from tmcaldav.radicale import DEFAULT_USERS, RadicaleServer, make_client, start_radicale

if TYPE_CHECKING:
    from caldav.davclient import DAVClient

__all__ = [
    "DEFAULT_USERS",
    "FaultProxy",
    "RadicaleServer",
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

@dataclass
class _Fault:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stall: float = 0.0
    methods: frozenset[str] = frozenset()
    when: Callable[[str, str, bytes], bool] | None = None
    # Pass the request on, then send the answer one byte every `trickle` seconds.
    trickle: float = 0.0
    # Pass the request on, then change the answer before sending it.
    rewrite: Callable[[int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]] | None = (
        None
    )

    def applies_to(self, method: str, path: str, body: bytes) -> bool:
        if self.methods and method not in self.methods:
            return False
        return self.when is None or self.when(method, path, body)


class FaultProxy(LocalServer):
    """A reverse proxy on 127.0.0.1 in front of a real server that can misbehave on cue.

    Requests pass through to ``upstream`` unchanged until a fault is queued; each queued
    fault answers (or stalls) one request instead of the server. This is how tests see
    503 with Retry-After, 500, malformed XML or a timeout without mocking the client.
    """

    def __init__(self, upstream: str, *, tls: tuple[str, str] | None = None) -> None:
        """Prepare a proxy for ``upstream`` (``http://host:port/``); call ``start()``.

        With ``tls`` (certificate chain file, key file) the proxy speaks HTTPS to its
        clients with that certificate: a TLS front end for a plain-HTTP server.
        """
        self._tls = tls
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"FaultProxy forwards to plain http only, not {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._http: ThreadedHTTPServer | None = None
        #: Requests that reached the proxy (method, path), faulted or not.
        self.seen: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        """The proxy's root URL; use it wherever the server's URL would go."""
        if self._http is None:
            raise RuntimeError("the proxy has not been started")
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{_HOST}:{self._http.port}/"

    @property
    def pending_faults(self) -> int:
        """Faults queued and not yet met by a request."""
        with self._lock:
            return len(self._faults)

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

    def trickle_next(
        self,
        seconds_per_byte: float = 1.0,
        *,
        count: int = 1,
        methods: tuple[str, ...] = (),
        when: Callable[[str, str, bytes], bool] | None = None,
    ) -> None:
        """Pass the next requests on, then send each answer's body one byte at a time,
        ``seconds_per_byte`` apart (the headers come at once): every read succeeds,
        so only a deadline on the whole request ends it."""
        fault = _Fault(trickle=seconds_per_byte, methods=frozenset(methods), when=when)
        with self._lock:
            self._faults.extend([fault] * count)

    def spoil_item(self, href_part: str, *, garbage: bool = False, count: int = 1) -> None:
        """In the next calendar-multiget answers, make the object whose href contains
        ``href_part`` unreadable: a 500 status instead of its data, or (``garbage``)
        calendar data that is not iCalendar. The other objects pass unchanged."""

        def is_multiget(method: str, _path: str, body: bytes) -> bool:
            return method == "REPORT" and b"calendar-multiget" in body

        def rewrite(
            status: int, headers: dict[str, str], body: bytes
        ) -> tuple[int, dict[str, str], bytes]:
            return status, headers, _spoil_multistatus(body, href_part, garbage)

        fault = _Fault(methods=frozenset({"REPORT"}), when=is_multiget, rewrite=rewrite)
        with self._lock:
            self._faults.extend([fault] * count)

    def start(self) -> None:
        """Listen on a free port (the kernel picks it, so there is no race)."""
        proxy = self

        class Handler(BodyHandler):
            def answer(self, body: bytes) -> None:
                proxy.seen.append((self.command, self.path))
                fault = proxy._take_fault(self.command, self.path, body)
                if fault is not None and fault.stall:
                    proxy._closing.wait(fault.stall)
                elif fault is not None and not (fault.trickle or fault.rewrite):
                    reply(self, fault.status, fault.headers, fault.body)
                    return
                asked = dict(self.headers.items())
                if fault is not None and fault.rewrite is not None:
                    # The answer is read and changed here: it must not come compressed.
                    asked = {k: v for k, v in asked.items() if k.lower() != "accept-encoding"}
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                status, headers, answer = forward(
                    connection, self.command, self.path, asked, body
                )
                if fault is not None and fault.rewrite is not None:
                    status, headers, answer = fault.rewrite(status, headers, answer)
                if fault is not None and fault.trickle:
                    self._trickle(status, headers, answer, fault.trickle)
                else:
                    reply(self, status, headers, answer)

            def _trickle(
                self, status: int, headers: Mapping[str, str], body: bytes, trickle: float
            ) -> None:
                send_head(self, status, headers, len(body))
                self.wfile.flush()
                try:
                    for offset in range(len(body)):
                        if proxy._closing.wait(trickle):
                            break
                        self.wfile.write(body[offset : offset + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up: what a deadline is for
                self.close_connection = True

        self._http = ThreadedHTTPServer(Handler, "tmcaldav-fault-proxy")
        if self._tls is not None:
            import ssl

            server = self._http.server
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            # The handshake happens in the request's thread, not in the accept loop.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._http.start()

    def stop(self) -> None:
        """Stop listening and release stalled requests."""
        self._closing.set()
        if self._http is not None:
            self._http.stop()
            self._http = None

    def _take_fault(self, method: str, path: str, body: bytes) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(method, path, body):
                    self._faults.remove(fault)
                    return fault
        return None


def _spoil_multistatus(body: bytes, href_part: str, garbage: bool) -> bytes:
    """A multistatus with the data of the response whose href contains `href_part` spoiled."""
    import xml.etree.ElementTree as ET

    dav, caldav = "{DAV:}", "{urn:ietf:params:xml:ns:caldav}"
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body
    for response in root.iter(dav + "response"):
        if href_part not in (response.findtext(dav + "href") or ""):
            continue
        for propstat in response.findall(dav + "propstat"):
            data = propstat.find(f"{dav}prop/{caldav}calendar-data")
            if data is None:
                continue
            if garbage:
                data.text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nATTENDEE;PARTSTAT=ACC"
            else:
                response.remove(propstat)
                failed = ET.SubElement(response, dav + "propstat")
                prop = ET.SubElement(failed, dav + "prop")
                ET.SubElement(prop, caldav + "calendar-data")
                ET.SubElement(prop, dav + "getetag")
                ET.SubElement(failed, dav + "status").text = "HTTP/1.1 500 Internal Server Error"
    return bytes(ET.tostring(root, xml_declaration=True, encoding="utf-8"))


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
    with FaultProxy(radicale_server.url) as proxy:
        yield proxy


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

    with SmtpSink() as sink:
        yield sink
