"""The enrollment store's engine: transactions, schema upgrades, and its errors.

Services open one transaction per unit of work with `Store.transaction()`; it commits
at the end or rolls back on any error, so the store is never left half-written.
Checks that every unit of work must pass are given to the store by whoever builds it
(`checks`): the store knows no layer above it. The composition root
(`tmcaldav.app.open_store`) gives it the suggestion premises.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from tmcaldav.errors import EXIT_USAGE, TmcaldavError
from tmcaldav.files import create_private_file
from tmcaldav.store.changes import watch_changes

log = logging.getLogger(__name__)


class StoreError(TmcaldavError):
    """A unit of work failed in the store (locked, a conflict); nothing of it was kept."""


class StoreUnavailable(StoreError):
    """The store cannot be opened, or its schema is missing or old; the message says
    what to do. A setup problem, unlike a failed unit of work."""

    exit_code = EXIT_USAGE


class NotFoundError(TmcaldavError, LookupError):
    """A session, person or enrollment named on the command line does not exist."""


def make_engine(url: str) -> Engine:
    """An engine for a store URL; SQLite gets foreign keys, WAL and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StoreUnavailable(f"store.url is not a database URL: {url!r}") from e
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StoreUnavailable(
                f"store.url: folder {folder} does not exist; create it or change [store] url"
            )
        try:
            # Created here, 0600, before SQLite does it with the umask's mode; SQLite
            # gives its -wal and -shm files the mode of the database file.
            create_private_file(parsed.database)
        except OSError as e:
            raise StoreUnavailable(
                f"store.url: cannot create {parsed.database} ({e.strerror}); check the "
                "folder's permissions or change [store] url"
            ) from e
    try:
        engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
    except (NoSuchModuleError, ImportError) as e:
        raise StoreUnavailable(
            f"store.url: no driver for {parsed.drivername!r} ({e}); "
            "for PostgreSQL install tmcaldav[postgres]"
        ) from e
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(connection: Connection) -> None:
    # pysqlite's own transaction handling would delay BEGIN; issue it ourselves. A unit
    # of work that will write starts IMMEDIATE, taking the write lock first: a deferred
    # one that read before another process committed could not write at all in WAL
    # mode (SQLITE_BUSY_SNAPSHOT), whatever the busy timeout.
    immediate = connection.get_execution_options().get(WRITES, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# Execution option that marks a connection's transaction as one that will write.
WRITES = "tmcaldav_writes"


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: A check installed on every unit of work of a store: called once with the store's
#: session factory, it adds its SQLAlchemy listeners (as `watch_changes` does).
UnitOfWorkCheck = Callable[[sessionmaker[Session]], None]


def _alembic_config(engine: Engine, connection: object) -> object:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("tmcaldav.store") / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*"?([^"\n]*)"?\s*$', re.M)


@functools.cache
def head_revision() -> str:
    """The newest migration: the revision no other migration revises."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (files("tmcaldav.store") / "migrations" / "versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("__"):
            continue
        for name, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            (revisions if name == "revision" else revised).add(value)
    heads = revisions - revised
    if len(heads) != 1:
        raise StoreUnavailable(f"the migrations have {len(heads)} heads; the package is broken")
    head: str = heads.pop()
    return head


class Store:
    """The enrollment store behind one SQLAlchemy URL, with the `checks` every unit of
    work must pass (see the module's docstring)."""

    def __init__(self, url: str, *, checks: Iterable[UnitOfWorkCheck] = ()):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Installed before the change feed: what a check changes at commit (a suggestion
        # withdrawn) is in the feed too.
        for install in checks:
            install(self._sessions)
        # Every unit of work records the sessions it touched, for live pages.
        watch_changes(self._sessions)
        # Installed by an active daemon on PostgreSQL (tmcaldav.standby): run first in
        # every transaction, it raises when this process no longer holds the store lock,
        # so a daemon that lost it (paused while a standby took over) writes nothing.
        self.fence: Callable[[Session], None] | None = None

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    @property
    def backend(self) -> str:
        """The database backend's name: sqlite or postgresql."""
        return self.engine.dialect.name

    def upgrade(self) -> str:
        """Create or upgrade the schema to the newest revision; returns that revision."""
        from alembic import command
        from alembic.script import ScriptDirectory

        try:
            with self.engine.begin() as connection:
                cfg = _alembic_config(self.engine, connection)
                command.upgrade(cfg, "head")  # type: ignore[arg-type]
                head = ScriptDirectory.from_config(cfg).get_current_head()  # type: ignore[arg-type]
        except OperationalError as e:
            raise StoreUnavailable(f"cannot open the store {self.safe_url}: {e.orig}") from e
        return head or ""

    def check_schema(self) -> None:
        """Raise StoreError when the schema is missing or behind the code.

        Read with one query and the migration files' headers, not through alembic: every
        command checks this, and importing alembic would cost more than the command.
        """
        try:
            with self.engine.connect() as connection:
                if not inspect(connection).has_table("alembic_version"):
                    current = None
                else:
                    current = connection.exec_driver_sql(
                        "SELECT version_num FROM alembic_version"
                    ).scalar()
        except OperationalError as e:
            raise StoreUnavailable(f"cannot open the store {self.safe_url}: {e.orig}") from e
        head = head_revision()
        if current is None:
            raise StoreUnavailable(
                f"the store {self.safe_url} has no schema; run: tmcaldav db upgrade"
            )
        if current != head:
            raise StoreUnavailable(
                f"the store {self.safe_url} is at revision {current}, the code needs {head}; "
                "run: tmcaldav db upgrade"
            )

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    def table_names(self) -> list[str]:
        """The tables that exist (for tests and `doctor`)."""
        return inspect(self.engine).get_table_names()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit at the end, roll back on any exception.

        On SQLite it holds the write lock from its start (other writers wait up to 30 s);
        on PostgreSQL rows that must not change under it are read FOR UPDATE.
        """
        session = self._sessions()
        try:
            with session.begin():
                session.connection(execution_options={WRITES: True})
                if self.fence is not None:
                    self.fence(session)
                yield session
        except OperationalError as e:
            raise StoreError(f"store {self.safe_url}: {e.orig}; nothing was changed") from e
        except (IntegrityError, DataError) as e:
            raise StoreError(
                f"the change conflicts with the store ({e.orig}); nothing was changed"
            ) from e
        finally:
            session.close()

    @contextmanager
    def scratch(self) -> Iterator[Session]:
        """A transaction that is always rolled back: checks and snapshots before network I/O."""
        session = self._sessions()
        try:
            if self.fence is not None:
                # A daemon that lost the lock acts on nothing it reads, either.
                self.fence(session)
            yield session
        except OperationalError as e:
            raise StoreError(f"store {self.safe_url}: {e.orig}") from e
        finally:
            # close() rolls the database transaction back and forgets the objects; a
            # rollback() first would expire every object it is about to forget.
            session.close()
