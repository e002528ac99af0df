"""The `noshow` plugin: after a session, suggest marking absent students as no-shows.

When a session has ended, each student still `enrolled` (no attendance recorded:
neither `attended` nor `no_show`) gets a mark_no_show suggestion whose reason says
whether they had accepted the invitation. Record attendance with
`tmcaldav set-status KEY EMAIL attended` and dismiss the suggestion for those who came.
Settings: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tmcaldav.hookspecs import hookimpl
from tmcaldav.views import Plugin, SessionView, StudentView, SuggestionSpec

_ANSWER = {
    "accepted": "they had accepted the invitation",
    "tentative": "they had answered Maybe",
    "declined": "they had declined the invitation",
    "delegated": "they had delegated the invitation",
    "invited": "they never answered the invitation",
    "not_invited": "they were never invited",
}


def reason(student: StudentView, session: SessionView) -> str:
    """Why this student is suggested as a no-show, in plain words (pure)."""
    answer = _ANSWER.get(student.calendar_status, f"calendar: {student.calendar_status}")
    return (
        f"{session.key} has ended and no attendance is recorded for "
        f"{student.name or student.email}; {answer}"
    )


class NoShowPlugin(Plugin):
    """Suggests mark_no_show for enrolled students without attendance after the end."""

    __version__ = "1"

    @hookimpl
    def on_session_ended(self, session: SessionView) -> list[SuggestionSpec]:
        """One mark_no_show per student still `enrolled`."""
        return [
            SuggestionSpec("mark_no_show", s.email, reason(s, session))
            for s in session.students
            if s.status == "enrolled"
        ]


def tmcaldav_plugin(settings: Mapping[str, Any]) -> NoShowPlugin:
    """Build the plugin (for loading this module as a file)."""
    return NoShowPlugin(settings)
