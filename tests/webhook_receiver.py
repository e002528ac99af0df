"""A real HTTP receiver for webhook tests, on 127.0.0.1 and a port the kernel picks."""

from __future__ import annotations

import http.server
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tmcaldav_plugins.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

from tmcaldav.localhost import HOST, LocalServer, ThreadedHTTPServer


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event_id(self) -> str | None:
        return self.headers.get(EVENT_ID_HEADER)

    def signed_with(self, secret: bytes) -> bool:
        return verify(secret, self.body, self.headers.get(SIGNATURE_HEADER))


class Receiver(LocalServer):
    """Records every POST; answers queued statuses first (503, 400...), then 204."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: deque[int] = deque()
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    receiver.arrived.notify_all()
                receiver.gate.wait(30)  # a stalled receiver, until the test opens the gate
                status = receiver.answers.popleft() if receiver.answers else 204
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.http = ThreadedHTTPServer(Handler, "webhook-receiver")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http.port}/hook"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until `count` requests arrived (or the timeout passed); return them all."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def start(self) -> None:
        self.http.start()

    def stop(self) -> None:
        self.gate.set()
        self.http.stop()


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A running receiver, stopped afterwards."""
    with Receiver() as receiver:
        yield receiver
