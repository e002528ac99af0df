"""Real RFC 6638 scheduling servers for tests: Cyrus CalDAV and Xandikos (multi-user).

Radicale (tmcaldav.testing) stores what it is given and schedules nothing. The two
servers here do server-side scheduling: the organizer's PUT delivers invitations to the
students' calendars, and a student's PARTSTAT change comes back to the organizer's copy.
Both listen on 127.0.0.1 only, keep everything in a folder of their own and are stopped
by process id. Every user's address is ``USER@example.org`` and every user has a
schedule-default calendar before the first test runs.

* :func:`start_cyrus` runs Debian's ``cyrus-caldav`` (``python3 dev.py test`` installs
  it as root) from its own imapd.conf/cyrus.conf: ``master`` drops to the ``cyrus``
  user and serves only ``http`` (CalDAV) on a free port and LMTP on a unix socket.
  Passwords are in a sasldb; each user's mailbox is made by one LMTP delivery, and the
  calendars (``Default``, ``Inbox``, ``Outbox``) by the first authenticated request.
  ``sendmail`` is a script that keeps each message in ``sent/`` and sends nothing.
* :func:`start_xandikos` runs ``xandikos multi-user`` (PyPI, a test extra) on a unix
  socket, trusting ``X-Remote-User`` from that socket only; a small reverse proxy in
  this process checks Basic credentials against the user table and sets that header.
  Each principal is created with ``--defaults`` by a first request and given its
  address by PROPPATCH (multi-user mode has no other source: ``$EMAIL`` is what
  single-user ``serve`` uses, and it is scrubbed from the server's environment).

Both raise :class:`ServerUnavailable`, saying why, when the programs are not installed;
the fixtures at the bottom turn that into a skip.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.client
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import pytest

from tests.auth_proxy import LoginProxy
from tmcaldav.localhost import HOST as _HOST
from tmcaldav.localhost import free_port
from tmcaldav.process import ServerProcess, start_with_retries

__all__ = [
    "DEFAULT_USERS",
    "DOMAIN",
    "PROFILES",
    "SCHEDULING_SERVERS",
    "CyrusServer",
    "DavAnswer",
    "SchedulingServer",
    "ServerProfile",
    "ServerUnavailable",
    "UrlLayout",
    "XandikosServer",
    "cyrus_server_fixture",
    "processes_under",
    "scheduling_server_fixture",
    "start_cyrus",
    "start_scheduling_server",
    "start_xandikos",
    "xandikos_server_fixture",
]

#: The mail domain of every calendar user on both servers.
DOMAIN = "example.org"

#: The first user is the organizer (the training office); the others are students.
DEFAULT_USERS: Mapping[str, str] = {
    "organizer": "pw-organizer",
    "student1": "pw-student1",
    "student2": "pw-student2",
    "student3": "pw-student3",
    "student4": "pw-student4",
}

#: The names the ``scheduling_server`` fixture is parametrised over.
SCHEDULING_SERVERS = ("cyrus", "xandikos")

# Cyrus's httpd says nothing we could read when its port is taken (it logs to syslog),
# so every failed start is tried again on a fresh port, a few times.
_CYRUS_ATTEMPTS = 3
# sockaddr_un holds 108 bytes; keep well below it.
_MAX_SOCKET_PATH = 100

_DAV = "DAV:"
_CALDAV = "urn:ietf:params:xml:ns:caldav"


class ServerUnavailable(RuntimeError):
    """The server's programs are not installed here (the message says what is missing)."""


@dataclass(frozen=True)
class DavAnswer:
    """One HTTP answer: status, headers (names lower-cased) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        """A header's value, or None."""
        return self.headers.get(name.lower())

    def xml(self) -> ET.Element:
        """The body parsed as XML."""
        return ET.fromstring(self.body)


@dataclass(frozen=True)
class UrlLayout:
    """Where a server keeps a user's collections: paths below its root, in which
    ``{user}`` stands for the user's name."""

    principal: str
    #: The schedule-default calendar, where invitations land.
    calendar: str
    #: The schedule inbox.
    inbox: str


