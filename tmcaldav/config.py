"""The daemon's TOML configuration, read into frozen dataclasses.

Every problem in a file is reported at once, each with its key path, so an
administrator fixes the whole file in one go. Secrets are read only when asked for.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import subprocess
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tmcaldav.domain import SuggestionKind, normalise_address, values
from tmcaldav.errors import UsageError
from tmcaldav.words import plural

DEFAULT_CONFIG = "daemon.toml"
# The longest timeout a config may set (an hour): longer ones are typos, and a stop
# request must not wait that long.
MAX_TIMEOUT = 3600.0
CONFIG_ENV = "TMCALDAV_CONFIG"


class ConfigError(UsageError):
    """A configuration that cannot be used; `problems` lists every reason, one per line."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def report(self) -> str:
        """The problems as lines an administrator can act on."""
        lines = [f"{self.path}: {plural(len(self.problems), 'problem')} in the configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class SecretError(UsageError):
    """A password source that cannot be read (missing file, unsafe mode, failed command)."""


@dataclass(frozen=True)
class PasswordSource:
    """Where a password comes from: exactly one of a file, a command (argv), an env var."""

    password_file: str | None = None
    password_command: tuple[str, ...] | None = None
    password_env: str | None = None

    @property
    def configured(self) -> bool:
        """True when any source is set."""
        return any(
            x is not None for x in (self.password_file, self.password_command, self.password_env)
        )

    def read(self) -> str:
        """Read the password. Raises SecretError naming the source (never the secret)."""
        if self.password_file is not None:
            return read_password_file(self.password_file)
        if self.password_command is not None:
            return run_secret_command(self.password_command, "password_command")
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise SecretError(
                    f"password_env: environment variable {self.password_env} is not set"
                )
            return value
        return ""


def run_secret_command(argv: tuple[str, ...], key: str) -> str:
    """Run a command that prints a secret (a password, an access token) and return it.

    An argv list, never a shell string. SecretError names the key and the program, never
    what it printed; trailing line breaks are dropped.
    """
    if not argv:
        raise SecretError(f"{key} is empty")
    try:
        # An argv list, never a shell string: nothing in it is interpreted.
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SecretError(f"{key} {argv[0]!r} failed: {e}") from e
    if done.returncode != 0:
        raise SecretError(f"{key} {argv[0]!r} exited {done.returncode}")
    secret = done.stdout.rstrip("\r\n")
    if not secret.strip():
        raise SecretError(f"{key} {argv[0]!r} printed nothing")
    return secret


def read_password_file(path: str) -> str:
    """Read a password file, refusing one that group or others can read."""
    # systemd's LoadCredential hands the file over in $CREDENTIALS_DIRECTORY.
    p = Path(os.path.expandvars(path))
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise SecretError(f"password_file {p}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"password_file {p} is readable by group or others (mode {stat.filemode(mode)}); "
            f"run: chmod 600 {p}"
        )
    return p.read_text(encoding="utf-8").rstrip("\r\n")


@dataclass(frozen=True, kw_only=True)
class ServerLogin:
    """The keys of every section that logs in to a server ([caldav], [smtp], [imap]): the
    password source (at most one of the three, see `PasswordSource`), the CA file that
    vouches for the server besides the system's, and the seconds one request may take."""

    password_file: str | None = None
    password_command: tuple[str, ...] | None = None
    password_env: str | None = None
    tls_ca_file: str | None = None
    timeout: float = 30.0

    @property
    def password(self) -> PasswordSource:
        """The password source of this section."""
        return PasswordSource(self.password_file, self.password_command, self.password_env)


@dataclass(frozen=True)
class StoreConfig:
    """[store]: where the enrollment store lives."""

    url: str = "sqlite:///tmcaldav.db"


@dataclass(frozen=True)
class CaldavConfig(ServerLogin):
    """[caldav]: the CalDAV server and the calendar the sessions are published in.

    Its ``timeout`` bounds one whole request: connect, send, and the complete answer.
    """

    url: str
    username: str
    calendar: str | None = None
    # The login method: "basic" or "digest" with a password source, or "bearer" with a
    # token_command (an argv list printing an access token, run again after a 401).
    auth: str = "basic"
    token_command: tuple[str, ...] | None = None
    # A server profile (tmcaldav.caldav.profiles) when detection guesses wrong.
    server_profile: str | None = None
    # Plain http:// to a host other than this machine sends the password in clear
    # text: refused unless set to true (and then warned about at every start).
    allow_insecure_http: bool = False
    # Server mode: read the REPLYs the server leaves in the organizer's scheduling inbox
    # (answer times, students' comments) and delete them once applied.
    read_schedule_inbox: bool = True

    def fetch_token(self) -> str:
        """Run token_command and return the access token it prints (SecretError if not)."""
        if self.token_command is None:
            raise SecretError("caldav.token_command is not set")
        return run_secret_command(self.token_command, "caldav.token_command")

    @property
    def insecure(self) -> bool:
        """True when the URL is plain http:// to a host other than this machine."""
        parts = urlsplit(self.url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")


@dataclass(frozen=True)
class SchedulingConfig:
    """[scheduling]: who organises, and who delivers invitations."""

    organizer_email: str
    mode: str = "server"
    organizer_name: str | None = None
    # The zone of sessions added without --tz (and of times given without an offset).
    timezone: str = "UTC"


@dataclass(frozen=True)
class DaemonConfig:
    """[daemon]: the loop."""

    poll_interval: float = 60.0
    backoff_max: float = 900.0
    lock_file: str | None = None
    # `run` waits for the store lock instead of exiting 75, and takes over when the
    # active daemon dies (PostgreSQL only: see README, "More than one machine").
    standby: bool = False
    # Seconds of silence after which a standby takes over from the active daemon;
    # None: two poll intervals.
    takeover_after: float | None = None

    @property
    def takeover_seconds(self) -> float:
        """`takeover_after`, or two poll intervals when it is not set."""
        return self.takeover_after if self.takeover_after is not None else 2 * self.poll_interval


@dataclass(frozen=True)
class PluginsConfig:
    """[plugins]: which plugins load; `settings` holds the [plugins.NAME] tables."""

    enable: tuple[str, ...] = ("waitlist", "followup", "noshow", "reschedule")
    disable: tuple[str, ...] = ()
    plugin_dirs: tuple[str, ...] = ()
    # Seconds one hook call may take before it is abandoned and counted as a failure.
    hook_timeout: float = 10.0
    # Failures in a row of one plugin on one event before it is parked for that event.
    max_attempts: int = 5
    settings: types.MappingProxyType[str, Any] = field(
        default_factory=lambda: types.MappingProxyType({})
    )


@dataclass(frozen=True)
class SuggestionsConfig:
    """[suggestions]: which kinds are applied without a human."""

    auto_apply: tuple[str, ...] = ()


@dataclass(frozen=True)
class InvitationConfig:
    """[invitation]: the invitation's text, when it goes out, and how often to remind.

    `subject`, `body` and `waitlist_body` are templates with named fields
    (`tmcaldav.invitations.FIELDS`); None keeps tmcaldav's own text.
    """

    subject: str | None = None
    body: str | None = None
    # For a student invited from the waitlist (a seat has opened).
    waitlist_body: str | None = None
    # Days before the start the daemon invites the enrolled students; None: never by itself.
    send_days_before: int | None = None
    # Seconds before the same student is reminded again (`remind --force` overrides).
    remind_min_interval: float = 86400.0


@dataclass(frozen=True)
class SmtpConfig(ServerLogin):
    """[smtp]: outgoing iMIP mail."""

    host: str
    port: int = 587
    security: str = "starttls"
    username: str | None = None


@dataclass(frozen=True)
class ImapConfig(ServerLogin):
    """[imap]: the organizer mailbox that receives iMIP REPLYs."""

    host: str
    username: str
    port: int = 993
    security: str = "tls"
    folder: str = "INBOX"
    processed_folder: str = "tmcaldav-processed"
    trust_sent_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class MaildirConfig:
    """[maildir]: a local Maildir that receives iMIP REPLYs."""

    path: str
    # A Maildir++ subfolder (".NAME") that processed messages are moved into.
    processed_folder: str = "tmcaldav-processed"
    trust_sent_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebConfig:
    """[web]: the web interface (`tmcaldav web`)."""

    # host:port to listen on; a reverse proxy in front brings TLS.
    listen: str = "127.0.0.1:8080"
    # The address people use (https://training.example.org/tmcaldav/): links, the
    # cookie's path, and Secure cookies when it is https.
    base_url: str | None = None
    # The key that signs session cookies; created (mode 600) when missing. Default:
    # web.secret beside the config file.
    secret_file: str | None = None
    # Single sign-on: the header a reverse proxy sets to the logged-in user's name,
    # believed only from the addresses or networks in trusted_proxies.
    trusted_user_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    # A public page for students, on its own address (kept for the answer links).
    public_url: str | None = None
    public_listen: str | None = None

    def secret_path(self, config_path: str) -> Path:
        """Where the cookie key lives."""
        if self.secret_file is not None:
            return Path(os.path.expandvars(self.secret_file))
        return Path(config_path).resolve().parent / "web.secret"


@dataclass(frozen=True)
class Config:
    """The whole configuration. `path` is the file it came from."""

    store: StoreConfig
    scheduling: SchedulingConfig
    daemon: DaemonConfig
    plugins: PluginsConfig
    suggestions: SuggestionsConfig
    invitation: InvitationConfig = field(default_factory=InvitationConfig)
    caldav: CaldavConfig | None = None
    smtp: SmtpConfig | None = None
    imap: ImapConfig | None = None
    maildir: MaildirConfig | None = None
    web: WebConfig = field(default_factory=WebConfig)
    path: str = DEFAULT_CONFIG


SUGGESTION_KINDS = values(SuggestionKind)
SCHEDULING_MODES = ("server", "imip")
AUTH_METHODS = ("basic", "digest", "bearer")
SECURITY_MODES = ("starttls", "tls", "none")

_SECTIONS: dict[str, type] = {
    "store": StoreConfig,
    "caldav": CaldavConfig,
    "scheduling": SchedulingConfig,
    "daemon": DaemonConfig,
    "plugins": PluginsConfig,
    "suggestions": SuggestionsConfig,
    "invitation": InvitationConfig,
    "smtp": SmtpConfig,
    "imap": ImapConfig,
    "maildir": MaildirConfig,
    "web": WebConfig,
}
_REQUIRED_SECTIONS = ("store", "scheduling")


def config_path(explicit: str | None) -> str:
    """The config file to use: -c, else $TMCALDAV_CONFIG, else ./daemon.toml."""
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raises ConfigError listing every problem."""
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(
            path, [f"cannot read the file ({e.strerror}); pass -c PATH or set {CONFIG_ENV}"]
        ) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(path, [f"not valid TOML: {e}"]) from e
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: str = DEFAULT_CONFIG) -> Config:
    """Validate a parsed TOML document; raises ConfigError listing every problem."""
    read = _parse(data)
    if read.problems:
        raise ConfigError(path, read.problems)
    return Config(**{k: v for k, v in read.sections.items() if v is not None}, path=path)


@dataclass
class ConfigRead:
    """A document read as far as it goes: every problem, and each section built with
    stand-ins for the values it refused (named in `refused` as "section.key")."""

    sections: dict[str, Any]
    problems: list[str]
    refused: set[str]

    def usable(self, section: str, *keys: str) -> Any:
        """The section, when it was read and none of `keys` was refused; else None."""
        built = self.sections.get(section)
        if built is None or any(f"{section}.{k}" in self.refused for k in keys):
            return None
        return built


def _parse(data: dict[str, Any]) -> ConfigRead:
    problems: list[str] = []
    for name in data:
        if name not in _SECTIONS:
            problems.append(f"[{name}]: unknown section (known: {', '.join(_SECTIONS)})")
    for name in _REQUIRED_SECTIONS:
        if name not in data:
            problems.append(f"[{name}]: missing section")
    sections: dict[str, Any] = {}
    # "section.key" of values refused already: their stand-ins are not checked again,
    # so every problem is reported once, and all of them in one pass.
    refused: set[str] = set()
    for name, cls in _SECTIONS.items():
        if name not in data:
            continue
        table = data[name]
        if not isinstance(table, dict):
            problems.append(f"{name}: must be a table [{name}]")
            continue
        if cls is PluginsConfig:
            table = dict(table)
            settings = {k: table.pop(k) for k in list(table) if isinstance(table[k], dict)}
            built = _build(cls, name, table, problems, refused)
            built = dataclasses.replace(built, settings=types.MappingProxyType(settings))
        else:
            built = _build(cls, name, table, problems, refused)
        sections[name] = built
    for name in ("store", "daemon", "plugins", "suggestions", "invitation", "web"):
        if name not in data:
            sections[name] = _SECTIONS[name]()
    checked: list[str] = []
    _check_values(sections, checked)
    problems += [p for p in checked if _problem_key(p) not in refused]
    return ConfigRead(sections, problems, refused)


def _problem_key(problem: str) -> str:
    """The "section.key" a problem line is about."""
    return problem.split(":", 1)[0].split(" ", 1)[0]


def _build(
    cls: type, section: str, table: dict[str, Any], problems: list[str], refused: set[str]
) -> Any:
    """The section's dataclass; a refused or missing value is reported in `problems`,
    named in `refused`, and replaced by a stand-in so the other values can be checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "settings"}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            problems.append(f"{section}.{key}: unknown key (known: {', '.join(fields)})")
            continue
        ok, converted = _convert(value, hints[key])
        if not ok:
            problems.append(f"{section}.{key}: expected {_describe(hints[key])}, got {value!r}")
            refused.add(f"{section}.{key}")
        else:
            values[key] = converted
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name in values:
            continue
        if f"{section}.{name}" in refused and not required:
            continue  # the default stands in
        if required:
            if name not in table:
                problems.append(f"{section}.{name}: missing key")
            refused.add(f"{section}.{name}")
            values[name] = _stand_in(hints[name])
    return cls(**values)


def _stand_in(hint: Any) -> Any:
    """A value of the right type for a refused required key (never used: it is refused)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if args else hint
    if typing.get_origin(hint) is tuple:
        return ()
    return {str: "", int: 0, float: 0.0, bool: False}.get(hint)


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            if arg is type(None):
                continue
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, None
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return False, None
        return True, tuple(value)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, None
        return True, float(value)
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if hint is str:
        return isinstance(value, str), value
    return False, None


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, str(hint)
    )


def _check_values(s: dict[str, Any], problems: list[str]) -> None:
    store: StoreConfig | None = s.get("store")
    if store is not None:
        try:
            from sqlalchemy.engine import make_url

            make_url(store.url)
        except Exception:
            problems.append(f"store.url: not a database URL: {store.url!r}")
    caldav: CaldavConfig | None = s.get("caldav")
    if caldav is not None:
        _check_http_url("caldav.url", caldav.url, problems)
        _check_login(caldav, problems)
        if caldav.tls_ca_file is not None:
            _check_ca_file("caldav.tls_ca_file", caldav.tls_ca_file, problems)
        if not 0 < caldav.timeout <= MAX_TIMEOUT:
            problems.append(f"caldav.timeout: must be between 0 and {MAX_TIMEOUT:g} seconds")
        if caldav.insecure and not caldav.allow_insecure_http and urlsplit(caldav.url).hostname:
            problems.append(
                f"caldav.url: plain http:// to {urlsplit(caldav.url).hostname} would send the "
                "password in clear text over the network: use https://, or set "
                "[caldav] allow_insecure_http = true if the network is trusted"
            )
    sched: SchedulingConfig | None = s.get("scheduling")
    if sched is not None:
        if sched.mode not in SCHEDULING_MODES:
            problems.append(f"scheduling.mode: must be one of {', '.join(SCHEDULING_MODES)}")
        if not _looks_like_email(sched.organizer_email):
            problems.append(
                f"scheduling.organizer_email: not an e-mail address: {sched.organizer_email!r}"
            )
        try:
            check_timezone(sched.timezone)
        except ValueError as e:
            problems.append(f"scheduling.timezone: {e}")
        if sched.mode == "imip" and s.get("smtp") is None:
            problems.append('scheduling.mode = "imip" needs an [smtp] section to send invitations')
    daemon: DaemonConfig | None = s.get("daemon")
    if daemon is not None:
        if daemon.poll_interval <= 0:
            problems.append("daemon.poll_interval: must be positive (seconds)")
        if daemon.backoff_max < daemon.poll_interval:
            problems.append("daemon.backoff_max: must be at least daemon.poll_interval")
        if daemon.takeover_after is not None and daemon.takeover_after <= 0:
            problems.append("daemon.takeover_after: must be positive (seconds)")
    plugins: PluginsConfig | None = s.get("plugins")
    if plugins is not None:
        for d in plugins.plugin_dirs:
            if not Path(d).is_dir():
                problems.append(f"plugins.plugin_dirs: no such folder {d!r}")
        if not 0 < plugins.hook_timeout <= MAX_TIMEOUT:
            problems.append(
                f"plugins.hook_timeout: must be between 0 and {MAX_TIMEOUT:g} seconds"
            )
        if not 1 <= plugins.max_attempts <= 1000:
            problems.append("plugins.max_attempts: must be between 1 and 1000")
    sugg: SuggestionsConfig | None = s.get("suggestions")
    if sugg is not None:
        for kind in sugg.auto_apply:
            if kind not in SUGGESTION_KINDS:
                problems.append(
                    f"suggestions.auto_apply: unknown kind {kind!r} "
                    f"(known: {', '.join(SUGGESTION_KINDS)})"
                )
    invitation: InvitationConfig | None = s.get("invitation")
    if invitation is not None:
        from tmcaldav.invitations import check_template

        for key in ("subject", "body", "waitlist_body"):
            text = getattr(invitation, key)
            if text is not None:
                problems += [f"invitation.{key}: {p}" for p in check_template(key, text)]
        if invitation.send_days_before is not None and invitation.send_days_before < 0:
            problems.append("invitation.send_days_before: must be 0 or more (days)")
        if not 0 <= invitation.remind_min_interval <= 366 * 86400:
            problems.append(
                "invitation.remind_min_interval: must be between 0 and a year (in seconds)"
            )
    for name in ("smtp", "imap"):
        sec = s.get(name)
        if sec is None:
            continue
        if sec.security not in SECURITY_MODES:
            problems.append(f"{name}.security: must be one of {', '.join(SECURITY_MODES)}")
        elif sec.security == "none" and not is_loopback(sec.host):
            problems.append(f'{name}.security = "none" is allowed only for a loopback host')
        if not 0 < sec.port < 65536:
            problems.append(f"{name}.port: must be between 1 and 65535")
        if not 0 < sec.timeout <= MAX_TIMEOUT:
            problems.append(f"{name}.timeout: must be between 0 and {MAX_TIMEOUT:g} seconds")
        if sec.tls_ca_file is not None:
            _check_ca_file(f"{name}.tls_ca_file", sec.tls_ca_file, problems)
        _check_password(name, sec.password, problems, required=False)
    if s.get("imap") is not None and s.get("maildir") is not None:
        problems.append("[imap] and [maildir]: choose one mailbox for incoming replies")
    web: WebConfig | None = s.get("web")
    if web is not None:
        _check_web(web, problems)


def parse_listen(value: str) -> tuple[str, int]:
    """host:port (an IPv6 host in brackets) as (host, port); ValueError saying why."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port like 127.0.0.1:8080, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, like [::1]:8080, not {value!r}")
    return host, int(port)


