"""The student's answer page: `/a/{token}`, no login, the signed link is the key.

A GET only shows (mail scanners open every link in a message); the answer is recorded
by the POST of one of the page's buttons, through the one apply step
`sync.apply_answers` with source `link` and the click's time, so hooks fire once. In
imip mode the PARTSTAT goes into the organizer's copy on the CalDAV server first (as a
REPLY would: `Publisher.apply_reply`); in server mode the server copy is the student's
client's business and the page says the calendar may still show the old answer.

Cross-site POSTs are refused twice over: the form carries a nonce derived from the
token (a page elsewhere cannot know it without the link), and a request whose
`Sec-Fetch-Site` or `Origin` says it came from another site is refused. The page shows
only the student's own enrollment, sets no cookie, and answers a forged or altered
token with a plain 404.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tmcaldav.app import App
from tmcaldav.caldav import CalendarError
from tmcaldav.domain import CalendarStatus
from tmcaldav.links import LINK_ANSWERS, LinkState, make_token, verify
from tmcaldav.publish import PublishError
from tmcaldav.store import Store
from tmcaldav.store.model import Enrollment, utcnow
from tmcaldav.sync import AnswerChange, apply_answers

log = logging.getLogger(__name__)

NONCE_FIELD = "nonce"


# ---- words -----------------------------------------------------------------------------

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your answer",
        "hello": "Hello {name},",
        "question": "Will you come to this training session?",
        "when": "When",
        "where": "Where",
        "current": "Your answer so far",
        "accepted": "Yes",
        "tentative": "Maybe",
        "declined": "No",
        "invited": "no answer yet",
        "delegated": "delegated",
        "confirm": "Confirm your answer with a button below (the link alone records nothing).",
        "saved": "Thank you: your answer “{answer}” is recorded.",
        "server_note": (
            "Your calendar may still show your old answer until you change it there too."
        ),
        "stale": "This session has a new time; please answer again for the new time.",
        "expired": "This link has expired: the session is over.",
        "cancelled_session": "This training session has been cancelled.",
        "not_enrolled": "You are no longer enrolled in this training session.",
        "not_found": "There is no such page.",
        "too_many": "Too many answers in a short time; please wait a few minutes.",
        "foreign": "This answer did not come from the answer page; please open the link again.",
        "failed": "Your answer could not be recorded just now; please try again later.",
    },
    "de": {
        "title": "Ihre Antwort",
        "hello": "Hallo {name},",
        "question": "Nehmen Sie an diesem Schulungstermin teil?",
        "when": "Wann",
        "where": "Wo",
        "current": "Ihre bisherige Antwort",
        "accepted": "Ja",
        "tentative": "Vielleicht",
        "declined": "Nein",
        "invited": "noch keine Antwort",
        "delegated": "delegiert",
        "confirm": (
            "Bestätigen Sie Ihre Antwort mit einer der Schaltflächen "
            "(der Link allein speichert nichts)."
        ),
        "saved": "Danke: Ihre Antwort „{answer}“ ist gespeichert.",
        "server_note": (
            "Ihr Kalender zeigt möglicherweise noch die alte Antwort, bis Sie sie dort "
            "ebenfalls ändern."
        ),
        "stale": "Dieser Termin hat eine neue Zeit; bitte antworten Sie für die neue Zeit.",
        "expired": "Dieser Link ist abgelaufen: der Termin ist vorbei.",
        "cancelled_session": "Dieser Schulungstermin wurde abgesagt.",
        "not_enrolled": "Sie sind für diesen Schulungstermin nicht mehr angemeldet.",
        "not_found": "Diese Seite gibt es nicht.",
        "too_many": "Zu viele Antworten in kurzer Zeit; bitte warten Sie einige Minuten.",
        "foreign": (
            "Diese Antwort kam nicht von der Antwortseite; bitte öffnen Sie den Link erneut."
        ),
        "failed": "Ihre Antwort konnte gerade nicht gespeichert werden; bitte später erneut.",
    },
}


def language(accept_language: str | None) -> str:
    """The page's language from Accept-Language: the best-weighted of en and de."""
    best, best_q = "en", -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in WORDS:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Equal weights: the first named wins.
        if q > best_q or (q == best_q and position == 0):
            best, best_q = primary, q
    return best


# ---- abuse resistance ------------------------------------------------------------------
# (How many answers one link may give is counted in the store: web/throttle.py.)