class SchedulingServer:
    """What both servers offer the tests: URLs, addresses and authenticated requests.

    ``users`` maps user names to passwords; the first is the organizer. URLs are
    absolute (``http://127.0.0.1:PORT/...``) and end in ``/`` for collections.
    """

    #: "cyrus" or "xandikos".
    name: ClassVar[str] = ""
    #: Where the server keeps each user's collections.
    layout: ClassVar[UrlLayout]
    #: The random realm of the server's Basic challenge: what tells it is ours.
    realm: str

    def __init__(self, users: Mapping[str, str]) -> None:
        """Keep the user table; subclasses start the server."""
        if not users:
            raise ValueError("a scheduling server needs at least one user (the organizer)")
        for user, password in users.items():
            if not user or not user.isascii() or not all(c.isalnum() or c in "-_." for c in user):
                raise ValueError(f"user name {user!r}: use letters, digits, '-', '_', '.'")
            if not password or any(c in password for c in "\n\r\0:"):
                raise ValueError(f"the password of {user!r} cannot be stored")
        self.users: dict[str, str] = dict(users)
        self.port = 0
        self._process: ServerProcess | None = None

    # -- addresses and URLs --------------------------------------------------------------

    @property
    def organizer(self) -> str:
        """The first user."""
        return next(iter(self.users))

    @property
    def students(self) -> list[str]:
        """Every user but the organizer."""
        return list(self.users)[1:]

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:40123/``."""
        if not self.port:
            raise RuntimeError(f"the {self.name} server has not been started")
        return f"http://{_HOST}:{self.port}/"

    @property
    def profile(self) -> ServerProfile:
        """What this server is known to do (see :data:`PROFILES`)."""
        return PROFILES[self.name]

    def address(self, user: str) -> str:
        """The user's calendar address without ``mailto:``, e.g. ``student1@example.org``."""
        return f"{user}@{DOMAIN}"

    def principal_url(self, user: str) -> str:
        """URL of the user's principal."""
        return self.url + self.layout.principal.format(user=user)

    def calendar_url(self, user: str) -> str:
        """URL of the user's schedule-default calendar (where invitations land)."""
        return self.url + self.layout.calendar.format(user=user)

    def inbox_url(self, user: str) -> str:
        """URL of the user's schedule inbox."""
        return self.url + self.layout.inbox.format(user=user)

    # -- requests ------------------------------------------------------------------------

    def request(
        self,
        user: str | None,
        method: str,
        url: str,
        body: bytes | str = b"",
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 30,
    ) -> DavAnswer:
        """Send one request as ``user`` (Basic credentials up front; None: anonymous).

        ``url`` is absolute or a path on this server. One connection per request,
        no proxies, no redirects followed.
        """
        parts = urlsplit(urljoin(self.url, url))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        data = body.encode("utf-8") if isinstance(body, str) else body
        sent = dict(headers or {})
        if user is not None:
            token = base64.b64encode(f"{user}:{self.users[user]}".encode()).decode("ascii")
            sent["Authorization"] = f"Basic {token}"
        if data and not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/xml; charset=utf-8"
        connection = http.client.HTTPConnection(_HOST, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=data or None, headers=sent)
            response = connection.getresponse()
            answer = response.read()
            got = {name.lower(): value for name, value in response.getheaders()}
            if got.get("content-encoding", "").lower() in ("gzip", "x-gzip", "deflate"):
                # Only when the caller asked (Accept-Encoding): zlib reads both forms.
                answer = zlib.decompress(answer, wbits=47)
            return DavAnswer(response.status, got, answer)
        finally:
            connection.close()

    # -- life cycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server by process id and leave nothing running."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """Process id of the server's main process while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the server's main process is alive."""
        return self._process is not None and self._process.running

    def log_text(self) -> str:
        """What the server's main process wrote so far (for failure messages)."""
        return self._process.log_text() if self._process is not None else ""

    def __enter__(self) -> SchedulingServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- shared helpers ------------------------------------------------------------------

    def _challenges_with_our_realm(self, path: str, timeout: float = 30) -> bool:
        """Is an anonymous PROPFIND of `path` challenged with our random realm? (Then the
        server on the port is ours, not another that happens to listen there.)"""
        try:
            answer = self.request(None, "PROPFIND", path, headers={"Depth": "0"}, timeout=timeout)
        except OSError:
            return False
        challenge = answer.header("WWW-Authenticate") or ""
        return answer.status == 401 and f'realm="{self.realm}"' in challenge

    def _propfind_status(self, user: str, url: str) -> DavAnswer:
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>'
        )
        return self.request(user, "PROPFIND", url, body, {"Depth": "0"})


