"""A session's facts, by the names every detached copy of a session gives them.

Publishing (`tmcaldav.publish.Snapshot`), the plugins' views (`SessionView`) and the
invitation's template fields (`InvitationFacts`) each copy the same facts out of a stored
`TrainingSession`; `session_facts` is that copy, made in one place.
"""

from __future__ import annotations

from typing import Any, Final

from tmcaldav.store.model import TrainingSession

#: What a session is for the people in it, by the names the copies use.
SESSION_FACTS: Final = ("key", "title", "course", "start", "end", "tz", "location")
# The stored session's columns whose names differ from the copies'.
_COLUMNS: Final = {"start": "start_at", "end": "end_at"}


def session_facts(session: object, *more: str) -> dict[str, Any]:
    """Keyword arguments for a copy of `session` (a stored `TrainingSession`, or a copy
    that uses the same names): its `SESSION_FACTS`, and the fields named in `more`."""
    columns = _COLUMNS if isinstance(session, TrainingSession) else {}
    return {name: getattr(session, columns.get(name, name)) for name in (*SESSION_FACTS, *more)}
