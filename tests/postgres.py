"""A real PostgreSQL server for the store tests, started in a temp folder on 127.0.0.1.

initdb refuses to run as root, so as root the server runs as an unprivileged user
(the Debian package's `postgres`, else `nobody`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmcaldav.localhost import free_port
from tmcaldav.process import ServerProcess


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed here."""


def postgres_bin() -> Path:
    """The folder with initdb and postgres."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (run `python3 dev.py test` as root, or "
            "apt-get install postgresql)"
        )
    return versions[-1].parent


@dataclass
class PostgresServer:
    """A running PostgreSQL server; `url(db)` is a SQLAlchemy URL for one database."""

    process: ServerProcess
    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this server."""
        return f"postgresql+psycopg://tmcaldav@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database and return its URL."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=tmcaldav dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
        self.process.stop(timeout=20, how=signal.SIGINT)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb a fresh cluster in a temp folder and start it on a free loopback port."""
    bindir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="tmcaldav-pg-"))
    data = folder / "data"
    data.mkdir()
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(user)
        folder.chmod(0o755)
        for path in (folder, data):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "tmcaldav",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        cwd=folder,
        **run_as,  # type: ignore[call-overload]
    )
    port = free_port()
    process = ServerProcess("postgres", folder / "postgres.log")
    process.spawn(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            "",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ],
        cwd=folder,
        **run_as,
    )
    server = PostgresServer(process, port, folder)
    failure = process.wait_until_ready(lambda: _accepts_connections(port), timeout=30, step=0.1)
    if failure:
        server.stop()
        raise RuntimeError(failure)
    return server


def _accepts_connections(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=tmcaldav dbname=postgres connect_timeout=2"
        ):
            return True
    except psycopg.OperationalError:  # refused, or still starting up
        return False


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