# ---- what differs per server, as data ---------------------------------------------------


@dataclass(frozen=True)
class ServerProfile:
    """How one scheduling server behaves, as measured by tests/test_scheduling_servers.py.

    The proposed basis for the adapter's per-server profile (docs/servers.md): every
    field is asserted by a test, so a server upgrade that changes one fails loudly.
    """

    #: SCHEDULE-STATUS on the organizer's ATTENDEE after delivery to a local user.
    delivered_status: str
    #: ...for an address the server does not host (Cyrus mails it: "sent").
    unknown_user_status: str
    #: Where the schedule-default-calendar-URL property lives ("inbox": RFC 6638 §9.2).
    default_calendar_property_on: str
    #: Path of the schedule-default calendar below the user's principal segment.
    default_calendar_href: str
    #: Does the PUT answer carry an ETag? (Cyrus: no; GET it.)
    put_returns_etag: bool
    #: Is the ETag weak (W/"…") on a GET whose body is compressed?
    weak_etag_when_compressed: bool
    #: Prefix of the sync-collection token.
    sync_token_prefix: str
    #: SEQUENCE an attendee's copy gets when the organizer's is 0.
    first_delivery_sequence: int
    #: Parameters the server adds to the organizer's ATTENDEE with a reply.
    reply_params: tuple[str, ...]
    #: Does the replier's ATTENDEE keep its SCHEDULE-STATUS and RSVP after the reply?
    reply_keeps_schedule_status: bool
    #: Does a reschedule reset the student's PARTSTAT in the student's own copy?
    reschedule_resets_partstat: bool
    #: iTIP METHOD a PUT with STATUS:CANCELLED delivers (a DELETE always sends CANCEL).
    cancel_method: str
    #: Whom SCHEDULE-FORCE-SEND=REQUEST on one ATTENDEE re-delivers to: "that" or "all".
    force_send_reaches: str
    #: Is SCHEDULE-FORCE-SEND kept in the stored organizer copy?
    force_send_param_stored: bool
    #: Is ORGANIZER matched against the login's addresses case-insensitively?
    organizer_match_ignores_case: bool
    #: Does the Schedule-Tag change when a reply is merged into the organizer's copy?
    schedule_tag_changes_on_reply: bool
    #: May a student change other properties of their copy? (Xandikos: 412.)
    attendee_may_edit_event: bool
    #: Does a student deleting their copy tell the organizer (PARTSTAT=DECLINED)?
    attendee_delete_declines: bool
    #: Are local users unknown to scheduling until they log in after a restart?
    forgets_users_on_restart: bool
    #: Is a student's answer applied to the organizer's copy in any of the organizer's
    #: calendars (else only in the schedule-default one; invitations go out from any)?
    replies_in_any_calendar: bool


# Each field's value on (cyrus, xandikos): side by side, so that what differs shows.
_MEASURED: Mapping[str, tuple[Any, Any]] = {
    "delivered_status": ("1.2", "2.0;Success"),
    "unknown_user_status": ("1.1", "3.7;Invalid calendar user"),
    "default_calendar_property_on": ("inbox", "inbox"),
    "default_calendar_href": ("Default/", "calendars/calendar"),
    "put_returns_etag": (False, True),
    "weak_etag_when_compressed": (True, False),
    "sync_token_prefix": ("data:,", ""),
    "first_delivery_sequence": (1, 0),
    "reply_params": (("X-DTSTAMP", "X-SEQUENCE"), ()),
    "reply_keeps_schedule_status": (False, True),
    "reschedule_resets_partstat": (True, False),
    "cancel_method": ("CANCEL", "REQUEST"),
    "force_send_reaches": ("that", "all"),
    "force_send_param_stored": (True, False),
    "organizer_match_ignores_case": (True, False),
    "schedule_tag_changes_on_reply": (True, False),
    "attendee_may_edit_event": (True, False),
    "attendee_delete_declines": (True, False),
    "forgets_users_on_restart": (False, True),
    "replies_in_any_calendar": (True, False),
}

