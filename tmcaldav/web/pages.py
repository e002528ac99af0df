"""The HTML pages: login, sessions, the session page and its actions, a student's
history, suggestions, reports, and the session page's live channel (SSE).

Every state-changing request is a POST with the page's CSRF token, done by an admin,
answered with a redirect back to the page and a one-line message (post/redirect/get);
the invitation, the reschedule and the cancellation go through a review page first.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tmcaldav.store import get_enrollment, get_session, history
from tmcaldav.store.pages import history_rows
from tmcaldav.web.actions import ActionRefused, invitation_preview, session_fields
from tmcaldav.web.auth import CSRF_FIELD, csrf_ok, new_csrf_token
from tmcaldav.web.http import (
    Call,
    client_address,
    csrf_token,
    flash_and_go,
    guarded,
    render,
    web_of,
)
from tmcaldav.web.reads import all_suggestions, session_view, sessions_overview
from tmcaldav.words import plural


def session_path(key: str) -> str:
    """The session page's path."""
    return f"/sessions/{quote(key, safe='')}"


def local_path(value: str | None, default: str) -> str:
    """`value` when it is a path on this site (no scheme, no host), else `default`."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default


# ---- login ---------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    """The login page."""
    return await render(
        request, "login.html", {"next": local_path(request.query_params.get("next"), ""),
                                "error": None, "name": ""}
    )


async def login(request: Request) -> Response:
    """Check a name and password; slowed down after failures."""
    web = web_of(request)
    form = await request.form(max_files=0, max_fields=10)
    name = str(form.get("name") or "").strip()
    password = str(form.get("password") or "")
    target = local_path(str(form.get("next") or ""), "")

    async def again(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
        page = await render(
            request, "login.html", {"next": target, "error": error, "name": name}, status
        )
        if headers:
            page.headers.update(headers)
        return page

    if not csrf_ok(request.session.get("csrf"), str(form.get(CSRF_FIELD) or "")):
        return await again(
            403, "Your browser did not send this page's login cookie; allow cookies and retry."
        )
    address = client_address(web, request)
    wait = await run_in_threadpool(web.throttle.wait_needed, name, address)
    if wait > 0:
        seconds = int(wait) + 1
        return await again(
            429,
            f"Too many failed logins: try again in {seconds} s.",
            {"Retry-After": str(seconds)},
        )
    from tmcaldav.web.users import login as check_login

    def check() -> Any:
        with web.app.store.scratch() as db:
            return check_login(db, name, password)

    user = await run_in_threadpool(check)
    if user is None:
        await run_in_threadpool(web.throttle.failed, name, address)
        return await again(401, "Wrong name or password.")
    await run_in_threadpool(web.throttle.succeeded, name, address)
    # A new browser session: nothing from before the login is carried over.
    request.session.clear()
    request.session["uid"] = user.id
    request.session["csrf"] = new_csrf_token()
    return RedirectResponse(web.url(target or "/sessions"), 303)


@guarded()
async def logout(call: Call) -> Response:
    """End the login."""
    call.request.session.clear()
    return RedirectResponse(call.web.url("/login"), 303)


async def home(request: Request) -> Response:
    """The sessions page is the start page."""
    return RedirectResponse(web_of(request).url("/sessions"), 303)


# ---- sessions and the session page --------------------------------------------------


@guarded()
async def sessions(call: Call) -> Response:
    """Upcoming sessions (past ones a click away), a page at a time."""
    past = call.request.query_params.get("past") == "1"
    try:
        page = max(0, int(call.request.query_params.get("page", "0")))
    except ValueError:
        page = 0

    def read() -> Any:
        with call.app.store.scratch() as db:
            return sessions_overview(db, past=past, page=page)

    overview = await run_in_threadpool(read)
    return await render(call, "sessions.html", {"overview": overview, "nav": "sessions"})


async def _view(call: Call, key: str) -> Any:
    def read() -> Any:
        with call.app.store.scratch() as db:
            return session_view(db, key)

    return await run_in_threadpool(read)


@guarded()
async def session(call: Call) -> Response:
    """The session page: the students with the live Calendar column, the actions."""
    view = await _view(call, call.param("key"))
    return await render(call, "session.html", {"view": view, "page": view.page, "nav": "sessions"})


@guarded()
async def live(call: Call) -> Response:
    """The session page's live channel: Server-Sent Events, one `change` event (id: the
    change id) whenever the session changed; resumes after Last-Event-ID or ?after=."""
    web, key = call.web, call.param("key")

    def find() -> int:
        with call.app.store.scratch() as db:
            return get_session(db, key, notes=False).id

    session_id = await run_in_threadpool(find)
    given = call.request.headers.get("last-event-id") or call.request.query_params.get("after")
    try:
        after = int(given) if given else web.feed.latest
    except ValueError:
        after = web.feed.latest

    async def stream() -> AsyncIterator[str]:
        cursor = after
        # Reconnect after 1 s: the page is back within the poll interval + 1 s.
        yield "retry: 1000\n\n"
        found = await web.feed.catch_up(session_id, cursor)
        while True:
            if found is not None:
                cursor = max(cursor, found)
                data = json.dumps({"session": key, "change": found})
                yield f"id: {found}\nevent: change\ndata: {data}\n\n"
            else:
                yield f": still here {int(time.time())}\n\n"
            found = await web.feed.wait(session_id, cursor, web.keepalive)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@guarded()
async def student(call: Call) -> Response:
    """One student in one session: every answer with its time and source, every note."""
    key, email = call.param("key"), call.param("email")

    def read() -> Any:
        with call.app.store.scratch() as db:
            session = get_session(db, key)
            enrollment = get_enrollment(db, session, email)
            view = session_view(db, key)
            row = next(s for s in view.page["students"] if s["email"] == enrollment.person.email)
            notes = [
                {"text": n.text, "author": n.author, "created_at": n.created_at}
                for n in enrollment.notes
            ]
            return view, row, history_rows(list(history(db, enrollment))), notes

    view, row, answers, notes = await run_in_threadpool(read)
    return await render(
        call,
        "student.html",
        {"page": view.page, "s": row, "answers": answers, "notes": notes, "nav": "sessions",
         "sources": view.sources},
    )


# ---- actions on the session page -----------------------------------------------------


@guarded(act=True)
async def act(call: Call) -> Response:
    """The session page's action bar: review an invitation, or set a status."""
    key = call.param("key")
    action = call.field("action")
    emails = call.fields("email")
    if action in ("invite", "resend"):
        return await _review(call, key, emails, resend=action == "resend")
    if action == "status":
        status = call.field("status")
        changes = await run_in_threadpool(
            call.web.actions.set_status, key, emails, status, call.field("note") or None
        )
        said = ", ".join(f"{c.email} ({c.old} → {c.new})" for c in changes)
        return flash_and_go(call, f"Status set: {said}", session_path(key))
    if action == "answer":
        answer = call.field("answer") or ""
        done = await run_in_threadpool(
            call.web.actions.answer, key, emails, answer, call.field("note") or None
        )
        return flash_and_go(
            call, f"Answer recorded by hand ({answer}): {', '.join(done)}", session_path(key)
        )
    raise ActionRefused("choose an action: invite, resend, set status or record an answer")


