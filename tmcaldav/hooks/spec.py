"""The plugin contract: every hook tmcaldav calls, when, with what, and what it may return.

Plugins mark their implementations with `hookimpl` (project name "tmcaldav") and may
take any subset of a hook's arguments. Every hook argument is a frozen view from
`tmcaldav.views`, never an ORM object.

What every hook shares, said here once (each hook's docstring says what is its own, and
ends with the return and failure lines of `_SHARED`):

- Arguments: `change` is a `ResponseChange`: who answered, the old and new calendar
  status, when, and the event id. `session` is the `SessionView` of the session the
  event is about, as it is when the hook runs (it may have moved on since the event
  was recorded), with each student's status and calendar status. `context` is a
  `HookContext`: the time (`context.now`), the event id (`context.event_id`) and the
  scheduled sessions of the same course that start later (`context.later_sessions`).
- Return: a `SuggestionResult`: None, one `SuggestionSpec` or `Notice`, or a list of
  them (`on_shutdown` returns nothing). Suggestions are stored in the transaction that
  marks the event done, deduplicated by their dedupe key: the same advice is stored
  once however often it is given. A `Notice` (a plain-text mail to the administrator)
  is stored the same way under its key and sent by the tick. Anything else returned is
  logged as the plugin's error and ignored.
- Failures: a hook raises nothing on purpose. Each implementation is called on its
  own, in a worker thread of its plugin. One that raises (anything, `SystemExit`
  included) or overruns `[plugins] hook_timeout` is logged with the plugin's name, the
  hook and the event id; the other plugins still run and the daemon goes on. The event
  waits for the plugins that failed it: the next tick calls only those again, and one
  that fails it `[plugins] max_attempts` times in a row is parked for it (the event is
  then done without it).
- Each event fires its hooks once. The store work is exactly once; side effects
  outside the store (a webhook, a file) are at least once: after a crash between a
  hook call and the commit that records it, the hook runs again with the same
  `context.event_id`. Use it as the idempotency key.
- Keep hooks quick (a call that overruns `hook_timeout` is abandoned) and do slow
  work (network) in a thread of your own, as the shipped webhook plugin does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

if TYPE_CHECKING:
    from tmcaldav.hooks.views import (
        DailyOverview,
        HookContext,
        ResponseChange,
        SessionView,
        StudentView,
        SuggestionResult,
        SuggestionView,
    )

PROJECT = "tmcaldav"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Hook = TypeVar("Hook", bound=Callable[..., Any])

# The end of every hook's docstring but on_shutdown's (help() and IDEs show it there).
_SHARED = """\
:return: a `SuggestionResult` (see "Return" in `tmcaldav.hooks.spec`).
:raises: nothing on purpose; a failure is logged with the plugin's name, the hook and
    the event id, and the event waits for this plugin (see "Failures" in
    `tmcaldav.hooks.spec`)."""


def _hook(function: Hook) -> Hook:
    """`hookspec`, with the return and failure lines every hook shares added to its docstring."""
    function.__doc__ = f"{inspect.cleandoc(function.__doc__ or '')}\n\n{_SHARED}"
    return hookspec(function)


@_hook
def on_response(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called for every change of a student's calendar status the sync records.

    That includes every answer (accepted, tentative, declined, delegated), an answer
    reset to invited by the student's client, answers on cancelled enrollments
    (`change.enrollment_status == "cancelled"`) and answers to a cancelled session
    (`session.status == "cancelled"`), but not the reset a reschedule makes (the
    organizer's doing, not an answer).

    It is called before the answer-specific hook (`on_accept`, `on_decline`,
    `on_tentative`, with `change.new` that answer). Those are not called for an
    enrollment that was cancelled when the answer was recorded, nor when the session is
    cancelled by the time the hook would run: such an answer is recorded (and passed to
    `on_response`) but must move no seats.
    """


