"""The plugin contract: every hook tmcaldav calls, when, with what, and what it may return.

Plugins mark their implementations with `hookimpl` (project name "tmcaldav") and may
take any subset of a hook's arguments. Every hook argument is a frozen view from
`tmcaldav.views`, never an ORM object.

What every hook shares:

- Each implementation is called on its own. One that raises is logged with the
  plugin's name, the hook and the event id; the other plugins still run, the event is
  still marked done (a failing plugin is not called again for it), and the daemon
  goes on.
- A hook may return None, one `SuggestionSpec` or `Notice`, or a list of them (except
  `on_shutdown`). Suggestions are stored in the transaction that marks the event done,
  deduplicated by their dedupe key: the same advice is stored once however often it
  is given. A `Notice` (a plain-text mail to the administrator) is stored the same
  way under its key and sent by the tick. Anything else returned is logged as the
  plugin's error and ignored.
- Each event fires its hooks once. The store work is exactly once; side effects
  outside the store (a webhook, a file) are at least once: after a crash between a
  hook call and the commit that marks its event done, the hook runs again with the
  same `context.event_id`. Use it as the idempotency key.
- Hooks run in the daemon's loop: keep them quick and do slow work (network) in a
  thread of your own, as the shipped webhook plugin does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


@hookspec
def on_response(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called for every change of a student's calendar status the sync records.

    That includes every answer (accepted, tentative, declined, delegated), an answer
    reset to invited by the student's client, answers on cancelled enrollments
    (`change.enrollment_status == "cancelled"`) and answers to a cancelled session
    (`session.status == "cancelled"`), but not the reset a reschedule makes (the
    organizer's doing, not an answer). It is called before the answer-specific hook
    (`on_accept`, `on_decline`, `on_tentative`).

    :param change: who answered, the old and new calendar status, when, and the
        event id.
    :param session: the session as it is when the hook runs (it may have moved on
        since the answer was recorded).
    :param context: the time, the event id and later sessions of the same course.
    :return: None, a suggestion, or a list of suggestions.
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_accept(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called when a student's calendar status becomes `accepted`.

    Not called for an enrollment that was cancelled when the answer was recorded, nor
    when the session is cancelled by the time the hook would run: such an answer is
    recorded (and passed to `on_response`) but must move no seats.

    :param change: the answer (`change.new == "accepted"`) and its event id.
    :param session: the session as it is when the hook runs.
    :param context: the time, the event id and later sessions of the same course.
    :return: None, a suggestion, or a list of suggestions (e.g. promote_waitlisted).
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_decline(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called when a student's calendar status becomes `declined`.

    Not called for an enrollment that was cancelled when the answer was recorded, nor
    when the session is cancelled. `delegated` ("not coming, someone else instead")
    does not call it: see `on_response`.

    :param change: the answer (`change.new == "declined"`) and its event id.
    :param session: the session as it is when the hook runs; the student still holds
        their seat until a cancel_enrollment suggestion is applied.
    :param context: the time, the event id and later sessions of the same course.
    :return: None, a suggestion, or a list of suggestions (e.g. cancel_enrollment,
        invite_waitlisted, offer_other_session).
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_tentative(
    change: ResponseChange, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called when a student's calendar status becomes `tentative` (Maybe).

    Not called for an enrollment that was cancelled when the answer was recorded, nor
    when the session is cancelled.

    :param change: the answer (`change.new == "tentative"`) and its event id.
    :param session: the session as it is when the hook runs.
    :param context: the time, the event id and later sessions of the same course.
    :return: None, a suggestion, or a list of suggestions (e.g. contact_student).
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_no_response(
    student: StudentView, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called once per plugin, student and session when the start comes near without a
    firm answer.

    Checked on every tick: when a scheduled, published session starts within the
    plugin's `days_before` days (its `[plugins.NAME] days_before` setting, default
    3) and an enrolled or waitlisted student's calendar status is still `invited` (no
    answer) or `tentative` (no firm answer). It fires at most once for each plugin and
    student, even if the answer changes back later.

    :param student: the student without a firm answer.
    :param session: the session as it is now.
    :param context: the time (`context.now`), the event id and later sessions.
    :return: None, a suggestion, or a list of suggestions (e.g. contact_student).
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_session_ended(session: SessionView, context: HookContext) -> SuggestionResult:
    """Called once per session, on the first tick after a scheduled session has ended.

    Sessions that ended more than 30 days before the check (an old store meeting a
    new plugin) do not fire.

    :param session: the session, with each student's status (attendance recorded as
        `attended` or `no_show`, or still `enrolled`) and calendar status.
    :param context: the time, the event id and later sessions of the same course.
    :return: None, a suggestion, or a list of suggestions (e.g. mark_no_show).
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_invitation_sent(
    students: tuple[StudentView, ...], session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called after students were newly added to a session's event on the server.

    Fired once per invite operation (`tmcaldav invite`, an applied invite_waitlisted
    or offer_other_session), from the outbox row written in the same transaction
    that recorded the invitation. Invitations sent again (`--resend`) do not fire it.

    :param students: the newly invited students, as they are now.
    :param session: the session as it is now.
    :param context: the time, the event id and later sessions of the same course.
    :return: None, a suggestion, or a list of suggestions.
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_suggestion(
    suggestion: SuggestionView, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called once for every new suggestion, after it was stored (by any plugin).

    Suggestions auto-applied through `[suggestions] auto_apply` may already be
    `applied` when this hook runs.

    :param suggestion: the stored suggestion, with its id, kind, reason and plugin.
    :param session: the session the suggestion is about.
    :param context: the time, the event id (unique per suggestion) and later sessions.
    :return: None, a suggestion, or a list of suggestions.
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_suggestion_withdrawn(
    suggestion: SuggestionView, session: SessionView, context: HookContext
) -> SuggestionResult:
    """Called once for every suggestion that was withdrawn because its premise broke.

    A suggestion is withdrawn, in the transaction of the change that makes it untrue,
    when it is still open and what it was made from no longer holds: a new answer from
    its student (or from a student it rests on), a reschedule, the session cancelled or
    ended, the enrollment's status changed by hand or by another suggestion, the seat it
    counted taken. Its dedupe key is set aside, so the same advice may be given again
    when its reason comes back.

    :param suggestion: the suggestion as stored now: `state == "withdrawn"`, with
        `withdrawn_reason` in plain words ("Ann accepted at 10:03, after this was
        suggested") and the `premise` it was made from.
    :param session: the session the suggestion is about, as it is now.
    :param context: the time, the event id (unique per withdrawal) and later sessions.
    :return: None, a suggestion, or a list of suggestions.
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_daily(overview: DailyOverview, context: HookContext) -> SuggestionResult:
    """Called once a day per plugin, on the first tick after the plugin's hour.

    The hour is the plugin's `[plugins.NAME] daily_hour` setting (0-23, default 7) in
    `[scheduling] timezone`. A day the daemon did not run is not made up: the next
    call's `overview.since` reaches back to the previous call, so nothing is missed.
    Return `Notice` values to mail the administrator (the shipped `digest` plugin does);
    suggestions must name their `session`.

    :param overview: the answers recorded since the previous call, the open suggestions,
        and the sessions starting within the plugin's `days_before` days.
    :param context: the time, the event id (``daily:<plugin>:<day>``); no later sessions.
    :return: None, a notice or suggestion, or a list of them.
    :raises: nothing on purpose; an exception is logged with the plugin's name, the hook
        and the event id, the other plugins still run, and the event is marked done.
    """


@hookspec
def on_shutdown() -> None:
    """Called once when tmcaldav is done with its plugins (a command ends, the daemon
    stops). Flush queued work within a few seconds and release resources.

    A failure is logged with the plugin's name; the others are still called.

    :return: nothing; a return value is ignored.
    """