PROFILES: Mapping[str, ServerProfile] = {
    name: ServerProfile(**{field: values[column] for field, values in _MEASURED.items()})
    for column, name in enumerate(SCHEDULING_SERVERS)
}


# ---- Cyrus -----------------------------------------------------------------------------

_CYRUS_BIN_DIRS = ("/usr/lib/cyrus/bin", "/usr/libexec/cyrus-imapd", "/usr/lib/cyrus-imapd")


def _cyrus_programs() -> tuple[Path, Path]:
    """(master, saslpasswd2), or ServerUnavailable naming what is missing."""
    master = next(
        (Path(d) / "master" for d in _CYRUS_BIN_DIRS if (Path(d) / "httpd").exists()), None
    )
    saslpasswd2 = shutil.which("saslpasswd2") or (
        "/usr/sbin/saslpasswd2" if Path("/usr/sbin/saslpasswd2").exists() else None
    )
    missing = []
    if master is None or not master.exists():
        missing.append("Cyrus's master and httpd (Debian: cyrus-common, cyrus-caldav)")
    if saslpasswd2 is None:
        missing.append("saslpasswd2 (Debian: sasl2-bin)")
    if missing:
        raise ServerUnavailable(
            "not installed: " + "; ".join(missing) + " (run `python3 dev.py test` as root)"
        )
    assert master is not None and saslpasswd2 is not None
    return master, Path(saslpasswd2)


# Cyrus runs `sendmail -bs` and speaks SMTP to it on stdin/stdout (iMIP to addresses it
# does not host). This one answers like an MTA, keeps each message in sent/ and sends
# nothing. POSIX sh: it runs as the cyrus user, who cannot reach the test's Python.
_FAKE_SENDMAIL = r"""#!/bin/sh
out="@SENT@/$(date +%s%N)-$$"
reply() { printf '%s\r\n' "$1"; }
reply "220 tmcaldav-test-sink ESMTP"
data=0
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  if [ "$data" = 1 ]; then
    if [ "$line" = "." ]; then
      data=0
      mv "$out.part" "$out.eml"
      out="@SENT@/$(date +%s%N)-$$"
      reply "250 2.0.0 kept, not sent"
    else
      printf '%s\n' "$line" >> "$out.part"
    fi
    continue
  fi
  case "$line" in
    [Ee][Hh][Ll][Oo]*) reply "250-tmcaldav-test-sink"; reply "250 8BITMIME" ;;
    [Hh][Ee][Ll][Oo]*) reply "250 tmcaldav-test-sink" ;;
    [Dd][Aa][Tt][Aa]*) data=1; reply "354 end with ." ;;
    [Qq][Uu][Ii][Tt]*) reply "221 2.0.0 bye"; exit 0 ;;
    *) printf 'X-Envelope: %s\n' "$line" >> "$out.part"; reply "250 2.0.0 ok" ;;
  esac
done
exit 0
"""


