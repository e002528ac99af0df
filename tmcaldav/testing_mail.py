"""Real mail servers for tests: an SMTP sink (aiosmtpd) and an IMAP server (Dovecot).

Both listen on 127.0.0.1 and a port the kernel or a retry loop picks, and are stopped
by the fixtures in :mod:`tmcaldav.testing`. Dovecot comes from Debian's
``dovecot-imapd`` (``python3 dev.py test`` installs it as root); it runs unprivileged
with its own config, passwd-file and Maildirs in a temp folder. As root it runs as
``nobody``, because Dovecot refuses mail access as root.
"""

from __future__ import annotations

import imaplib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DovecotServer",
    "ImapUnavailable",
    "ReceivedMail",
    "SmtpSink",
    "TlsFiles",
    "make_tls_files",
]

_HOST = "127.0.0.1"
_READY_TIMEOUT = 20.0
_PORT_ATTEMPTS = 5


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


class SmtpSink:
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

        class _Controller(Controller):  # type: ignore[misc]
            def factory(self) -> Any:
                with warnings.catch_warnings():
                    # Implicit TLS is secure, but aiosmtpd only knows STARTTLS and warns.
                    warnings.simplefilter("ignore", UserWarning)
                    return super().factory()

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
            ready_timeout=_READY_TIMEOUT,
            **kwargs,
        )
        self._controller.start()

    def stop(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait until at least `count` messages arrived; returns them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


# ---- IMAP (Dovecot) --------------------------------------------------------------------


class ImapUnavailable(RuntimeError):
    """Dovecot is not installed here (install dovecot-imapd, or run dev.py test as root)."""


def _dovecot_binary() -> str:
    found = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
    )
    if found is None:
        raise ImapUnavailable(
            "Dovecot is not installed (apt-get install dovecot-imapd; "
            "`python3 dev.py test` does it when run as root)"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class DovecotServer:
    """A Dovecot IMAP server on 127.0.0.1 with passwd-file users and Maildirs in a temp dir.

    ``port`` speaks IMAP with STARTTLS (when TLS files are given) and ``tls_port``
    implicit TLS. Plain-text login is allowed: it listens on loopback only. Readiness
    is a greeting that carries a random token, so another server on the port is never
    mistaken for ours.
    """

    def __init__(
        self, users: Mapping[str, str], tls: TlsFiles | None = None, extra_config: str = ""
    ) -> None:
        """Prepare a server; `extra_config` is appended to dovecot.conf (e.g. to limit
        ``imap_capability`` and play an older server)."""
        if not users:
            raise ValueError("Dovecot needs at least one user")
        self.users = dict(users)
        self.tls = tls
        self.extra_config = extra_config
        self.port = 0
        self.tls_port = 0
        self.base_dir: Path | None = None
        self._token = secrets.token_hex(8)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start Dovecot (retrying on a port clash); ImapUnavailable when not installed."""
        binary = _dovecot_binary()
        self.base_dir = Path(tempfile.mkdtemp(prefix="tmcaldav-dovecot-"))
        uid, gid, user, group = self._identity()
        failure = ""
        for _attempt in range(_PORT_ATTEMPTS):
            self.port, self.tls_port = _free_port(), _free_port()
            self._write_files(user, group, uid, gid)
            if os.geteuid() == 0:
                for path in [self.base_dir, *self.base_dir.rglob("*")]:
                    os.chown(path, uid, gid)
            self._spawn(binary, uid, gid)
            failure = self._wait_until_ready()
            if not failure:
                return
            self._stop_process()
            if "address already in use" not in failure.lower():
                break
        self.stop()
        raise RuntimeError(f"Dovecot did not start on {_HOST}:{self.port}:\n{failure}")

    def stop(self) -> None:
        """Stop Dovecot and remove its folder."""
        self._stop_process()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while our Dovecot master process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Dovecot's log so far (for failure messages)."""
        if self.base_dir is None:
            return ""
        texts = []
        for name in ("dovecot.log", "stdout.log"):
            path = self.base_dir / name
            if path.exists():
                texts.append(path.read_text("utf-8", "replace"))
        return "\n".join(texts)

    # -- using it ----------------------------------------------------------------------

    def client(self, user: str) -> imaplib.IMAP4:
        """A logged-in imaplib client (plain connection: loopback)."""
        imap = imaplib.IMAP4(_HOST, self.port, timeout=10)
        imap.login(user, self.users[user])
        return imap

    def deliver(self, user: str, messages: Iterable[bytes], folder: str = "INBOX") -> None:
        """Put messages into a user's folder, as an MTA's delivery would."""
        imap = self.client(user)
        try:
            if folder != "INBOX":
                imap.create(f'"{folder}"')
            for raw in messages:
                status, data = imap.append(f'"{folder}"', None, None, raw)
                assert status == "OK", data
        finally:
            imap.logout()

    def folder(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Every message in a folder (empty when the folder does not exist)."""
        imap = self.client(user)
        try:
            status, _ = imap.select(f'"{folder}"', readonly=True)
            if status != "OK":
                return []
            _, data = imap.uid("SEARCH", None, "ALL")
            out = []
            for uid in (data[0] or b"").split():
                _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                out += [bytes(item[1]) for item in fetched if isinstance(item, tuple)]
            return out
        finally:
            imap.logout()

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _identity() -> tuple[int, int, str, str]:
        import grp
        import pwd

        # Dovecot will not give mail access to root; as root, run the whole server as nobody.
        root = os.geteuid() == 0
        entry = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.geteuid())
        return entry.pw_uid, entry.pw_gid, entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name

    def _write_files(self, user: str, group: str, uid: int, gid: int) -> None:
        base = self.base_dir
        assert base is not None
        for sub in ("run", "state", "home"):
            (base / sub).mkdir(exist_ok=True)
        lines = []
        for name, password in self.users.items():
            if ":" in name or "\n" in name or ":" in password or "\n" in password:
                raise ValueError(f"user {name!r} or its password cannot go in a passwd-file")
            home = base / "home" / name
            home.mkdir(exist_ok=True)
            lines.append(f"{name}:{{PLAIN}}{password}:{uid}:{gid}::{home}::\n")
        passwd = base / "passwd"
        passwd.write_text("".join(lines), encoding="utf-8")
        passwd.chmod(0o600)
        ssl_lines = "ssl = no\n"
        imaps = ""
        if self.tls is not None:
            for name, source in (("cert.pem", self.tls.cert_file), ("key.pem", self.tls.key_file)):
                shutil.copyfile(source, base / name)
                (base / name).chmod(0o600)
            ssl_lines = (
                f"ssl = yes\nssl_cert = <{base / 'cert.pem'}\nssl_key = <{base / 'key.pem'}\n"
                "ssl_min_protocol = TLSv1.2\n"
            )
            imaps = (
                f"  inet_listener imaps {{\n    address = {_HOST}\n"
                f"    port = {self.tls_port}\n    ssl = yes\n  }}\n"
            )
        config = f"""\
base_dir = {base / "run"}
state_dir = {base / "state"}
instance_name = tmcaldav-test-{self._token}
log_path = {base / "dovecot.log"}
protocols = imap
listen = {_HOST}
login_greeting = tmcaldav-test-{self._token} ready
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login
# A wrong password is answered at once: tests try one on purpose.
auth_failure_delay = 0
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {_HOST}
    port = {self.port}
  }}
{imaps}}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
service auth {{
  user = {user}
}}
service auth-worker {{
  user = {user}
}}
"""
        (base / "dovecot.conf").write_text(config + self.extra_config, encoding="utf-8")

    def _spawn(self, binary: str, uid: int, gid: int) -> None:
        assert self.base_dir is not None
        self._log = (self.base_dir / "stdout.log").open("ab")
        extra: dict[str, Any] = {}
        if os.geteuid() == 0:
            extra = {"user": uid, "group": gid, "extra_groups": []}
        self._process = subprocess.Popen(
            [binary, "-F", "-c", str(self.base_dir / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            **extra,
        )

    def _wait_until_ready(self) -> str:
        assert self._process is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return self.log_text() or f"exited with status {self._process.returncode}"
            if self._greets_with_our_token():
                return ""
            time.sleep(0.05)
        return f"not ready after {_READY_TIMEOUT:.0f} s\n{self.log_text()}"

    def _greets_with_our_token(self) -> bool:
        try:
            with socket.create_connection((_HOST, self.port), timeout=0.5) as s:
                greeting = s.recv(512)
        except OSError:
            return False
        return f"tmcaldav-test-{self._token}".encode() in greeting

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
