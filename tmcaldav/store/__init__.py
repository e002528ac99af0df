"""The enrollment store: models, engine and transactions, migrations, roster edits, reports.

Its public face is `Store` (one transaction per unit of work) and the typed queries
re-exported here; `model` holds the tables, `roster` the administrator's edits.
"""

from tmcaldav.store.engine import (
    NotFoundError,
    Store,
    StoreError,
    StoreUnavailable,
    make_engine,
)
from tmcaldav.store.queries import (
    add_note,
    count_sessions,
    find_person,
    get_enrollment,
    get_person,
    get_session,
    history,
    list_people,
    list_sessions,
    page_order,
    reminders,
    waitlist,
    waitlist_positions,
)

__all__ = [
    "NotFoundError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "add_note",
    "count_sessions",
    "find_person",
    "get_enrollment",
    "get_person",
    "get_session",
    "history",
    "list_people",
    "list_sessions",
    "make_engine",
    "page_order",
    "reminders",
    "waitlist",
    "waitlist_positions",
]
