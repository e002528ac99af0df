"""The JSON API for other systems (an LMS, a script): the CLI's `--json` objects over
HTTP, and the session page's actions as POSTs.

Authenticate with `Authorization: Bearer TOKEN` (`tmcaldav user token NAME`); a
browser's login cookie works too, with the CSRF token in `X-CSRF-Token` on POSTs.
Errors are `{"error": message, "status": code}` with 400 (bad input), 401 (no or
unknown token), 403 (a viewer acting), 404 (no such session, student or suggestion),
409 (a suggestion already applied, dismissed or withdrawn), 502 (the CalDAV server
failed) or 503 (the store or configuration is not usable now).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tmcaldav.store import get_enrollment, get_session, history
from tmcaldav.store.model import utcnow
from tmcaldav.store.outcomes import session_page_with_forecast
from tmcaldav.store.pages import history_rows, session_list
from tmcaldav.web.actions import ActionRefused, session_fields
from tmcaldav.web.http import Call, guarded


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status)


async def _read(call: Call, read: Callable[[Session], Any]) -> JSONResponse:
    """`read` the store (in a worker thread, in a transaction that is rolled back) and
    answer with what it returned, as JSON: every GET of the API."""

    def in_store() -> Any:
        with call.app.store.scratch() as db:
            return read(db)

    return _json(await run_in_threadpool(in_store))


def _emails(call: Call, required: bool = True) -> list[str]:
    emails = call.body.get("emails", [])
    if isinstance(call.body.get("email"), str):
        emails = [call.body["email"], *emails]
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise ActionRefused('"emails" must be a list of addresses')
    if required and not emails:
        raise ActionRefused('name the students: "emails": ["ann@example.org", ...]')
    return emails


def _text(call: Call, name: str) -> str | None:
    value = call.body.get(name)
    if value is not None and not isinstance(value, str):
        raise ActionRefused(f'"{name}" must be a string')
    return value


@guarded(api=True)
async def me(call: Call) -> Response:
    """Who the token or cookie belongs to."""
    return _json({"name": call.user.name, "role": call.user.role})


@guarded(api=True)
async def sessions(call: Call) -> Response:
    """Every session, soonest first: the objects of `session list --json`."""
    return await _read(call, session_list)


@guarded(api=True)
async def session(call: Call) -> Response:
    """One session page: the object of `session show KEY --json`."""
    key = call.param("key")
    return await _read(call, lambda db: session_page_with_forecast(db, key, utcnow()))


@guarded(api=True)
async def student_history(call: Call) -> Response:
    """Every answer of one student: the rows of `session history KEY EMAIL --json`."""
    key, email = call.param("key"), call.param("email")

    def read(db: Session) -> list[dict[str, Any]]:
        enrollment = get_enrollment(db, get_session(db, key), email)
        return history_rows(list(history(db, enrollment)))

    return await _read(call, read)


@guarded(api=True)
async def suggestions(call: Call) -> Response:
    """Open suggestions (`?all=1`: every one; `?session=KEY`: one session's)."""
    from tmcaldav.hooks.suggestions import list_suggestions

    key = call.request.query_params.get("session")
    everything = call.request.query_params.get("all") in ("1", "true")
    return await _read(
        call, lambda db: list_suggestions(db, session_key=key, include_decided=everything)
    )


@guarded(api=True)
async def no_shows(call: Call) -> Response:
    """The rows of `report no-shows --json`."""
    from tmcaldav.store.reports import no_show_report

    return await _read(call, no_show_report)


@guarded(api=True)
async def timing(call: Call) -> Response:
    """How long after the invitation students answer."""
    from tmcaldav.store.reports import answer_timing

    return await _read(call, answer_timing)


# ---- actions -------------------------------------------------------------------------------


@guarded(api=True, act=True)
async def invite(call: Call) -> Response:
    """{"emails": [...], "all_enrolled": false, "resend": false} → {"invited": [...]}."""
    key = call.param("key")
    all_enrolled = call.body.get("all_enrolled") is True
    resend = call.body.get("resend") is True
    emails = _emails(call, required=not all_enrolled)
    newly = await run_in_threadpool(
        lambda: call.web.actions.invite(key, emails, all_enrolled=all_enrolled, resend=resend)
    )
    return _json({"session": key, "invited": newly, "resent": resend})


@guarded(api=True, act=True)
async def record_answer(call: Call) -> Response:
    """{"emails": [...] or "email": ..., "answer": accepted|tentative|declined, "note"}:
    an answer given another way (by phone), recorded as `tmcaldav answer` does."""
    key = call.param("key")
    answer = _text(call, "answer") or ""
    done = await run_in_threadpool(
        call.web.actions.answer, key, _emails(call), answer, _text(call, "note")
    )
    return _json({"session": key, "answer": answer, "recorded": done, "source": "manual"})


@guarded(api=True, act=True)
async def set_status(call: Call) -> Response:
    """{"emails": [...] or "email": ..., "status": ..., "note": ...} → the changes."""
    key = call.param("key")
    status = _text(call, "status") or ""
    changes = await run_in_threadpool(
        call.web.actions.set_status, key, _emails(call), status, _text(call, "note")
    )
    return _json(
        {
            "session": key,
            "changes": [{"email": c.email, "old": c.old, "status": c.new} for c in changes],
        }
    )


@guarded(api=True, act=True)
async def note(call: Call) -> Response:
    """{"email": ..., "text": ...} → 201."""
    key = call.param("key")
    email = _text(call, "email") or ""
    await run_in_threadpool(
        call.web.actions.note, key, email, _text(call, "text") or "", call.user.name
    )
    return _json({"session": key, "email": email.strip().lower(), "noted": True}, 201)


@guarded(api=True, act=True)
async def cancel(call: Call) -> Response:
    """Cancel the session (students receive the cancellation)."""
    key = call.param("key")
    updated = await run_in_threadpool(call.web.actions.cancel, key)
    return _json({"session": key, "status": "cancelled", "event_updated": updated})


@guarded(api=True, act=True)
async def edit(call: Call) -> Response:
    """{"start", "end", "tz", "title", "location", ...} → {"changed": [...]}; a new time
    is a reschedule: every invited student is asked again."""
    key = call.param("key")
    fields = session_fields(call.body)
    changed = await run_in_threadpool(call.web.actions.edit, key, fields)
    names = {"start_at": "start", "end_at": "end"}
    return _json({"session": key, "changed": sorted(names.get(c, c) for c in changed)})


def _suggestion_id(call: Call) -> int:
    try:
        return int(call.param("id"))
    except ValueError as e:
        raise ActionRefused(f"not a suggestion id: {call.param('id')!r}") from e


@guarded(api=True, act=True)
async def apply(call: Call) -> Response:
    """Apply a suggestion ({"note": ...} optional); 409 when it is no longer open."""
    said = await run_in_threadpool(
        call.web.actions.apply_suggestion, _suggestion_id(call), _text(call, "note")
    )
    return _json({"id": _suggestion_id(call), "state": "applied", "message": said})


@guarded(api=True, act=True)
async def dismiss(call: Call) -> Response:
    """Dismiss a suggestion; 409 when it is no longer open."""
    said = await run_in_threadpool(call.web.actions.dismiss_suggestion, _suggestion_id(call))
    return _json({"id": _suggestion_id(call), "state": "dismissed", "message": said})


ROUTES = [
    Route("/api/me", me),
    Route("/api/sessions", sessions),
    Route("/api/sessions/{key}", session),
    Route("/api/sessions/{key}/students/{email}/history", student_history),
    Route("/api/sessions/{key}/invite", invite, methods=["POST"]),
    Route("/api/sessions/{key}/status", set_status, methods=["POST"]),
    Route("/api/sessions/{key}/answer", record_answer, methods=["POST"]),
    Route("/api/sessions/{key}/notes", note, methods=["POST"]),
    Route("/api/sessions/{key}/cancel", cancel, methods=["POST"]),
    Route("/api/sessions/{key}/edit", edit, methods=["POST"]),
    Route("/api/suggestions", suggestions),
    Route("/api/suggestions/{id}/apply", apply, methods=["POST"]),
    Route("/api/suggestions/{id}/dismiss", dismiss, methods=["POST"]),
    Route("/api/reports/no-shows", no_shows),
    Route("/api/reports/answer-timing", timing),
]
