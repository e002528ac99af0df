"""The invitation's own words: `[invitation]` templates with named fields.

`subject`, `body` and `waitlist_body` are Jinja2 templates, run in Jinja2's sandbox
(a template can read the fields it is given and nothing else), with the fields in
`FIELDS`. `check-config` refuses a template that does not parse or names a field that
does not exist, with the key and the field, so a typo is found before the daemon mails
anyone. Every field is text; one that does not apply is empty (`waitlist_position`
outside the waitlist, `student_name` in server mode), so `{% if location %}...{% endif %}`
leaves out what a session does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

    from tmcaldav.config import Config

#: The fields a template may name, and what each holds.
FIELDS: Final = {
    "title": "the session's title",
    "key": "the session's key",
    "course": "the session's course",
    "start": "the start in the session's zone, e.g. Tue 1 Dec 2026, 09:00",
    "end": "the end in the session's zone",
    "when": "day, times and zone, e.g. Tue 1 Dec 2026, 09:00–17:00 (Europe/Berlin)",
    "tz": "the session's time zone",
    "location": "where it takes place",
    "description": "the session's description",
    "student_name": "the student's name (empty in server mode: one event for everyone)",
    "student_email": "the student's address (empty in server mode)",
    "waitlist_position": "the student's place on the waitlist (empty when not waitlisted)",
    "organizer_name": "[scheduling] organizer_name (else organizer_email)",
}
# Reasons for a REQUEST that carries the invitation's text (not an update or a new time).
INVITATION_REASONS: Final = frozenset({"invite", "resend", "refresh", "remind"})
REMINDER_PREFIX: Final = "Reminder: "


class TemplateProblem(ValueError):
    """A template that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class InvitationFacts:
    """What the fields are made of: one session, and one student (or none)."""

    key: str
    title: str
    course: str | None
    start: datetime
    end: datetime
    tz: str
    location: str | None
    description: str | None
    organizer: str
    student_name: str | None = None
    student_email: str | None = None
    waitlist_position: int | None = None


def _local(value: datetime, tz: str) -> datetime:
    return value.astimezone(ZoneInfo(tz))


def _day(value: datetime) -> str:
    return value.strftime("%a %d %b %Y").replace(" 0", " ")


def when_text(start: datetime, end: datetime, tz: str) -> str:
    """The session's time for people: one day with two times, or two full times."""
    start, end = _local(start, tz), _local(end, tz)
    if start.date() == end.date():
        return f"{_day(start)}, {start:%H:%M}–{end:%H:%M} ({tz})"
    return f"{_day(start)}, {start:%H:%M} – {_day(end)}, {end:%H:%M} ({tz})"


def fields(facts: InvitationFacts) -> dict[str, str]:
    """The template fields for `facts`, all text (empty when a value is missing)."""
    start, end = _local(facts.start, facts.tz), _local(facts.end, facts.tz)
    return {
        "title": facts.title,
        "key": facts.key,
        "course": facts.course or "",
        "start": f"{_day(start)}, {start:%H:%M}",
        "end": f"{_day(end)}, {end:%H:%M}",
        "when": when_text(facts.start, facts.end, facts.tz),
        "tz": facts.tz,
        "location": facts.location or "",
        "description": facts.description or "",
        "student_name": facts.student_name or "",
        "student_email": facts.student_email or "",
        "waitlist_position": str(facts.waitlist_position or ""),
        "organizer_name": facts.organizer,
    }


def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # Plain text: no HTML escaping; a field that does not exist is an error, not "".
    return SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=64)
def _compile(text: str) -> Template:
    from jinja2 import TemplateSyntaxError, meta

    environment = _environment()
    try:
        parsed = environment.parse(text)
        # Compiling finds an unknown filter or test (TemplateAssertionError).
        names = meta.find_undeclared_variables(parsed)
        template = environment.from_string(text)
    except TemplateSyntaxError as e:
        raise TemplateProblem(f"not a valid template: {e.message} (line {e.lineno})") from e
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise TemplateProblem(
            f"unknown {'field' if len(unknown) == 1 else 'fields'} "
            f"{', '.join(unknown)} (known: {', '.join(FIELDS)})"
        )
    return template


_SAMPLE = InvitationFacts(
    key="TM-1",
    title="Excel basics",
    course="EXC",
    start=datetime.fromisoformat("2026-12-01T09:00:00+01:00"),
    end=datetime.fromisoformat("2026-12-01T12:00:00+01:00"),
    tz="Europe/Berlin",
    location="Room 2.14",
    description="Bring a laptop",
    organizer="Training Office",
    student_name="Ann Lee",
    student_email="ann@example.org",
    waitlist_position=1,
)


def check_template(key: str, text: str) -> list[str]:
    """Problems of one `[invitation]` template (empty when it can be used)."""
    try:
        rendered = render(text, fields(_SAMPLE))
    except TemplateProblem as e:
        return [str(e)]
    if key == "subject" and ("\n" in rendered.strip() or "\r" in rendered):
        return ["a subject is one line"]
    if not rendered.strip():
        return ["the template makes an empty text"]
    return []


def render(text: str, values: dict[str, str]) -> str:
    """Render a template; TemplateProblem when it cannot be (checked by check-config)."""
    from jinja2 import TemplateError

    template = _compile(text)
    try:
        return str(template.render(values))
    except TemplateError as e:
        raise TemplateProblem(f"cannot be rendered: {e}") from e


def one_line(text: str) -> str:
    """A subject: every run of whitespace (line breaks too) as one space."""
    return " ".join(text.split())


def mail_texts(
    config: Config, facts: InvitationFacts, reason: str
) -> tuple[str | None, str | None]:
    """(subject, plain body) of an invitation mail from the templates; None for each part
    left to tmcaldav's own text (no template, or not an invitation: an update, a new
    time, a cancellation)."""
    if reason not in INVITATION_REASONS:
        return None, None
    invitation = config.invitation
    values = fields(facts)
    subject = one_line(render(invitation.subject, values)) if invitation.subject else None
    if subject is not None and reason == "remind":
        subject = REMINDER_PREFIX + subject
    template = invitation.body
    if facts.waitlist_position is not None and invitation.waitlist_body:
        template = invitation.waitlist_body
    body = render(template, values) if template else None
    return subject, body


def event_description(config: Config, facts: InvitationFacts) -> str | None:
    """The event's DESCRIPTION: in server mode the `body` template without the
    student's fields (one event serves every student); else the session's own."""
    if config.scheduling.mode != "server" or not config.invitation.body:
        return facts.description
    return render(config.invitation.body, fields(facts)).strip() or None
