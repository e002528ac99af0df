"""The plugin contract's stable import path: `from tmcaldav.hookspecs import hookimpl`.

The hooks are defined in `tmcaldav.hooks.spec` (read it for what each hook does); this
module re-exports them so third-party plugins never break when the code moves.
"""

from tmcaldav.hooks.spec import (
    PROJECT,
    hookimpl,
    hookspec,
    on_accept,
    on_daily,
    on_decline,
    on_invitation_sent,
    on_no_response,
    on_response,
    on_session_ended,
    on_shutdown,
    on_suggestion,
    on_suggestion_withdrawn,
    on_tentative,
)

__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "on_accept",
    "on_daily",
    "on_decline",
    "on_invitation_sent",
    "on_no_response",
    "on_response",
    "on_session_ended",
    "on_shutdown",
    "on_suggestion",
    "on_suggestion_withdrawn",
    "on_tentative",
]