def nonce(key: bytes, token: str) -> str:
    """The form's nonce: only the server (and the page it served) knows it."""
    return hmac.new(key, b"form:" + token.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def cross_site(request: Request, public_url: str | None) -> bool:
    """True when the browser says the POST came from another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = urlsplit(origin).netloc
    allowed = {request.headers.get("host", "")}
    if public_url:
        allowed.add(urlsplit(public_url).netloc)
    return host not in allowed


# ---- what the page shows ---------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """The enrollment a token names, as the page shows it."""

    enrollment_id: int
    key: str
    title: str
    when: str
    location: str | None
    name: str | None
    email: str
    answer: str
    answer_sequence: int | None
    sequence: int
    end_at: datetime
    session_cancelled: bool
    enrolled: bool


def when_text(start: datetime, end: datetime, tz: str) -> str:
    """The session's time in its own zone."""
    zone = ZoneInfo(tz)
    s, e = start.astimezone(zone), end.astimezone(zone)
    if s.date() == e.date():
        return f"{s:%Y-%m-%d} {s:%H:%M}–{e:%H:%M} ({tz})"
    return f"{s:%Y-%m-%d %H:%M} – {e:%Y-%m-%d %H:%M} ({tz})"


def _seen(enrollment: Enrollment) -> Seen:
    session = enrollment.session
    return Seen(
        enrollment_id=enrollment.id,
        key=session.key,
        title=session.title,
        when=when_text(session.start_at, session.end_at, session.tz),
        location=session.location,
        name=enrollment.person.name,
        email=enrollment.person.email,
        answer=enrollment.calendar_status,
        answer_sequence=enrollment.answer_sequence,
        sequence=session.sequence,
        end_at=session.end_at,
        session_cancelled=session.status == "cancelled",
        enrolled=enrollment.status != "cancelled" and enrollment.calendar_status != "not_invited",
    )


def look_up(store: Store, enrollment_id: int) -> Seen | None:
    """The enrollment a token names, or None when it is gone."""
    with store.scratch() as db:
        enrollment = db.get(Enrollment, enrollment_id)
        return _seen(enrollment) if enrollment is not None else None


def record(app: App, enrollment_id: int, answer: str, now: datetime) -> bool:
    """Record a link answer; True when it went into the server's copy too (imip mode)."""
    seen = look_up(app.store, enrollment_id)
    if seen is None:
        return False
    imip = app.config.scheduling.mode == "imip"
    if seen.answer == answer and seen.answer_sequence == seen.sequence:
        # The same button pressed again (or a double click): nothing new to record.
        return imip
    written = None
    if imip:
        from tmcaldav.ical import STATUS_TO_PARTSTAT

        written = app.publisher.apply_reply(seen.key, seen.email, STATUS_TO_PARTSTAT[answer])
    with app.store.transaction() as db:
        enrollment = db.get(Enrollment, enrollment_id)
        if enrollment is None:
            return False
        session = enrollment.session
        change = AnswerChange(
            enrollment_id=enrollment.id,
            session_key=session.key,
            email=enrollment.person.email,
            old=enrollment.calendar_status,
            new=answer,
            sequence=session.sequence,
            dtstamp=now,
            enrollment_status=enrollment.status,
        )
        apply_answers(
            db,
            [change],
            source="link",
            observed_at=now,
            responded_at={enrollment.id: now},
            on_server=imip,
        )
        if written is not None and written.in_step:
            # Our own write: the next poll recognises this ETag and finds nothing new.
            session.etag = written.event.etag
            session.href = written.event.href
    log.info("session %s: a student answered %s by link", seen.key, answer)
    return imip


# ---- the routes ------------------------------------------------------------------------


def _page(
    request: Request,
    lang: str,
    status: int,
    *,
    seen: Seen | None = None,
    token: str | None = None,
    message: str | None = None,
    kind: str = "info",
    form: bool = False,
    saved: bool = False,
    proposed: str | None = None,
) -> HTMLResponse:
    from tmcaldav.web.http import web_of

    web = web_of(request)
    words = WORDS[lang]
    context = {
        "lang": lang,
        "w": words,
        "seen": seen,
        "token": token,
        "nonce": nonce(web.link_key, token) if token else None,
        "message": message,
        "kind": kind,
        "form": form,
        "saved": saved,
        "proposed": proposed,
        "answers": [str(a) for a in LINK_ANSWERS],
        "u": web.url,
        "imip": web.app.config.scheduling.mode == "imip",
    }
    html = web.templates.get_template("answer.html").render(context)
    return HTMLResponse(html, status, headers={"referrer-policy": "no-referrer"})


async def _resolve(request: Request) -> tuple[str, Seen | None, str | None, HTMLResponse | None]:
    """(token to use, enrollment, state message) or a finished response."""
    from tmcaldav.web.http import web_of

    web = web_of(request)
    lang = language(request.headers.get("accept-language"))
    words = WORDS[lang]
    token: str = request.path_params["token"]
    now = utcnow()
    read = verify(web.link_key, token, now=now)
    if read is None:
        return token, None, None, _page(request, lang, 404, message=words["not_found"])
    if read.state is LinkState.EXPIRED:
        return token, None, None, _page(request, lang, 410, message=words["expired"])
    seen = await run_in_threadpool(look_up, web.app.store, read.enrollment_id)
    if seen is None or not seen.enrolled:
        return token, None, None, _page(request, lang, 410, message=words["not_enrolled"])
    if seen.session_cancelled:
        return token, None, None, _page(request, lang, 410, message=words["cancelled_session"])
    if read.token.sequence < seen.sequence:
        # Rescheduled since the link was sent: the same student, asked again for the new
        # time with a link for it.
        fresh = make_token(web.link_key, seen.enrollment_id, seen.sequence, seen.end_at)
        return fresh, seen, words["stale"], None
    return token, seen, None, None


async def answer_page(request: Request) -> Response:
    """GET /a/{token}: the session, the student's answer, three buttons. Records nothing."""
    lang = language(request.headers.get("accept-language"))
    token, seen, note, done = await _resolve(request)
    if done is not None:
        return done
    proposed = request.query_params.get("answer")
    return _page(
        request,
        lang,
        200,
        seen=seen,
        token=token,
        message=note or WORDS[lang]["confirm"],
        kind="warning" if note else "info",
        form=True,
        proposed=proposed if proposed in [str(a) for a in LINK_ANSWERS] else None,
    )


async def answer_post(request: Request) -> Response:
    """POST /a/{token}: record the button's answer (source `link`, the click's time)."""
    from tmcaldav.web.http import MAX_BODY, web_of

    web = web_of(request)
    lang = language(request.headers.get("accept-language"))
    words = WORDS[lang]
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        return _page(request, lang, 413, message=words["not_found"])
    token, seen, note, done = await _resolve(request)
    if done is not None:
        return done
    assert seen is not None
    form = await request.form(max_files=0, max_fields=10)
    given = form.get(NONCE_FIELD)
    answer = form.get("answer")
    posted: str = request.path_params["token"]
    if (
        cross_site(request, web.app.config.web.public_url)
        or not isinstance(given, str)
        or not hmac.compare_digest(given, nonce(web.link_key, posted))
    ):
        return _page(request, lang, 403, message=words["foreign"], kind="error")
    if note is not None:
        # An answer for the old time is not an answer for the new one: ask again.
        return _page(
            request, lang, 409, seen=seen, token=token, message=note, kind="warning", form=True
        )
    if answer not in [str(a) for a in LINK_ANSWERS]:
        return _page(
            request, lang, 400, seen=seen, token=token, message=words["confirm"], form=True
        )
    if not await run_in_threadpool(web.link_throttle.allow, posted):
        return _page(request, lang, 429, message=words["too_many"], kind="error")
    try:
        await run_in_threadpool(
            web.actions.locked, record, web.app, seen.enrollment_id, str(answer), utcnow()
        )
    except (CalendarError, PublishError) as e:
        log.warning("session %s: a link answer could not be written: %s", seen.key, e)
        return _page(request, lang, 503, seen=seen, token=token, message=words["failed"])
    after = await run_in_threadpool(look_up, web.app.store, seen.enrollment_id)
    label = words[str(CalendarStatus(str(answer)))]
    return _page(
        request,
        lang,
        200,
        seen=after or seen,
        token=token,
        message=words["saved"].format(answer=label),
        kind="ok",
        form=True,
        saved=True,
    )


ROUTES = [
    Route("/a/{token}", answer_page, methods=["GET"]),
    Route("/a/{token}", answer_post, methods=["POST"]),
]

__all__ = ["ROUTES", "WORDS", "language", "nonce", "record"]
