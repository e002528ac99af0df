"""Shared fixtures: a store on SQLite and on a real PostgreSQL, and a CLI runner.

The Radicale fixtures come from tmcaldav.testing (a pytest plugin of the package).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.postgres import PostgresServer, PostgresUnavailable, start_postgres
from tmcaldav.app import open_store
from tmcaldav.cli import cli
from tmcaldav.store import Store

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; each test gets its own database."""
    try:
        server = start_postgres()
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL store tests need PostgreSQL: {e}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"test_{next(_counter)}")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An upgraded store, with the checks the application installs (`open_store`)."""
    s = open_store(store_url)
    s.upgrade()
    yield s
    s.close()


class Cli:
    """Runs `tmcaldav` through click's runner with a config file."""

    def __init__(self, config: Path):
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(cli, ["-c", str(self.config), *args], input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        """Run and require exit 0."""
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
        return result


def write_config(path: Path, store_url: str, extra: str = "") -> Path:
    """A minimal config file for a store, with `extra` TOML appended."""
    path.write_text(
        f'[store]\nurl = "{store_url}"\n\n'
        '[scheduling]\norganizer_email = "training@example.org"\n'
        'organizer_name = "Training Office"\ntimezone = "Europe/Berlin"\n' + extra
    )
    return path


@pytest.fixture
def tm(tmp_path: Path, store_url: str) -> Cli:
    """The CLI on a fresh, upgraded store (SQLite and PostgreSQL)."""
    runner = Cli(write_config(tmp_path / "daemon.toml", store_url))
    runner.ok("db", "upgrade")
    return runner


@pytest.fixture
def tm_sqlite(tmp_path: Path) -> Cli:
    """The CLI on a fresh SQLite file store."""
    runner = Cli(write_config(tmp_path / "daemon.toml", f"sqlite:///{tmp_path / 'store.db'}"))
    runner.ok("db", "upgrade")
    return runner


@pytest.fixture
def imap_server(tls_files: object) -> Iterator[object]:
    """Dovecot on 127.0.0.1 with the user ``training@example.org`` (password
    ``pw-imap``); skipped, saying why, where Dovecot is not installed."""
    from tests.dovecot import DovecotServer, ImapUnavailable
    from tmcaldav.testing_mail import TlsFiles

    assert isinstance(tls_files, TlsFiles)
    server = DovecotServer({"training@example.org": "pw-imap"}, tls=tls_files)
    try:
        server.start()
    except ImapUnavailable as e:
        pytest.skip(f"IMAP tests need Dovecot: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test item (`item.rep_call`), so a fixture can see
    in its teardown that the test failed (the browser tests save a screenshot then)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