class CyrusServer(SchedulingServer):
    """Cyrus CalDAV from its own config in a folder of its own, on 127.0.0.1.

    Readiness: an anonymous request for a calendar home is challenged with a random
    realm (``caldav_realm``), so another server on the port is never taken for ours.
    Note that Cyrus answers an anonymous PROPFIND on ``/`` with 207, not 401: clients
    must send credentials up front. Its log is master's own output: Cyrus's services
    log to syslog, which tests do not have.
    """

    name = "cyrus"
    # Cyrus makes ``Default`` (its schedule-default calendar), ``Inbox`` and ``Outbox``
    # in the calendar home the first time a user logs in.
    layout = UrlLayout(
        principal="dav/principals/user/{user}/",
        calendar="dav/calendars/user/{user}/Default/",
        inbox="dav/calendars/user/{user}/Inbox/",
    )

    def __init__(self, base_dir: Path, users: Mapping[str, str]) -> None:
        """Prepare (not start) a server; its files live in ``base_dir`` if the cyrus user
        can reach it, else in a fresh folder under the system temp folder."""
        super().__init__(users)
        self.base_dir = Path(base_dir)
        self.folder: Path | None = None
        self._own_folder = False
        self._token = secrets.token_hex(6)
        self.servername = f"tmcaldav-{self._token}"
        self.realm = f"tmcaldav-cyrus-{self._token}"

    def calendar_home_url(self, user: str) -> str:
        """``/dav/calendars/user/USER/``."""
        return f"{self.url}dav/calendars/user/{user}/"

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start master on a free port, make every user's calendars."""
        master, saslpasswd2 = _cyrus_programs()
        if os.geteuid() != 0:
            raise ServerUnavailable(
                "Cyrus's master must be started as root (it switches to the cyrus user)"
            )
        try:
            cyrus = pwd.getpwnam("cyrus")
        except KeyError:
            raise ServerUnavailable("there is no `cyrus` user (Debian: cyrus-common)") from None
        folder = self.folder = self._make_folder(cyrus.pw_uid, cyrus.pw_gid)
        process = self._process = ServerProcess("Cyrus's master", folder / "master.log")

        def start_once() -> str:
            self.port = free_port()
            self._write_files(saslpasswd2)
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, cyrus.pw_uid, cyrus.pw_gid, follow_symlinks=False)
            process.spawn(
                [
                    str(master),
                    "-C",
                    str(folder / "imapd.conf"),
                    "-M",
                    str(folder / "cyrus.conf"),
                    "-p",
                    str(folder / "master.pid"),
                ],
                cwd=folder,
                # A fresh session: master's services are ours alone, and a terminal's
                # signals to the test run do not reach them first.
                start_new_session=True,
            )
            return process.wait_until_ready(self._ready)

        failure = start_with_retries(
            start_once,
            self._stop_processes,
            attempts=_CYRUS_ATTEMPTS,
            retry_if=lambda _failure: True,
        )
        if failure:
            self.stop()
            raise RuntimeError(f"Cyrus did not start on {_HOST}:{self.port}: {failure}")
        try:
            self._provision_users()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM master (it ends its services), then kill any process of ours left."""
        self._stop_processes()
        if self.folder is not None and self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def sent_mail(self) -> list[bytes]:
        """Every message Cyrus handed to its ``sendmail`` (iMIP to non-local addresses)."""
        if self.folder is None:
            return []
        return [p.read_bytes() for p in sorted((self.folder / "sent").glob("*.eml"))]

    # -- internals -----------------------------------------------------------------------

    def _make_folder(self, uid: int, gid: int) -> Path:
        candidate = self.base_dir
        candidate.mkdir(parents=True, exist_ok=True)
        socket_path = candidate / "socket" / "lmtp"
        if _reachable_by(candidate, uid, gid) and len(str(socket_path)) < _MAX_SOCKET_PATH:
            return candidate
        # pytest's temp folders are private to root: Cyrus (as `cyrus`) could not enter.
        folder = Path(tempfile.mkdtemp(prefix="tmcaldav-cyrus-"))
        self._own_folder = True
        with contextlib.suppress(OSError):
            (self.base_dir / "cyrus-folder").symlink_to(folder)
        return folder

    def _write_files(self, saslpasswd2: Path) -> None:
        base = self.folder
        assert base is not None
        for sub in ("config", "spool", "socket", "proc", "lock", "sent"):
            (base / sub).mkdir(exist_ok=True)
        conf = base / "imapd.conf"
        conf.write_text(
            f"""\
configdirectory: {base}/config
defaultpartition: default
partition-default: {base}/spool
proc_path: {base}/proc
mboxname_lockpath: {base}/lock
lmtpsocket: {base}/socket/lmtp
idlesocket: {base}/socket/idle
notifysocket: {base}/socket/notify
servername: {self.servername}
syslog_prefix: {self.servername}
caldav_realm: {self.realm}
httpmodules: caldav
calendar_user_address_set: {DOMAIN}
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {base}/sasldb2
sasl_mech_list: PLAIN
autocreate_quota: 0
autocreate_post: 1
sendmail: {base}/sendmail
umask: 077
""",
            encoding="utf-8",
        )
        (base / "cyrus.conf").write_text(
            f"""\