def _check_web(web: WebConfig, problems: list[str]) -> None:
    import ipaddress
    import re

    for key in ("listen", "public_listen"):
        value = getattr(web, key)
        if value is not None:
            try:
                parse_listen(value)
            except ValueError as e:
                problems.append(f"web.{key}: {e}")
    for key in ("base_url", "public_url"):
        value = getattr(web, key)
        if value is not None:
            _check_http_url(f"web.{key}", value, problems)
            parts = urlsplit(value)
            if parts.query or parts.fragment:
                problems.append(f"web.{key}: no query or fragment, please: {value!r}")
    if web.trusted_user_header is not None:
        if not re.fullmatch(r"[A-Za-z0-9-]+", web.trusted_user_header):
            problems.append(
                f"web.trusted_user_header: not a header name: {web.trusted_user_header!r}"
            )
        if not web.trusted_proxies:
            problems.append(
                "web.trusted_user_header needs web.trusted_proxies: the reverse proxies' "
                "addresses (anyone else could send the header)"
            )
    for proxy in web.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(
                f"web.trusted_proxies: not an IP address or network: {proxy!r} "
                "(e.g. 127.0.0.1 or 10.0.0.0/24)"
            )


def _check_login(caldav: CaldavConfig, problems: list[str]) -> None:
    """The login method and its secret go together: a password for basic and digest, a
    token command for bearer, never both."""
    from tmcaldav.caldav.profiles import PROFILES

    if caldav.server_profile is not None and caldav.server_profile not in PROFILES:
        problems.append(
            f"caldav.server_profile: unknown profile {caldav.server_profile!r} "
            f"(known: {', '.join(PROFILES)}; leave it out to detect the server)"
        )
    if caldav.auth not in AUTH_METHODS:
        problems.append(f"caldav.auth: must be one of {', '.join(AUTH_METHODS)}")
        return
    if caldav.auth == "bearer":
        if caldav.token_command is None:
            problems.append(
                'caldav.auth = "bearer" needs token_command, a command printing an access '
                'token, e.g. token_command = ["oauth2l", "fetch", "--scope", "calendar"]'
            )
        elif not caldav.token_command:
            problems.append("caldav.token_command: must not be empty")
        if caldav.password.configured:
            problems.append(
                'caldav.auth = "bearer" logs in with the token from token_command: remove '
                "password_file, password_command and password_env"
            )
        return
    if caldav.token_command is not None:
        problems.append(
            f'caldav.token_command is used only with auth = "bearer" (auth is {caldav.auth!r}): '
            'remove it, or set auth = "bearer"'
        )
    _check_password("caldav", caldav.password, problems, required=True)
    if not caldav.password.configured:
        problems[-1] += f' (auth = "{caldav.auth}" logs in with a password)'


