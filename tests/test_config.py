"""Config loading: the shipped example, every problem at once, password sources."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tmcaldav.config import ConfigError, PasswordSource, SecretError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads() -> None:
    config = load_config(ROOT / "daemon.example.toml")
    assert config.scheduling.mode == "server"
    assert config.caldav is not None and config.caldav.calendar == "trainings"
    assert config.caldav.password.password_file == "/etc/tmcaldav/caldav.pw"
    assert config.plugins.enable == ("waitlist", "followup", "noshow", "reschedule")
    assert config.plugins.settings["followup"] == {"days_before": 3}
    assert config.daemon.poll_interval == 60.0


def test_minimal_config_has_defaults() -> None:
    config = parse_config(
        {"store": {"url": "sqlite:///x.db"}, "scheduling": {"organizer_email": "t@example.org"}}
    )
    assert config.caldav is None
    assert config.daemon.poll_interval == 60.0
    assert config.suggestions.auto_apply == ()
    assert config.scheduling.timezone == "UTC"


def config_problems(data: dict[str, Any], path: str | None = None) -> list[str]:
    """What parse_config refuses `data` for (it must refuse it)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, path)
    return info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "store": {"url": "sqlite:///x.db", "colour": "blue"},
        "caldav": {"url": "ftp://dav", "username": 3, "password_env": "X", "password_file": "f"},
        "scheduling": {
            "organizer_email": "nobody",
            "mode": "carrier-pigeon",
            "timezone": "Mars/Base",
        },
        "daemon": {"poll_interval": "often"},
        "suggestions": {"auto_apply": ["nuke"]},
        "extra": {},
    }
    problems = config_problems(data, "t.toml")
    report = "\n".join(problems)
    for expected in (
        "[extra]: unknown section",
        "store.colour: unknown key",
        "caldav.username: expected a string, got 3",
        "daemon.poll_interval: expected a number",
        "scheduling.mode: must be one of server, imip",
        "scheduling.organizer_email: not an e-mail address",
        "scheduling.timezone: unknown time zone 'Mars/Base'",
        "suggestions.auto_apply: unknown kind 'nuke'",
    ):
        assert expected in report
    # caldav's username failed its type check; its URL and passwords are checked all the
    # same, so one run lists every problem (once each).
    assert "caldav.url: not an http(s) URL" in report
    assert "caldav: set only one of password_file, password_env" in report
    assert len(problems) == 10


def test_value_checks_and_missing_keys() -> None:
    data = {
        "store": {"url": "::not a url::"},
        "caldav": {"url": "ftp://dav", "password_env": "X", "password_file": "f"},
        "scheduling": {},
    }
    problems = config_problems(data)
    assert "caldav.username: missing key" in problems
    assert "scheduling.organizer_email: missing key" in problems
    assert any(p.startswith("store.url: not a database URL") for p in problems)


def test_bad_values_inside_valid_types() -> None:
    data = {
        "store": {"url": "sqlite:///x.db"},
        "caldav": {"url": "ftp://dav", "username": "u", "password_env": "X", "password_file": "f"},
        "scheduling": {"organizer_email": "t@example.org", "mode": "imip"},
        "smtp": {"host": "mail.example.org", "security": "none"},
    }
    problems = config_problems(data)
    assert "caldav.url: not an http(s) URL: 'ftp://dav'" in problems
    assert "caldav: set only one of password_file, password_env" in problems
    assert 'smtp.security = "none" is allowed only for a loopback host' in problems


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[store\nurl = ")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith("not valid TOML")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "cannot read the file" in info.value.problems[0]


def test_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(SecretError) as info:
        PasswordSource(password_file=str(secret)).read()
    assert "chmod 600" in str(info.value)
    assert "s3cret" not in str(info.value)
    secret.chmod(0o600)
    assert PasswordSource(password_file=str(secret)).read() == "s3cret"


def test_password_command_is_an_argv_list() -> None:
    # The argument would be expanded by a shell; run without one it comes back verbatim.
    argv = (sys.executable, "-c", "import sys; print(sys.argv[1])", "$HOME;echo no")
    assert PasswordSource(password_command=argv).read() == "$HOME;echo no"
    with pytest.raises(SecretError):
        PasswordSource(password_command=(sys.executable, "-c", "raise SystemExit(3)")).read()


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_TEST_PW", "from-env")
    assert PasswordSource(password_env="TM_TEST_PW").read() == "from-env"
    monkeypatch.delenv("TM_TEST_PW")
    with pytest.raises(SecretError, match="TM_TEST_PW is not set"):
        PasswordSource(password_env="TM_TEST_PW").read()


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from tmcaldav.config import config_path

    monkeypatch.delenv("TMCALDAV_CONFIG", raising=False)
    assert config_path(None) == "daemon.toml"
    monkeypatch.setenv("TMCALDAV_CONFIG", "/etc/tmcaldav/daemon.toml")
    assert config_path(None) == "/etc/tmcaldav/daemon.toml"
    assert config_path("x.toml") == "x.toml"
    assert os.environ["TMCALDAV_CONFIG"]


TEN_MISTAKES = """
[store]
url = "sqlite:///{missing}/store.db"
colour = "blue"

[caldav]
url = "ftp://dav.example.org/"
username = 3
password_file = "{pw}"

[scheduling]
mode = "carrier-pigeon"
organizer_email = "training@@example.org"
timezone = "Mars/Olympus"

[daemon]
poll_interval = -5

[plugins]
enable = ["waitlist", "waitlsit"]

[suggestions]
auto_apply = ["cancel_everything"]
"""


def test_check_config_reports_eleven_mistakes_in_one_run(tmp_path: Path) -> None:
    from tests.conftest import Cli

    pw = tmp_path / "caldav.pw"
    pw.write_text("secret")
    pw.chmod(0o644)  # readable by others: refused
    config = tmp_path / "daemon.toml"
    config.write_text(TEN_MISTAKES.format(missing=tmp_path / "nowhere", pw=pw))
    result = Cli(config)("check-config")
    assert result.exit_code == 2
    expected = [
        "store.colour: unknown key",
        "caldav.url: not an http(s) URL",
        "caldav.username: expected a string",
        "scheduling.mode: must be one of",
        "scheduling.organizer_email: not an e-mail address",
        "scheduling.timezone: unknown time zone",
        "daemon.poll_interval: must be positive",
        "suggestions.auto_apply: unknown kind 'cancel_everything'",
        "caldav: ",  # the password file readable by others
        "plugins.enable: waitlsit",
    ]
    for line in expected:
        assert line in result.output, (line, result.output)
    assert "11 problems in the configuration" in result.output


def test_check_config_names_a_missing_store_folder(tmp_path: Path) -> None:
    from tests.conftest import Cli, write_config

    config = write_config(tmp_path / "daemon.toml", f"sqlite:///{tmp_path / 'no' / 's.db'}")
    result = Cli(config)("check-config")
    assert result.exit_code == 2
    assert f"store.url: the folder {tmp_path / 'no'} does not exist" in result.output
