"""What an administrator does from a browser or the API, through the CLI's services.

Each action calls what the matching command calls (the App's Publisher for invite,
status, cancel and edit; `roster.note`; `apply_suggestion` / `dismiss_suggestion`),
so the web adds no second way of changing anything. Actions run one at a time per
web process (the Publisher's CalDAV connection is not shared between threads); the
daemon and the CLI run beside it as they always do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select

from tmcaldav.app import App
from tmcaldav.domain import EnrollmentStatus, normalise_address, values
from tmcaldav.errors import TmcaldavError, UsageError
from tmcaldav.store import NotFoundError, get_enrollment, get_session
from tmcaldav.store.model import Suggestion, utcnow
from tmcaldav.store.roster import RosterError, SessionFields

T = TypeVar("T")
STATUSES = values(EnrollmentStatus)
NOTE_MAX = 5000


class StaleSuggestion(TmcaldavError):
    """A suggestion that was applied, dismissed or withdrawn already (HTTP 409)."""


class ActionRefused(UsageError):
    """A request that names nothing to do, or something unknown (HTTP 400)."""


@dataclass(frozen=True)
class StatusChange:
    """One student's status change as done."""

    email: str
    old: str
    new: str


class Actions:
    """The administrator's actions on one App's services."""

    def __init__(self, app: App):
        self.app = app
        self._one_at_a_time = threading.Lock()

    def _emails(self, key: str, emails: list[str]) -> list[str]:
        """The addresses, normalised, each checked to be in the session."""
        if not emails:
            raise ActionRefused("select at least one student")
        wanted = list(dict.fromkeys(normalise_address(e) for e in emails))
        with self.app.store.scratch() as db:
            session = get_session(db, key, notes=False)
            for email in wanted:
                get_enrollment(db, session, email)
        return wanted

    def invite(
        self, key: str, emails: list[str], *, all_enrolled: bool = False, resend: bool = False
    ) -> list[str]:
        """Invite (or, with `resend`, invite again) students; returns the newly invited."""
        wanted = self._emails(key, emails) if emails or not all_enrolled else []
        with self._one_at_a_time:
            return self.app.publisher.invite(
                key, wanted, all_enrolled=all_enrolled, resend=resend
            )

    def set_status(
        self, key: str, emails: list[str], status: str, note: str | None = None
    ) -> list[StatusChange]:
        """Set each student's status, one unit of work each (as `set-status` does)."""
        if status not in STATUSES:
            raise ActionRefused(f"unknown status {status!r}; use one of: {', '.join(STATUSES)}")
        check_note(note, required=False)
        wanted = self._emails(key, emails)
        done = []
        with self._one_at_a_time:
            for email in wanted:
                old = self.app.publisher.set_status(key, email, status, note or None)
                done.append(StatusChange(email, old, status))
        return done

    def answer(
        self, key: str, emails: list[str], status: str, note: str | None = None
    ) -> list[str]:
        """Record an answer each student gave another way (as `tmcaldav answer` does:
        source manual, the same hooks, the server's PARTSTAT untouched)."""
        from tmcaldav.corrections import record_answer

        check_note(note, required=False)
        wanted = self._emails(key, emails)
        if not wanted:
            raise ActionRefused("select the students who answered")
        for email in wanted:
            record_answer(self.app.store, key, email, status, note=note or None)
        return wanted

    def note(self, key: str, email: str, text: str, author: str | None) -> None:
        """Add a follow-up note (as `tmcaldav note` does), signed with the web user."""
        from tmcaldav.store.roster import note

        check_note(text, required=True)
        with self.app.store.transaction() as db:
            note(db, key, normalise_address(email), text, author=author)

    def locked(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work` while no other action uses the Publisher (answer links)."""
        with self._one_at_a_time:
            return work(*args)

    def cancel(self, key: str) -> bool:
        """Cancel the session; True when its event was updated on the server."""
        with self._one_at_a_time:
            return self.app.publisher.cancel(key)

    def edit(self, key: str, fields: SessionFields) -> set[str]:
        """Change (reschedule) the session; returns the columns that changed."""
        with self._one_at_a_time:
            return self.app.publisher.edit(key, fields)

    def _suggestion_state(self, suggestion_id: int) -> str:
        with self.app.store.scratch() as db:
            state = db.scalar(select(Suggestion.state).where(Suggestion.id == suggestion_id))
        if state is None:
            raise NotFoundError(f"no suggestion with id {suggestion_id}")
        if state != "open":
            raise StaleSuggestion(f"suggestion {suggestion_id} is {state} already; nothing done")
        return state

    def apply_suggestion(self, suggestion_id: int, note: str | None = None) -> str:
        """Do what the suggestion says (StaleSuggestion when it is no longer open)."""
        from tmcaldav.hooks.suggestions import SuggestionError, apply_suggestion

        check_note(note, required=False)
        self._suggestion_state(suggestion_id)
        with self._one_at_a_time:
            try:
                return apply_suggestion(
                    self.app.store, self.app.publisher, suggestion_id, note=note or None
                )
            except SuggestionError as e:
                raise StaleSuggestion(str(e)) from e

    def dismiss_suggestion(self, suggestion_id: int) -> str:
        """Drop the suggestion (StaleSuggestion when it is no longer open)."""
        from tmcaldav.hooks.suggestions import SuggestionError, dismiss_suggestion

        self._suggestion_state(suggestion_id)
        try:
            return dismiss_suggestion(self.app.store, suggestion_id)
        except SuggestionError as e:
            raise StaleSuggestion(str(e)) from e


def check_note(text: str | None, *, required: bool) -> None:
    """RosterError for an empty required note or one longer than NOTE_MAX."""
    if required and not (text or "").strip():
        raise RosterError("a note must not be empty")
    if text is not None and len(text) > NOTE_MAX:
        raise RosterError(f"the note is too long ({len(text)} characters; at most {NOTE_MAX})")


def session_fields(values: dict[str, Any]) -> SessionFields:
    """SessionFields from a form or JSON object; empty strings mean "leave as it is"
    except for the optional texts, where "" clears (as on the command line)."""
    known = {"title", "start", "end", "tz", "location", "capacity", "course", "description"}
    unknown = set(values) - known
    if unknown:
        raise ActionRefused(
            f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    fields: dict[str, Any] = {}
    for name in ("title", "start", "end", "tz"):
        value = values.get(name)
        if value not in (None, ""):
            if not isinstance(value, str):
                raise ActionRefused(f"{name} must be a string")
            fields[name] = value
    for name in ("location", "course", "description"):
        value = values.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ActionRefused(f"{name} must be a string")
            fields[name] = value
    capacity = values.get("capacity")
    if capacity not in (None, ""):
        try:
            fields["capacity"] = int(capacity)
        except (TypeError, ValueError) as e:
            raise ActionRefused(f"capacity must be a whole number, not {capacity!r}") from e
    return SessionFields(**fields)


def invitation_preview(app: App, page: dict[str, Any], emails: list[str]) -> dict[str, Any]:
    """What the chosen students will receive: in iMIP mode the mail tmcaldav sends
    (subject and text for the first of them); in server mode, what the server sends."""
    from tmcaldav import ical

    config = app.config
    students = {s["email"]: s for s in page["students"]}
    first = students[emails[0]] if emails and emails[0] in students else None
    when = {
        "start": datetime.fromisoformat(page["start"]),
        "end": datetime.fromisoformat(page["end"]),
    }
    preview: dict[str, Any] = {"mode": config.scheduling.mode, "subject": None, "body": None}
    if config.scheduling.mode != "imip" or first is None:
        return preview
    from tmcaldav.imip.message import compose

    spec = ical.EventSpec(
        uid=page["uid"] or "preview",
        summary=page["title"],
        start=when["start"],
        end=when["end"],
        tz=page["tz"],
        sequence=page["sequence"],
        dtstamp=utcnow(),
        status="CONFIRMED",
        organizer_email=config.scheduling.organizer_email,
        organizer_name=config.scheduling.organizer_name,
        attendees=(ical.Attendee(first["email"], first["name"]),),
        description=page.get("description"),
        location=page["location"],
        schedule_agent_client=True,
    )
    message = compose(
        spec, "REQUEST", reason="invite", message_id="<preview@tmcaldav>", date=utcnow()
    ).message
    body = message.get_body(preferencelist=("plain",))
    preview["subject"] = str(message["Subject"])
    preview["body"] = body.get_content() if body is not None else ""
    return preview