def is_loopback(host: str) -> bool:
    """True for this machine's own addresses (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_ca_file(key: str, path: str, problems: list[str]) -> None:
    from tmcaldav.tls import check_ca_file

    problem = check_ca_file(path)
    if problem is not None:
        problems.append(f"{key}: {problem}")


def credential_problems(config: Config) -> list[str]:
    """Sections that log in without a way to get the password (for `check-config`)."""
    # [caldav]'s login is checked with its `auth` (see _check_login).
    problems = []
    if config.smtp is not None and config.smtp.username and not config.smtp.password.configured:
        problems.append(
            f"smtp: username {config.smtp.username!r} but no password source; set one of "
            "password_file, password_command, password_env (or remove username)"
        )
    if config.imap is not None and not config.imap.password.configured:
        problems.append(
            "imap: no password source; set one of password_file, password_command, password_env"
        )
    return problems


def _check_http_url(key: str, url: str, problems: list[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{key}: not an http(s) URL: {url!r}")


def _check_password(
    section: str, source: PasswordSource, problems: list[str], *, required: bool
) -> None:
    set_ = [
        n
        for n, v in (
            ("password_file", source.password_file),
            ("password_command", source.password_command),
            ("password_env", source.password_env),
        )
        if v is not None
    ]
    if len(set_) > 1:
        problems.append(f"{section}: set only one of {', '.join(set_)}")
    elif required and not set_:
        problems.append(f"{section}: set one of password_file, password_command, password_env")
    if source.password_command is not None and not source.password_command:
        problems.append(f"{section}.password_command: must not be empty")


def _looks_like_email(value: str) -> bool:
    try:
        normalise_address(value)
    except ValueError:
        return False
    return True


def check_config_file(path: str) -> ConfigRead:
    """Every problem of a config file in one pass, for `tmcaldav check-config`: syntax,
    keys, types, values, whether each password source can be read, and whether the
    store's folder exists."""
    try:
        raw = Path(path).read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        return ConfigRead({}, [f"cannot read the file ({e.strerror})"], set())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return ConfigRead({}, [f"not valid TOML: {e}"], set())
    read = _parse(data)
    for name in ("caldav", "smtp", "imap"):
        section = read.usable(name, "password_file", "password_command", "password_env")
        if section is None or not section.password.configured:
            continue
        if any(p.startswith(f"{name}: set only one of") for p in read.problems):
            continue
        try:
            section.password.read()
        except SecretError as e:
            read.problems.append(f"{name}: {e}")
    store = read.usable("store", "url")
    daemon = read.usable("daemon", "standby")
    if store is not None and daemon is not None and daemon.standby:
        refusal = standby_refusal(store.url)
        if refusal:
            read.problems.append(f"daemon.standby: {refusal}")
    if store is not None and not any(p.startswith("store.url") for p in read.problems):
        from sqlalchemy.engine import make_url

        url = make_url(store.url)
        database = url.database if url.get_backend_name() == "sqlite" else None
        if database and database != ":memory:":
            folder = Path(database).expanduser().parent
            if not folder.is_dir():
                read.problems.append(
                    f"store.url: the folder {folder} does not exist; create it (mode 700) "
                    "or change the URL"
                )
    return read


def check_timezone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name; ValueError with the name when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from e


def standby_refusal(store_url: str) -> str | None:
    """Why a standby daemon cannot work on the store at `store_url`; None when it can.

    A standby takes over from a daemon on another machine, so the store and its lock
    must be reachable from both: PostgreSQL. A SQLite file and its lock live on one
    machine, where systemd's Restart= already is the failover.
    """
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(store_url).get_backend_name()
    except Exception:
        return None  # store.url itself is reported as not a database URL
    if backend == "postgresql":
        return None
    return (
        f"a standby daemon needs a PostgreSQL store, and this one is {backend}: a "
        f"{backend} store lives on one machine, so a standby could only wait on the "
        "machine it should replace; use a PostgreSQL [store] url, or run one daemon "
        "and let systemd restart it (Restart=on-failure)"
    )
