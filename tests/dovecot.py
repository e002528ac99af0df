"""A real IMAP server for the iMIP tests: Dovecot on 127.0.0.1 in a temp folder.

Dovecot comes from Debian's ``dovecot-imapd`` (``python3 dev.py test`` installs it as
root); it runs unprivileged with its own config, passwd-file and Maildirs. As root it
runs as ``nobody``, because Dovecot refuses mail access as root.
"""

from __future__ import annotations

import imaplib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tmcaldav.localhost import HOST as _HOST
from tmcaldav.localhost import LocalServer
from tmcaldav.localhost import free_port as _free_port
from tmcaldav.process import ServerProcess, start_with_retries
from tmcaldav.testing_mail import TlsFiles


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


class DovecotServer(LocalServer):
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
        self._process: ServerProcess | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start Dovecot (retrying on a port clash); ImapUnavailable when not installed."""
        binary = _dovecot_binary()
        base_dir = self.base_dir = Path(tempfile.mkdtemp(prefix="tmcaldav-dovecot-"))
        process = self._process = ServerProcess("Dovecot", base_dir / "stdout.log")
        uid, gid, user, group = self._identity()

        def start_once() -> str:
            self.port, self.tls_port = _free_port(), _free_port()
            self._write_files(user, group, uid, gid)
            extra: dict[str, Any] = {}
            if os.geteuid() == 0:
                for path in [base_dir, *base_dir.rglob("*")]:
                    os.chown(path, uid, gid)
                extra = {"user": uid, "group": gid, "extra_groups": []}
            process.spawn(
                [binary, "-F", "-c", str(base_dir / "dovecot.conf")],
                cwd=base_dir,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
                **extra,
            )
            failure = process.wait_until_ready(self._greets_with_our_token)
            # Dovecot's own log says why it failed; stdout rarely does.
            return failure and f"{failure}\n{self.log_text()}"

        failure = start_with_retries(start_once, process.stop)
        if failure:
            self.stop()
            raise RuntimeError(f"Dovecot did not start on {_HOST}:{self.port}:\n{failure}")

    def stop(self) -> None:
        """Stop Dovecot and remove its folder."""
        if self._process is not None:
            self._process.stop()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    @property
    def running(self) -> bool:
        """True while our Dovecot master process is alive."""
        return self._process is not None and self._process.running

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

    def _greets_with_our_token(self) -> bool:
        try:
            with socket.create_connection((_HOST, self.port), timeout=0.5) as s:
                greeting = s.recv(512)
        except OSError:
            return False
        return f"tmcaldav-test-{self._token}".encode() in greeting
