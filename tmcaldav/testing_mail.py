"""A real SMTP sink for tests (aiosmtpd) and the TLS files the mail tests use.

It listens on 127.0.0.1 and a port the kernel picks, and is stopped by the fixtures
in :mod:`tmcaldav.testing`.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tmcaldav.localhost import HOST as _HOST
from tmcaldav.localhost import LocalServer
from tmcaldav.process import READY_TIMEOUT

__all__ = [
    "ReceivedMail",
    "SmtpSink",
    "TlsFiles",
    "make_tls_files",
]



# ---- TLS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A private test CA and a server certificate for 127.0.0.1 / localhost."""

    ca_file: Path
    cert_file: Path  # the server certificate followed by its chain
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context with the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_tls_files(folder: Path) -> TlsFiles:
    """Make a CA and a server certificate with trustme (a test extra) in `folder`."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca.cert_pem.write_to_path(str(files.ca_file))
    cert.private_key_pem.write_to_path(str(files.key_file))
    files.key_file.chmod(0o600)
    with files.cert_file.open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return files


# ---- SMTP ------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    """One message the sink accepted: envelope and content."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    authenticated_as: str | None = None

    @property
    def message(self) -> EmailMessage:
        """The message parsed with the standard library."""
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _SinkHandler:
    received: list[ReceivedMail] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> SMTP answer
    fail_data: list[str] = field(default_factory=list)  # answers for the next DATA commands
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        answer = self.refuse.get(address.lower())
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.fail_data:
                return self.fail_data.pop(0)
            login = session.auth_data if session.authenticated else None
            self.received.append(
                ReceivedMail(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                    login.decode() if isinstance(login, bytes) else None,
                )
            )
        return "250 Message accepted"


class SmtpSink(LocalServer):
    """An aiosmtpd SMTP server on 127.0.0.1 that keeps every message it accepts.

    `security`: "none", "starttls" (offered and required before AUTH) or "tls"
    (implicit TLS). With `users`, AUTH PLAIN/LOGIN is required to send.
    """

    def __init__(
        self,
        *,
        security: str = "none",
        tls: TlsFiles | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        if security != "none" and tls is None:
            raise ValueError(f"security {security!r} needs TLS files")
        if security == "none" and users:
            raise ValueError("the sink offers AUTH only over TLS (starttls or tls)")
        self.security = security
        self.tls = tls
        self.users = dict(users or {})
        self.handler = _SinkHandler()
        self._controller: Any = None

    @property
    def port(self) -> int:
        """The port the kernel gave the server."""
        if self._controller is None:
            raise RuntimeError("the SMTP sink is not running")
        return int(self._controller.port)

    @property
    def received(self) -> list[ReceivedMail]:
        """Messages accepted so far, in order."""
        with self.handler.lock:
            return list(self.handler.received)

    def refuse(self, address: str, answer: str = "550 5.1.1 no such user") -> None:
        """Answer RCPT TO for `address` with `answer` from now on."""
        self.handler.refuse[address.lower()] = answer

    def fail_next_data(self, answer: str = "451 4.3.0 try again later", count: int = 1) -> None:
        """Answer the next `count` DATA commands with `answer` (a temporary failure)."""
        with self.handler.lock:
            self.handler.fail_data.extend([answer] * count)

    def start(self) -> None:
        """Listen on a free port chosen by the kernel (no race with other tests)."""
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        users = self.users

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and users.get(data.login.decode()) == data.password.decode()
            )
            return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

        class _Controller(Controller):
            def factory(self) -> Any:
                with warnings.catch_warnings():
                    # Implicit TLS is secure, but aiosmtpd only knows STARTTLS and warns.
                    warnings.simplefilter("ignore", UserWarning)
                    return super().factory()  # type: ignore[no-untyped-call]

            def _create_server(self) -> Any:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((_HOST, 0))
                sock.listen(16)
                self.port = sock.getsockname()[1]
                return self.loop.create_server(
                    self._factory_invoker, sock=sock, ssl=self.ssl_context
                )

        kwargs: dict[str, Any] = {}
        if users:
            kwargs |= {
                "authenticator": authenticate,
                "auth_required": True,
                # aiosmtpd only knows STARTTLS; with implicit TLS the channel is secure.
                "auth_require_tls": self.security == "starttls",
            }
        if self.security == "starttls":
            assert self.tls is not None
            kwargs |= {"tls_context": self.tls.server_context(), "require_starttls": True}
        self._controller = _Controller(
            self.handler,
            hostname=_HOST,
            port=0,
            ssl_context=self.tls.server_context() if self.security == "tls" and self.tls else None,
            ready_timeout=READY_TIMEOUT,
            **kwargs,
        )
        self._controller.start()

    def stop(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait until at least `count` messages arrived; returns them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received
