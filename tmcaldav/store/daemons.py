"""The `daemons` table: which daemon is active on the store and which stand by.

Each `tmcaldav run` writes its row when it starts or takes over, refreshes its
heartbeat, and removes the row when it stops. On PostgreSQL every time is the
database's own clock, so two hosts whose clocks disagree still agree on who is silent.
`doctor` reads the rows with `list_daemons`.

`Fenced` is what a daemon meets when it no longer holds the store lock: see
`tmcaldav.standby`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    SQLColumnExpression,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from tmcaldav.domain import DaemonRole
from tmcaldav.errors import EXIT_FENCED
from tmcaldav.store.engine import Store, StoreError
from tmcaldav.store.model import DaemonRecord, UTCDateTime, utcnow

# Rows silent this long (and at least ten takeover times) are of daemons that died
# without a word (kill -9 of a standby); the next daemon to start removes them.
FORGET_AFTER = 3600.0


class Fenced(StoreError):
    """This daemon no longer holds the store lock: another may be active, so it must
    not write. Its transaction changed nothing; the daemon exits EXIT_FENCED."""

    exit_code = EXIT_FENCED


def this_host() -> str:
    """The name of this machine, as the daemons table shows it."""
    return socket.gethostname()


def db_now(connection: Connection) -> ColumnElement[datetime]:
    """`now` as an SQL expression: the database's clock on PostgreSQL (naive UTC, like
    every stored time), this process's on SQLite (one machine, one clock)."""
    if connection.dialect.name == "postgresql":
        return func.timezone("UTC", func.clock_timestamp())
    return literal(utcnow(), UTCDateTime())


def seconds_since(column: SQLColumnExpression[datetime]) -> ColumnElement[float]:
    """Seconds from `column` to now on the database's clock (PostgreSQL only)."""
    return cast(
        ColumnElement[float],
        func.extract("epoch", func.timezone("UTC", func.clock_timestamp()) - column),
    )


def register(
    connection: Connection,
    role: DaemonRole,
    backend_pid: int | None,
    forget_after: float,
    row_id: int | None = None,
) -> int:
    """Write this process's row (and forget rows long silent); returns the row's id
    (`row_id` when given, else a new one). The caller commits."""
    now = db_now(connection)
    forget = max(FORGET_AFTER, forget_after)
    if connection.dialect.name == "postgresql":
        silent_long = seconds_since(DaemonRecord.heartbeat_at) > forget
    else:
        silent_long = DaemonRecord.heartbeat_at < literal(
            utcnow() - timedelta(seconds=forget), UTCDateTime()
        )
    connection.execute(delete(DaemonRecord).where(silent_long))
    given = {"id": row_id} if row_id is not None else {}
    new_id = connection.execute(
        insert(DaemonRecord)
        .values(
            **given,
            host=this_host(),
            pid=os.getpid(),
            role=role.value,
            started_at=now,
            heartbeat_at=now,
            active_since=now if role == DaemonRole.ACTIVE else None,
            backend_pid=backend_pid,
        )
        .returning(DaemonRecord.id)
    ).scalar_one()
    return int(new_id)


def unregister(connection: Connection, row_id: int) -> None:
    """Remove this process's row (it stops). The caller commits."""
    connection.execute(delete(DaemonRecord).where(DaemonRecord.id == row_id))


def beat(connection: Connection, row_id: int) -> int:
    """Refresh a row's heartbeat; returns how many rows it touched (0: the row is gone)."""
    done = connection.execute(
        update(DaemonRecord)
        .where(DaemonRecord.id == row_id)
        .values(heartbeat_at=db_now(connection))
    )
    return int(done.rowcount)


@dataclass(frozen=True)
class DaemonInfo:
    """One running daemon as `doctor` shows it."""

    host: str
    pid: int
    role: str
    started_at: datetime
    active_since: datetime | None
    heartbeat_at: datetime
    # Seconds since its last heartbeat, on the store's clock.
    silent_for: float


def list_daemons(store: Store) -> list[DaemonInfo]:
    """Every daemon with a row: the active one first, then the standbys, oldest first."""
    with store.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            now = connection.execute(select(func.timezone("UTC", func.clock_timestamp()))).scalar()
            assert now is not None
            clock = now.replace(tzinfo=utcnow().tzinfo)
        else:
            clock = utcnow()
        rows = connection.execute(
            select(DaemonRecord).order_by(DaemonRecord.role, DaemonRecord.started_at)
        ).all()
    found = [
        DaemonInfo(
            host=row.host,
            pid=row.pid,
            role=row.role,
            started_at=row.started_at,
            active_since=row.active_since,
            heartbeat_at=row.heartbeat_at,
            silent_for=max(0.0, (clock - row.heartbeat_at).total_seconds()),
        )
        for row in rows
    ]
    # "active" sorts before "standby" already; keep it explicit for the reader.
    return sorted(found, key=lambda d: d.role != DaemonRole.ACTIVE)