async def _review(
    call: Call, key: str, emails: list[str], *, resend: bool, error: str | None = None
) -> Response:
    view = await _view(call, key)
    students = {s["email"]: s for s in view.page["students"]}
    wanted = dict.fromkeys(e.strip().lower() for e in emails)
    chosen = [students[e] for e in wanted if e in students]
    if not chosen:
        raise ActionRefused("select at least one student on the session page first")
    preview = await run_in_threadpool(
        invitation_preview, call.app, view.page, [s["email"] for s in chosen]
    )
    return await render(
        call,
        "review.html",
        {"page": view.page, "chosen": chosen, "resend": resend, "preview": preview,
         "error": error, "nav": "sessions"},
        400 if error else 200,
    )


@guarded(act=True)
async def invite(call: Call) -> Response:
    """Send (or resend) the invitations after the review step, when it was confirmed."""
    key = call.param("key")
    emails = call.fields("email")
    resend = call.field("resend") == "1"
    if call.field("confirm") != "yes":
        return await _review(
            call, key, emails, resend=resend,
            error="Tick “Confirm calendar invitation” to send it.",
        )
    newly = await run_in_threadpool(
        lambda: call.web.actions.invite(key, emails, resend=resend)
    )
    if resend:
        message = f"Invitation sent again to {', '.join(emails)}."
    elif newly:
        message = f"Calendar invitation sent to {', '.join(newly)}."
    else:
        message = "They were invited already; nothing new was sent."
    return flash_and_go(call, message, session_path(key))