START {{
  recover cmd="ctl_cyrusdb -C {conf} -r"
}}
SERVICES {{
  http cmd="httpd -C {conf}" listen="{_HOST}:{self.port}" prefork=0 maxchild=20
  lmtpunix cmd="lmtpd -C {conf}" listen="{base}/socket/lmtp" prefork=0 maxchild=5
}}
EVENTS {{
}}
""",
            encoding="utf-8",
        )
        sendmail = base / "sendmail"
        sendmail.write_text(_FAKE_SENDMAIL.replace("@SENT@", str(base / "sent")), encoding="utf-8")
        sendmail.chmod(0o755)
        sasldb = base / "sasldb2"
        sasldb.unlink(missing_ok=True)
        for user, password in self.users.items():
            # The realm is the servername: that is the one Cyrus's SASL looks users up in.
            subprocess.run(
                [str(saslpasswd2), "-f", str(sasldb), "-u", self.servername, "-p", "-c", user],
                input=password.encode("utf-8"),
                check=True,
                capture_output=True,
            )

    def _ready(self) -> bool:
        """Our Cyrus answers with our realm, and LMTP listens. (Cyrus challenges on a
        calendar home, not on ``/``.)"""
        assert self.folder is not None
        home = self.calendar_home_url(self.organizer)
        return (
            self._challenges_with_our_realm(home, timeout=1)
            and (self.folder / "socket" / "lmtp").exists()
        )

    def _provision_users(self) -> None:
        """One LMTP delivery makes each mailbox; one login then makes its calendars."""
        assert self.folder is not None
        lmtp = smtplib.LMTP(str(self.folder / "socket" / "lmtp"), timeout=30)
        try:
            for user in self.users:
                message = (
                    f"From: setup@{DOMAIN}\r\nTo: {user}@{DOMAIN}\r\n"
                    "Subject: mailbox\r\n\r\nThis message creates the mailbox.\r\n"
                )
                refused = lmtp.sendmail(f"setup@{DOMAIN}", [user], message)
                if refused:
                    raise RuntimeError(f"Cyrus's LMTP refused {user}: {refused}")
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                lmtp.quit()
        for user in self.users:
            answer = self._propfind_status(user, self.calendar_home_url(user))
            if answer.status != 207:
                raise RuntimeError(
                    f"Cyrus did not make {user}'s calendars: {answer.status} {answer.text[:300]}"
                )
            default = self._propfind_status(user, self.calendar_url(user))
            if default.status != 207:
                raise RuntimeError(f"{user} has no Default calendar: {default.status}")

    def _stop_processes(self) -> None:
        if self._process is not None:
            self._process.stop()
        # master ends its services on SIGTERM; any that outlived it (a service busy with
        # a client, our sendmail) is found by our folder on its command line, and killed
        # by pid.
        if self.folder is not None:
            for pid in processes_under(self.folder):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start_cyrus(base_dir: Path | str, users: Mapping[str, str] = DEFAULT_USERS) -> CyrusServer:
    """Start Cyrus CalDAV on 127.0.0.1 with ``users`` (name → password; first: organizer).

    Every user gets a mailbox and the calendars ``Default`` (schedule-default),
    ``Inbox`` and ``Outbox``. Raises :class:`ServerUnavailable` when Cyrus or
    saslpasswd2 is not installed, or when not running as root.
    """
    server = CyrusServer(Path(base_dir), users)
    server.start()
    return server


# ---- Xandikos --------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock




class _XandikosProxy(LoginProxy):
    """Basic auth against a user table, then X-Remote-User to Xandikos's unix socket.

    Any X-Remote-User sent by a client is dropped, so only this proxy names the user;
    Xandikos trusts the header only on its unix socket, which lives in our folder.
    """

    def __init__(self, users: Mapping[str, str], socket_path: str, realm: str) -> None:
        super().__init__("xandikos-auth-proxy")
        self.users = users
        self.socket_path = socket_path
        self.realm = realm

    def upstream(self) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self.socket_path)

    def challenge(self) -> str:
        return f'Basic realm="{self.realm}"'

    def login(self, authorization: str | None, method: str) -> Mapping[str, str] | None:
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            credentials = base64.b64decode(authorization[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, password = credentials.partition(":")
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected, password):
            return None
        return {"X-Remote-User": user}


class XandikosServer(SchedulingServer):
    """``xandikos multi-user`` behind a Basic-auth proxy, both on 127.0.0.1.

    Layout (``--defaults``): principal ``/USER/``, calendar home ``/USER/calendars/``,
    schedule-default calendar ``/USER/calendars/calendar/``, inbox ``/USER/inbox``.
    Readiness: Xandikos answers on its own unix socket (in our folder), and the proxy
    challenges with a random realm.
    """

    name = "xandikos"
    layout = UrlLayout(
        principal="{user}/", calendar="{user}/calendars/calendar/", inbox="{user}/inbox/"
    )

    def __init__(self, base_dir: Path, users: Mapping[str, str]) -> None:
        """Prepare (not start) a server whose files live in ``base_dir``."""
        super().__init__(users)
        self.base_dir = Path(base_dir)
        self._token = secrets.token_hex(6)
        self.realm = f"tmcaldav-xandikos-{self._token}"
        self._proxy: _XandikosProxy | None = None
        self._socket_dir: Path | None = None

    @property
    def socket_path(self) -> Path:
        """Xandikos's own unix socket (the proxy's upstream)."""
        assert self._socket_dir is not None
        return self._socket_dir / "xandikos.sock"

    def start(self) -> None:
        """Start Xandikos and the proxy, then create every user's principal and address."""
        if importlib.util.find_spec("xandikos") is None:
            raise ServerUnavailable(
                "the xandikos package is not installed (a test extra: pip install -e '.[test]')"
            )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.base_dir / "xandikos.sock")) < _MAX_SOCKET_PATH:
            self._socket_dir = self.base_dir
        else:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="tmcaldav-xsock-"))
        self._process = ServerProcess("Xandikos", self.base_dir / "xandikos.log")
        failure = self._spawn()
        if failure:
            self.stop()
            raise RuntimeError(f"Xandikos did not start: {failure}")
        self._proxy = _XandikosProxy(self.users, str(self.socket_path), self.realm)
        self._proxy.start()
        self.port = self._proxy.port
        try:
            if not self._challenges_with_our_realm("/"):
                raise RuntimeError(f"the proxy on port {self.port} is not ours")
            self.provision_users()
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """Restart the Xandikos process on the same data (the proxy and port stay).

        Xandikos keeps the set of known principals in memory: after this, a user is
        not a scheduling recipient until they make a request (:meth:`provision_users`).
        """
        assert self._process is not None, "start the server first"
        self._process.stop()
        self.socket_path.unlink(missing_ok=True)
        failure = self._spawn()
        if failure:
            raise RuntimeError(f"Xandikos did not restart: {failure}")

    def stop(self) -> None:
        """Stop the proxy, then SIGTERM Xandikos (SIGKILL if it lingers)."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._process is not None:
            self._process.stop()
        if self._socket_dir is not None and self._socket_dir != self.base_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None

    def _spawn(self) -> str:
        """Start Xandikos; "" once it answers on its socket, else why not."""
        assert self._process is not None
        data = self.base_dir / "data"
        state = self.base_dir / "state"
        state.mkdir(exist_ok=True)
        # $EMAIL would become a calendar address (single-user `serve` reads it); the
        # other variables would change what Xandikos does or where it writes.
        scrub = ("EMAIL", "XDG_DATA_HOME", "XANDIKOS_DUMP_DAV_XML")
        env = {
            k: v for k, v in os.environ.items() if k not in scrub and not k.startswith("XANDIKOS_")
        }
        self._process.spawn(
            [
                sys.executable,
                "-m",
                "xandikos",
                "multi-user",
                "--directory",
                str(data),
                "--state-dir",
                str(state),
                "--defaults",
                "--listen-address",
                str(self.socket_path),
                "--socket-mode",
                "600",
                "--trust-x-remote-user-unix",
                "--no-detect-systemd",
            ],
            cwd=self.base_dir,
            env=env,
        )
        return self._process.wait_until_ready(self._answers_on_socket)

    def _answers_on_socket(self) -> bool:
        if not self.socket_path.exists():
            return False
        connection = _UnixHTTPConnection(str(self.socket_path), timeout=1)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            return response.status == 200 and b"Xandikos" in response.read()
        except OSError:
            return False
        finally:
            connection.close()

    def provision_users(self) -> None:
        """A first request creates each principal (``--defaults``: calendar, inbox);
        a PROPPATCH then gives it its address (multi-user mode has no other source).

        Also what makes a user known again after :meth:`restart`.
        """
        for user in self.users:
            answer = self._propfind_status(user, self.principal_url(user))
            if answer.status != 207:
                raise RuntimeError(f"Xandikos made no principal for {user}: {answer.status}")
            update = (
                '<?xml version="1.0" encoding="utf-8"?>'
                f'<D:propertyupdate xmlns:D="DAV:" xmlns:C="{_CALDAV}"><D:set><D:prop>'
                "<C:calendar-user-address-set>"
                f"<D:href>mailto:{self.address(user)}</D:href>"
                "</C:calendar-user-address-set></D:prop></D:set></D:propertyupdate>"
            )
            answer = self.request(user, "PROPPATCH", self.principal_url(user), update)
            if answer.status != 207 or "200 OK" not in answer.text:
                raise RuntimeError(
                    f"Xandikos refused {user}'s address: {answer.status} {answer.text[:300]}"
                )
            calendar = self._propfind_status(user, self.calendar_url(user))
            if calendar.status != 207:
                raise RuntimeError(f"{user} has no default calendar: {calendar.status}")


def start_xandikos(
    base_dir: Path | str, users: Mapping[str, str] = DEFAULT_USERS
) -> XandikosServer:
    """Start ``xandikos multi-user`` behind a Basic-auth proxy on 127.0.0.1.

    ``users`` maps names to passwords; the first is the organizer. Each gets a
    principal, a calendar (its schedule-default), an inbox and the address
    ``mailto:USER@example.org``. Raises :class:`ServerUnavailable` when the xandikos
    package is not installed.
    """
    server = XandikosServer(Path(base_dir), users)
    server.start()
    return server


_STARTERS: dict[str, Callable[[Path, Mapping[str, str]], SchedulingServer]] = {
    "cyrus": start_cyrus,
    "xandikos": start_xandikos,
}


def start_scheduling_server(
    name: str, base_dir: Path | str, users: Mapping[str, str] = DEFAULT_USERS
) -> SchedulingServer:
    """Start the server called ``name`` (one of :data:`SCHEDULING_SERVERS`)."""
    return _STARTERS[name](Path(base_dir), users)


# ---- helpers ---------------------------------------------------------------------------


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether a user (uid, gid) may enter ``path`` and every folder above it."""
    for folder in [path.resolve(), *path.resolve().parents]:
        mode = folder.stat()
        if mode.st_uid == uid:
            needed = stat.S_IXUSR
        elif mode.st_gid == gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not mode.st_mode & needed:
            return False
    return True