@_hook
def on_accept(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called when a student's calendar status becomes `accepted` (see `on_response`).

    A waitlisted student who was invited and accepts may be given a seat
    (promote_waitlisted), as the shipped waitlist plugin advises.
    """


@_hook
def on_decline(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called when a student's calendar status becomes `declined` (see `on_response`).

    `delegated` ("not coming, someone else instead") does not call it: see
    `on_response`. In `session` the student still holds their seat until a
    cancel_enrollment suggestion is applied. Typical advice: cancel_enrollment,
    invite_waitlisted, offer_other_session.
    """


@_hook
def on_tentative(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called when a student's calendar status becomes `tentative` (Maybe; see `on_response`).

    A Maybe from a student others wait behind, or close to the start, is worth a call
    (contact_student), as the shipped followup plugin advises.
    """


@_hook
def on_no_response(
    student: StudentView, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called once per plugin, student and session when the start comes near without a
    firm answer.

    Checked on every tick: when a scheduled, published session starts within the
    plugin's `days_before` days (its `[plugins.NAME] days_before` setting, default
    3) and an enrolled or waitlisted student's calendar status is still `invited` (no
    answer) or `tentative` (no firm answer). It fires at most once for each plugin and
    student, even if the answer changes back later. Typical advice: contact_student.

    :param student: the student without a firm answer.
    """


@_hook
def on_session_ended(session: SessionView, context: HookContext) -> SuggestionResult:
    """Called once per session, on the first tick after a scheduled session has ended.

    Sessions that ended more than 30 days before the check (an old store meeting a
    new plugin) do not fire. Each student's status in `session` is the attendance
    recorded (`attended` or `no_show`) or still `enrolled`. Typical advice: mark_no_show.
    """


@_hook
def on_invitation_sent(
    students: tuple[StudentView, ...], session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called after students were newly added to a session's event on the server.

    Fired once per invite operation (`tmcaldav invite`, an applied invite_waitlisted
    or offer_other_session), from the outbox row written in the same transaction
    that recorded the invitation. Invitations sent again (`--resend`) do not fire it.

    :param students: the newly invited students, as they are now.
    """


@_hook
def on_suggestion(
    suggestion: SuggestionView, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called once for every new suggestion, after it was stored (by any plugin).

    Suggestions auto-applied through `[suggestions] auto_apply` may already be
    `applied` when this hook runs. `session` is the session the suggestion is about;
    the event id is unique per suggestion.

    :param suggestion: the stored suggestion, with its id, kind, reason and plugin.
    """


@_hook
def on_suggestion_withdrawn(
    suggestion: SuggestionView, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called once for every suggestion that was withdrawn because its premise broke.

    A suggestion is withdrawn, in the transaction of the change that makes it untrue,
    when it is still open and what it was made from no longer holds: a new answer from
    its student (or from a student it rests on), a reschedule, the session cancelled or
    ended, the enrollment's status changed by hand or by another suggestion, the seat it
    counted taken. Its dedupe key is set aside, so the same advice may be given again
    when its reason comes back. `session` is the session the suggestion is about; the
    event id is unique per withdrawal.

    :param suggestion: the suggestion as stored now: `state == "withdrawn"`, with
        `withdrawn_reason` in plain words ("Ann accepted at 10:03, after this was
        suggested") and the `premise` it was made from.
    """


@_hook
def on_daily(overview: DailyOverview, context: HookContext) -> SuggestionResult:
    """Called once a day per plugin, on the first tick after the plugin's hour.

    The hour is the plugin's `[plugins.NAME] daily_hour` setting (0-23, default 7) in
    `[scheduling] timezone`. A day the daemon did not run is not made up: the next
    call's `overview.since` reaches back to the previous call, so nothing is missed.
    Return `Notice` values to mail the administrator (the shipped `digest` plugin does);
    suggestions must name their `session`. The event id is ``daily:<plugin>:<day>``;
    `context` has no later sessions.

    :param overview: the answers recorded since the previous call, the open suggestions,
        and the sessions starting within the plugin's `days_before` days.
    """


@hookspec
def on_shutdown() -> None:
    """Called once when tmcaldav is done with its plugins (a command ends, the daemon
    stops). Flush queued work within a few seconds and release resources.

    A failure is logged with the plugin's name; the others are still called.

    :return: nothing; a return value is ignored.
    """