@guarded(act=True)
async def add_note(call: Call) -> Response:
    """Add a note to a student's enrollment."""
    key, email = call.param("key"), call.field("email")
    await run_in_threadpool(
        call.web.actions.note, key, email, call.field("text"), call.user.name
    )
    target = local_path(call.field("next"), session_path(key))
    return flash_and_go(call, f"Note added for {email}.", target)


@guarded()
async def attendance(call: Call) -> Response:
    """After the session: tick attended or no-show for everyone at once."""
    key = call.param("key")
    view = await _view(call, key)
    seated = [
        s for s in view.page["students"] if s["status"] in ("enrolled", "attended", "no_show")
    ]
    return await render(
        call, "attendance.html", {"page": view.page, "seated": seated, "nav": "sessions"}
    )


@guarded(act=True)
async def record_attendance(call: Call) -> Response:
    """Set attended / no-show for each student whose choice changed."""
    key = call.param("key")
    view = await _view(call, key)
    wanted: dict[str, list[str]] = {}
    for s in view.page["students"]:
        choice = call.field(f"attendance:{s['email']}")
        if choice in ("attended", "no_show", "enrolled") and choice != s["status"]:
            wanted.setdefault(choice, []).append(s["email"])
    if not wanted:
        return flash_and_go(call, "Attendance unchanged.", session_path(key))
    done = []
    for status, emails in wanted.items():
        done += await run_in_threadpool(call.web.actions.set_status, key, emails, status, None)
    return flash_and_go(
        call, f"Attendance recorded for {plural(len(done), 'student')}.", session_path(key)
    )


@guarded()
async def cancel_form(call: Call) -> Response:
    """Ask before cancelling: say what the students will receive."""
    view = await _view(call, call.param("key"))
    return await render(
        call,
        "cancel.html",
        {"page": view.page, "invited": _invited(view.page), "nav": "sessions"},
    )


@guarded(act=True)
async def cancel(call: Call) -> Response:
    """Cancel the session, once confirmed."""
    key = call.param("key")
    if call.field("confirm") != "yes":
        view = await _view(call, key)
        return await render(
            call, "cancel.html",
            {"page": view.page, "invited": _invited(view.page), "nav": "sessions",
             "error": "Tick the box to confirm the cancellation."},
            400,
        )
    updated = await run_in_threadpool(call.web.actions.cancel, key)
    return flash_and_go(
        call,
        f"Session {key} cancelled" + ("; the calendar event says so." if updated else "."),
        session_path(key),
    )


def _invited(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s for s in page["students"]
        if s["calendar"] != "not_invited" and s["status"] != "cancelled"
    ]


def _local_input(value: str | None, tz: str) -> str:
    """An ISO time as the value of a datetime-local input, in the session's zone."""
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M")


@guarded()
async def reschedule_form(call: Call) -> Response:
    """Change the session's time or place."""
    view = await _view(call, call.param("key"))
    page = view.page
    values = {
        "start": _local_input(page["start"], page["tz"]),
        "end": _local_input(page["end"], page["tz"]),
        "tz": page["tz"],
        "location": page["location"] or "",
    }
    return await render(
        call, "reschedule.html",
        {"page": page, "values": values, "confirming": False, "nav": "sessions"},
    )


@guarded(act=True)
async def reschedule(call: Call) -> Response:
    """Show what will change and who is asked again; with the confirmation, do it."""
    key = call.param("key")
    values = {n: call.field(n) for n in ("start", "end", "tz", "location")}
    fields = session_fields(values)
    view = await _view(call, key)
    if call.field("confirm") != "yes":
        return await render(
            call, "reschedule.html",
            {"page": view.page, "values": values, "confirming": True,
             "invited": _invited(view.page), "nav": "sessions"},
        )
    changed = await run_in_threadpool(call.web.actions.edit, key, fields)
    names = {"start_at": "start", "end_at": "end"}
    listed = ", ".join(sorted(names.get(c, c) for c in changed))
    return flash_and_go(
        call, f"Session {key}: " + (f"changed {listed}." if changed else "nothing changed."),
        session_path(key),
    )


