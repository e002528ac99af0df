"""What plugins see, at its stable import path: `from tmcaldav.views import SuggestionSpec`.

The frozen views are defined in `tmcaldav.hooks.views`; this module re-exports them so
third-party plugins never break when the code moves. Importing it loads no database
code.
"""

from tmcaldav.hooks.views import (
    INVITATION_OUT,
    AnswerView,
    DailyOverview,
    HookContext,
    NoteView,
    Notice,
    Plugin,
    ResponseChange,
    SessionView,
    StudentView,
    SuggestionResult,
    SuggestionSpec,
    SuggestionView,
    check_settings,
)

__all__ = [
    "INVITATION_OUT",
    "AnswerView",
    "DailyOverview",
    "HookContext",
    "NoteView",
    "Notice",
    "Plugin",
    "ResponseChange",
    "SessionView",
    "StudentView",
    "SuggestionResult",
    "SuggestionSpec",
    "SuggestionView",
    "check_settings",
]
