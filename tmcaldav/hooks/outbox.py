"""The typed outbox: one event type per kind of row, the only way rows are written and read.

A change and its outbox row are written in one transaction (the poll, an invitation,
a due time hook, a new suggestion); the dispatcher reads the row back as the same type
and runs its hooks. Rows keep their payload as JSON, so a row written by an older
version still reads: fields added later have defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, get_args

from tmcaldav.store.model import Outbox

# The outbox's event_id column.
EVENT_ID_LENGTH = 100


class UnreadableEvent(ValueError):
    """An outbox row whose payload this version cannot read."""


class UnknownKind(UnreadableEvent):
    """An outbox row of a kind this version does not know (written by a newer one)."""


@dataclass(frozen=True)
class _Event:
    """What every outbox event shares: its kind (`hook`) and its JSON form."""

    hook: ClassVar[str]
    # Fields stored as ISO 8601 text, and tuples stored as JSON lists.
    _times: ClassVar[tuple[str, ...]] = ()
    _tuples: ClassVar[tuple[str, ...]] = ()

    def payload(self) -> dict[str, Any]:
        """The event's fields as JSON-ready values."""
        data = dataclasses.asdict(self)
        for name in self._times:
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        return data

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Any:
        """The event stored in `payload`; UnreadableEvent when a field is missing or wrong."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in payload.items() if k in names}
        try:
            for name in cls._times:
                if values.get(name) is not None:
                    values[name] = datetime.fromisoformat(values[name])
            for name in cls._tuples:
                if name in values:
                    values[name] = tuple(values[name])
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise UnreadableEvent(f"{cls.hook} event: {e}") from e

    @classmethod
    def event_id_for(cls, *keys: int | str) -> str:
        """`<hook>:<key>:...`, the event id of a kind that fires once per its keys.

        Deterministic (unlike `to_row`'s random id), so the event is written once
        however many ticks find it due: the event id column is unique.
        """
        return ":".join((cls.hook, *map(str, keys)))


@dataclass(frozen=True)
class ResponseEvent(_Event):
    """A student's calendar status changed (on_response and the answer's own hook)."""

    hook: ClassVar[str] = "response"
    _times: ClassVar[tuple[str, ...]] = ("responded_at",)

    session: str
    email: str
    old: str
    new: str
    responded_at: datetime
    # The event SEQUENCE the answer was given to.
    sequence: int | None = None
    source: str = "poll"
    # The enrollment's status when the answer was recorded ("cancelled": record only).
    enrollment_status: str = "enrolled"


@dataclass(frozen=True)
class InvitationEvent(_Event):
    """Students were newly invited (on_invitation_sent)."""

    hook: ClassVar[str] = "invitation"
    _tuples: ClassVar[tuple[str, ...]] = ("emails",)

    session: str
    # Sorted addresses.
    emails: tuple[str, ...]
    sequence: int | None = None


@dataclass(frozen=True)
class NoResponseEvent(_Event):
    """A student has not answered (or is unsure) close to the start (on_no_response),
    for one plugin's window; event id `no_response:<enrollment id>:<plugin>`."""

    hook: ClassVar[str] = "no_response"

    plugin: str
    email: str


@dataclass(frozen=True)
class SessionEndedEvent(_Event):
    """A session ended (on_session_ended); event id `session_ended:<session id>`."""

    hook: ClassVar[str] = "session_ended"

    session: str


@dataclass(frozen=True)
class SuggestionEvent(_Event):
    """A suggestion was stored (on_suggestion, then auto-apply); event id
    `suggestion:<suggestion id>`."""

    hook: ClassVar[str] = "suggestion"

    suggestion_id: int


@dataclass(frozen=True)
class SuggestionWithdrawnEvent(_Event):
    """An open suggestion was withdrawn: its premise broke (on_suggestion_withdrawn);
    event id `suggestion_withdrawn:<suggestion id>` (it is withdrawn once)."""

    hook: ClassVar[str] = "suggestion_withdrawn"

    suggestion_id: int
    reason: str = ""


@dataclass(frozen=True)
class DailyEvent(_Event):
    """A plugin's hour of the day has come (on_daily), for one plugin and local day;
    event id `daily:<plugin>:<day>`."""

    hook: ClassVar[str] = "daily"

    plugin: str
    # The local date (YYYY-MM-DD) in [scheduling] timezone.
    day: str


OutboxEvent = (
    ResponseEvent
    | InvitationEvent
    | NoResponseEvent
    | SessionEndedEvent
    | SuggestionEvent
    | SuggestionWithdrawnEvent
    | DailyEvent
)

_KINDS: dict[str, type[_Event]] = {kind.hook: kind for kind in get_args(OutboxEvent)}


def to_row(
    event: OutboxEvent,
    *,
    session_id: int | None,
    enrollment_id: int | None = None,
    event_id: str | None = None,
) -> Outbox:
    """The outbox row for `event` (a random event id unless a deterministic one is given)."""
    return Outbox(
        event_id=event_id or uuid.uuid4().hex,
        hook=event.hook,
        session_id=session_id,
        enrollment_id=enrollment_id,
        payload=event.payload(),
    )


def from_row(row: Outbox) -> OutboxEvent:
    """The event a row holds; UnreadableEvent for an unknown kind or a broken payload."""
    kind = _KINDS.get(row.hook)
    if kind is None:
        raise UnknownKind(f"unknown kind {row.hook!r}")
    event: OutboxEvent = kind.from_payload(dict(row.payload or {}))
    return event


def bounded(text: str, limit: int) -> str:
    """`text`, or a prefix of it with a digest when it is longer than a column allows."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"{text[: limit - 33]}#{digest}"