# ---- suggestions and reports ------------------------------------------------------------


@guarded()
async def suggestions(call: Call) -> Response:
    """What the plugins suggest, across every session."""
    everything = call.request.query_params.get("all") == "1"

    def read() -> Any:
        with call.app.store.scratch() as db:
            return all_suggestions(db, include_decided=everything)

    rows = await run_in_threadpool(read)
    return await render(
        call, "suggestions.html", {"rows": rows, "everything": everything, "nav": "suggestions"}
    )


@guarded(act=True)
async def decide(call: Call) -> Response:
    """Apply or dismiss a suggestion, then go back where the button was."""
    try:
        suggestion_id = int(call.param("id"))
    except ValueError as e:
        raise ActionRefused("not a suggestion id") from e
    target = local_path(call.field("next"), "/suggestions")
    if call.request.url.path.endswith("/apply"):
        said = await run_in_threadpool(
            call.web.actions.apply_suggestion, suggestion_id, call.field("note") or None
        )
    else:
        said = await run_in_threadpool(call.web.actions.dismiss_suggestion, suggestion_id)
    return flash_and_go(call, said[:1].upper() + said[1:] + ".", target)


@guarded()
async def reports(call: Call) -> Response:
    """The no-show report (table and chart) and how soon students answer."""
    from tmcaldav.store.reports import answer_timing, no_show_report
    from tmcaldav.web.present import bar_chart

    def read() -> Any:
        with call.app.store.scratch() as db:
            return no_show_report(db), answer_timing(db)

    no_shows, timing = await run_in_threadpool(read)
    no_show_chart = bar_chart(
        [
            (r["name"] or r["email"], [r["sessions"], r["no_shows"], r["accepted_no_shows"]])
            for r in no_shows[:20]
        ],
        ["sessions", "no-shows", "accepted, did not come"],
    )
    timing_chart = bar_chart(
        [(b["label"], [b["count"]]) for b in timing["buckets"]]
        + [("no answer yet", [timing["unanswered"]])],
        ["students"],
    )
    return await render(
        call,
        "reports.html",
        {
            "no_shows": no_shows,
            "timing": timing,
            "no_show_chart": no_show_chart,
            "timing_chart": timing_chart,
            "nav": "reports",
        },
    )


async def not_found(request: Request, exc: Exception) -> Response:
    """404 as a page (or JSON under /api)."""
    from tmcaldav.web.http import json_error

    if request.url.path.startswith(web_of(request).url("/api/")):
        return json_error(404, "no such endpoint; see README, “The web interface”")
    return await render(
        request, "error.html",
        {"status": 404, "message": "There is no such page.", "back": "/sessions"}, 404,
    )


ROUTES = [
    Route("/", home),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/sessions", sessions),
    Route("/sessions/{key}", session),
    Route("/sessions/{key}/live", live),
    Route("/sessions/{key}/students/{email}", student),
    Route("/sessions/{key}/act", act, methods=["POST"]),
    Route("/sessions/{key}/invite", invite, methods=["POST"]),
    Route("/sessions/{key}/notes", add_note, methods=["POST"]),
    Route("/sessions/{key}/attendance", attendance, methods=["GET"]),
    Route("/sessions/{key}/attendance", record_attendance, methods=["POST"]),
    Route("/sessions/{key}/cancel", cancel_form, methods=["GET"]),
    Route("/sessions/{key}/cancel", cancel, methods=["POST"]),
    Route("/sessions/{key}/reschedule", reschedule_form, methods=["GET"]),
    Route("/sessions/{key}/reschedule", reschedule, methods=["POST"]),
    Route("/suggestions", suggestions),
    Route("/suggestions/{id}/apply", decide, methods=["POST"]),
    Route("/suggestions/{id}/dismiss", decide, methods=["POST"]),
    Route("/reports", reports),
]

__all__ = ["ROUTES", "csrf_token", "not_found", "session_path"]
