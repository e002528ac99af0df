"""Radicale on 127.0.0.1 in a temp folder: the demo's server and the tests'.

A small launcher of our own (no pytest): the demo runs it from a plain install, and the
fixtures in :mod:`tmcaldav.testing` use the same one. Radicale only ever runs in a
child process.
"""

from __future__ import annotations

import http.client
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tmcaldav.localhost import HOST as _HOST
from tmcaldav.localhost import LocalServer, die_with_parent
from tmcaldav.localhost import free_port as _free_port
from tmcaldav.process import PORT_ATTEMPTS, ServerProcess, start_with_retries

if TYPE_CHECKING:
    from caldav.davclient import DAVClient

#: The first user owns the calendars (the training office); every other user plays
#: the part of a student's scheduling server and may edit the organizer's events.
DEFAULT_USERS: Mapping[str, str] = {"organizer": "pw-organizer", "student": "pw-student"}


class RadicaleServer(LocalServer):
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
        *,
        die_with_parent: bool = False,
    ) -> None:
        """Prepare (but do not start) a server whose files all live in ``base_dir``;
        with `die_with_parent` the server is stopped by the kernel when we die."""
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
        self._process = ServerProcess("Radicale", self.log_path)
        self.die_with_parent = die_with_parent

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
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while our Radicale process is alive."""
        return self._process.running

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
            self._start_with_retries(_free_port, attempts=PORT_ATTEMPTS)

    def stop(self) -> None:
        """Stop the server by its process id: terminate, wait, kill if it lingers."""
        self._process.stop()

    def log_text(self) -> str:
        """What Radicale wrote to stderr/stdout so far (for failure messages)."""
        return self._process.log_text()

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
        def start_once() -> str:
            self.port = pick_port()
            self._write_config()
            env = {key: value for key, value in os.environ.items() if key != "RADICALE_CONFIG"}
            self._process.spawn(
                [sys.executable, "-m", "radicale", "--config", str(self.config_path)],
                cwd=self.base_dir,
                env=env,
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
            return self._process.wait_until_ready(self._answers_with_our_realm, step=0.02)

        failure = start_with_retries(start_once, self.stop, attempts=attempts)
        if failure:
            raise RuntimeError(
                f"Radicale did not start on {_HOST}:{self.port}; its output:\n{failure}"
            )

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


def start_radicale(
    tmp_dir: Path | str,
    users: Mapping[str, str] = DEFAULT_USERS,
    port: int = 0,
    server_options: Mapping[str, str] | None = None,
    *,
    die_with_parent: bool = False,
) -> RadicaleServer:
    """Start Radicale on 127.0.0.1 with its config and storage under ``tmp_dir``.

    ``users`` maps user names to plain-text passwords; the first one is the organizer.
    ``port`` 0 picks a free port (retrying if another process takes it first).
    ``server_options`` adds settings to Radicale's ``[server]`` section. The caller
    stops the server with ``stop()`` (or uses it as a context manager).
    """
    server = RadicaleServer(
        Path(tmp_dir), users, port, server_options, die_with_parent=die_with_parent
    )
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