def processes_under(folder: Path) -> list[int]:
    """Process ids with an argument inside ``folder`` (from /proc), never our own."""
    prefix = str(folder).encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(prefix) for arg in args):
            found.append(int(entry.name))
    return found


# ---- pytest fixtures -------------------------------------------------------------------


def _start_or_skip(name: str, tmp_path_factory: pytest.TempPathFactory) -> SchedulingServer:
    try:
        return start_scheduling_server(name, tmp_path_factory.mktemp(name), DEFAULT_USERS)
    except ServerUnavailable as e:
        pytest.skip(f"the {name} scheduling tests need {name}: {e}")


@pytest.fixture(scope="session", name="cyrus_server")
def cyrus_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CyrusServer]:
    """Cyrus CalDAV with :data:`DEFAULT_USERS` (skipped, saying why, if not installed)."""
    server = _start_or_skip("cyrus", tmp_path_factory)
    assert isinstance(server, CyrusServer)
    yield server
    server.stop()


@pytest.fixture(scope="session", name="xandikos_server")
def xandikos_server_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[XandikosServer]:
    """Xandikos multi-user with :data:`DEFAULT_USERS` (skipped if not installed)."""
    server = _start_or_skip("xandikos", tmp_path_factory)
    assert isinstance(server, XandikosServer)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=SCHEDULING_SERVERS, name="scheduling_server")
def scheduling_server_fixture(request: pytest.FixtureRequest) -> SchedulingServer:
    """Each scheduling server in turn (one per session, shared with the fixtures above):
    the organizer ``organizer`` and students ``student1``..``student4``."""
    server: SchedulingServer = request.getfixturevalue(f"{request.param}_server")
    return server
