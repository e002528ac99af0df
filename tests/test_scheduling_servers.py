"""How real RFC 6638 scheduling servers behave, pinned down over plain HTTP.

Each test runs on Cyrus CalDAV and on Xandikos (multi-user), logged in with Basic
credentials sent up front. The organizer PUTs events with students as ATTENDEEs into
its schedule-default calendar; the server delivers them and brings the students'
answers back. Where the servers differ, the expected value comes from
``scheduling_servers.PROFILES`` (the table in docs/servers.md): a server upgrade that
changes a behaviour fails here, naming the profile field.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import icalendar
import pytest

from tests.scheduling_servers import (
    DEFAULT_USERS,
    CyrusServer,
    SchedulingServer,
    XandikosServer,
    cyrus_server_fixture,  # noqa: F401 - fixture
    processes_under,
    scheduling_server_fixture,  # noqa: F401 - fixture
    start_scheduling_server,
    xandikos_server_fixture,  # noqa: F401 - fixture
)

_CALDAV = "urn:ietf:params:xml:ns:caldav"
_ICS = {"Content-Type": "text/calendar; charset=utf-8"}
_PRINCIPAL_PROPS = (
    '<?xml version="1.0" encoding="utf-8"?>'
    f'<D:propfind xmlns:D="DAV:" xmlns:C="{_CALDAV}"><D:prop>'
    "<C:calendar-user-address-set/><C:schedule-default-calendar-URL/>"
    "<C:schedule-inbox-URL/><C:calendar-home-set/>"
    "</D:prop></D:propfind>"
)
_SYNC = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token>'
    "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"
)
_ETAGS = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
)


# ---- iCalendar helpers -------------------------------------------------------------------


def make_event(
    server: SchedulingServer,
    uid: str,
    *,
    organizer: str | None = None,
    attendees: list[str] | None = None,
    start: str = "20270115T090000Z",
    sequence: int = 0,
    status: str | None = None,
) -> str:
    """A VEVENT from the organizer: itself as CHAIR, each address invited with RSVP."""
    organizer = organizer or server.address(server.organizer)
    if attendees is None:
        attendees = [server.address(user) for user in server.students]
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//tmcaldav//scheduling tests//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T000000Z",
        f"DTSTART:{start}",
        "DURATION:PT2H",
        "SUMMARY:Training",
        f"SEQUENCE:{sequence}",
        *([f"STATUS:{status}"] if status else []),
        f"ORGANIZER;CN=Office:mailto:{organizer}",
        f"ATTENDEE;CN=Office;PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:{organizer}",
        *(
            f"ATTENDEE;CN=Student {n};RSVP=TRUE;PARTSTAT=NEEDS-ACTION;"
            f"ROLE=REQ-PARTICIPANT:mailto:{address}"
            for n, address in enumerate(attendees, 1)
        ),
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


def vevent(text: str) -> icalendar.cal.Component:
    """The one VEVENT of a calendar object."""
    events = icalendar.Calendar.from_ical(text).walk("VEVENT")
    assert len(events) == 1, text
    return events[0]


def attendee(text: str, address: str) -> icalendar.vCalAddress:
    """The ATTENDEE with ``address`` (matched exactly, as the servers store it)."""
    found = [a for a in _attendees(vevent(text)) if str(a) == f"mailto:{address}"]
    assert len(found) == 1, f"{address} in\n{text}"
    return found[0]


def _attendees(event: icalendar.cal.Component) -> list[icalendar.vCalAddress]:
    value = event.get("ATTENDEE", [])
    return value if isinstance(value, list) else [value]


def edit(text: str, change: Callable[[icalendar.cal.Component], None]) -> str:
    """Parse, apply ``change(event)``, serialise."""
    calendar = icalendar.Calendar.from_ical(text)
    (event,) = calendar.walk("VEVENT")
    change(event)
    text_out: str = calendar.to_ical().decode("utf-8")
    return text_out


def prop_text(event: icalendar.cal.Component, name: str) -> str:
    """A property's value as iCalendar text, e.g. ``20270115T090000Z``."""
    raw = event[name].to_ical()
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def sequence_of(text: str) -> int:
    """The SEQUENCE of a calendar object's VEVENT."""
    return int(prop_text(vevent(text), "SEQUENCE"))


def vevent_method(text: str) -> str:
    """The METHOD of an iTIP message."""
    return str(icalendar.Calendar.from_ical(text).get("METHOD", ""))


def unfold(text: str) -> str:
    """iCalendar text with folded lines joined."""
    return re.sub(r"\r?\n[ \t]", "", text)


# ---- DAV helpers -------------------------------------------------------------------------


@dataclass
class Copy:
    """One stored calendar object: where, its ETag, its text."""

    href: str
    etag: str
    text: str


def new_uid() -> str:
    """A fresh UID for one test's event."""
    return f"{uuid.uuid4()}@tmcaldav.test"


def publish(server: SchedulingServer, uid: str, body: str | None = None) -> str:
    """The organizer creates an event (If-None-Match: *); returns its URL."""
    url = f"{server.calendar_url(server.organizer)}{uid.split('@')[0]}.ics"
    answer = server.request(
        server.organizer,
        "PUT",
        url,
        body or make_event(server, uid),
        {**_ICS, "If-None-Match": "*"},
    )
    assert answer.status == 201, answer
    return url


def get(server: SchedulingServer, user: str, url: str, **headers: str) -> Copy:
    """GET one object."""
    answer = server.request(user, "GET", url, headers=headers)
    assert answer.status == 200, answer
    return Copy(url, answer.header("ETag") or "", answer.text)


def put(server: SchedulingServer, user: str, copy: Copy, text: str) -> int:
    """Overwrite an object with If-Match; the status."""
    answer = server.request(user, "PUT", copy.href, text, {**_ICS, "If-Match": copy.etag})
    return answer.status


def find_copy(server: SchedulingServer, user: str, uid: str) -> Copy | None:
    """The user's copy of ``uid`` in their schedule-default calendar (calendar-query)."""
    query = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<C:calendar-query xmlns:D="DAV:" xmlns:C="{_CALDAV}">'
        "<D:prop><D:getetag/></D:prop><C:filter>"
        '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:prop-filter name="UID"><C:text-match collation="i;octet">{uid}</C:text-match>'
        "</C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
    )
    answer = server.request(user, "REPORT", server.calendar_url(user), query, {"Depth": "1"})
    assert answer.status == 207, answer
    found = [r.findtext("{DAV:}href") or "" for r in answer.xml().iter("{DAV:}response")]
    hrefs = [h for h in found if h.endswith(".ics")]
    assert len(hrefs) <= 1, hrefs
    return get(server, user, hrefs[0]) if hrefs else None


def copy_of(server: SchedulingServer, user: str, uid: str) -> Copy:
    """Like find_copy, but the copy must be there."""
    found = find_copy(server, user, uid)
    assert found is not None, f"{user} has no copy of {uid}"
    return found


def inbox_messages(server: SchedulingServer, user: str, uid: str) -> list[str]:
    """The iTIP messages about ``uid`` in the user's schedule inbox, oldest first."""
    answer = server.request(user, "PROPFIND", server.inbox_url(user), _ETAGS, {"Depth": "1"})
    assert answer.status == 207, answer
    texts = []
    for response in answer.xml().iter("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        if href.endswith(".ics"):
            text = get(server, user, href).text
            if f"UID:{uid}" in unfold(text):
                texts.append(text)
    return sorted(texts, key=lambda t: str(vevent(t).decoded("DTSTAMP")))


def answer_as(
    server: SchedulingServer, student: str, uid: str, partstat: str, **params: str
) -> None:
    """The student sets their own PARTSTAT (and params) in their copy, with If-Match."""
    copy = copy_of(server, student, uid)
    me = f"mailto:{server.address(student)}"

    def change(event: icalendar.cal.Component) -> None:
        for a in _attendees(event):
            if str(a) == me:
                a.params["PARTSTAT"] = partstat
                a.params.update(params)

    assert put(server, student, copy, edit(copy.text, change)) in (200, 204)


def schedule_statuses(text: str, addresses: list[str]) -> dict[str, str | None]:
    """SCHEDULE-STATUS of each ATTENDEE address (None: absent)."""
    return {a: attendee(text, a).params.get("SCHEDULE-STATUS") for a in addresses}


@pytest.fixture
def server(scheduling_server: SchedulingServer) -> Iterator[SchedulingServer]:
    """The session's server; fails the test if a test left it stopped."""
    assert scheduling_server.pid is not None
    yield scheduling_server


# ---- principal and layout ---------------------------------------------------------------


def test_principal_addresses_and_default_calendar(server: SchedulingServer) -> None:
    """calendar-user-address-set is mailto:USER@example.org; schedule-default-calendar-URL
    is a property of the schedule inbox (RFC 6638 §9.2), not of the principal."""
    organizer = server.organizer
    answer = server.request(
        organizer, "PROPFIND", server.principal_url(organizer), _PRINCIPAL_PROPS, {"Depth": "0"}
    )
    assert answer.status == 207, answer
    root = answer.xml()
    hrefs = [
        h.text
        for e in root.iter(f"{{{_CALDAV}}}calendar-user-address-set")
        for h in e.iter("{DAV:}href")
    ]
    assert hrefs == [f"mailto:{organizer}@example.org"]
    inbox = root.find(f".//{{{_CALDAV}}}schedule-inbox-URL/{{DAV:}}href")
    assert inbox is not None and inbox.text is not None
    assert inbox.text.rstrip("/") == urlsplit(server.inbox_url(organizer)).path.rstrip("/")
    # On the principal: 404 on both servers.
    assert not [h for e in root.iter(f"{{{_CALDAV}}}schedule-default-calendar-URL") for h in e]

    on_inbox = server.request(
        organizer, "PROPFIND", server.inbox_url(organizer), _PRINCIPAL_PROPS, {"Depth": "0"}
    )
    default = on_inbox.xml().find(f".//{{{_CALDAV}}}schedule-default-calendar-URL/{{DAV:}}href")
    assert server.profile.default_calendar_property_on == "inbox"
    assert default is not None and default.text is not None
    home = urlsplit(server.principal_url(organizer)).path
    if isinstance(server, CyrusServer):
        home = urlsplit(server.calendar_home_url(organizer)).path
    assert default.text == home + server.profile.default_calendar_href
    assert default.text.rstrip("/") == urlsplit(server.calendar_url(organizer)).path.rstrip("/")


def test_anonymous_requests(server: SchedulingServer) -> None:
    """Cyrus answers an anonymous PROPFIND on / with 207 (no challenge): send credentials
    up front. Our Xandikos proxy challenges everything."""
    answer = server.request(None, "PROPFIND", "/", headers={"Depth": "0"})
    assert answer.status == (207 if isinstance(server, CyrusServer) else 401)
    protected = server.request(None, "PROPFIND", server.calendar_url(server.organizer))
    assert protected.status == 401
    assert f'realm="{server.realm}"' in (protected.header("WWW-Authenticate") or "")


# ---- invitation --------------------------------------------------------------------------


def test_invitation_is_delivered_with_schedule_status(server: SchedulingServer) -> None:
    """The PUT delivers to every student at once (synchronously) and stamps
    SCHEDULE-STATUS on each ATTENDEE of the organizer's copy."""
    uid = new_uid()
    url = f"{server.calendar_url(server.organizer)}{uid.split('@')[0]}.ics"
    created = server.request(
        server.organizer, "PUT", url, make_event(server, uid), {**_ICS, "If-None-Match": "*"}
    )
    assert created.status == 201, created
    assert (created.header("ETag") is not None) == server.profile.put_returns_etag
    assert created.header("Schedule-Tag")

    stored = get(server, server.organizer, url).text
    students = [server.address(u) for u in server.students]
    assert set(schedule_statuses(stored, students).values()) == {server.profile.delivered_status}
    organizer_line = attendee(stored, server.address(server.organizer))
    assert "SCHEDULE-STATUS" not in organizer_line.params
    assert sequence_of(stored) == 0

    for student in server.students:
        copy = copy_of(server, student, uid)
        event = vevent(copy.text)
        assert prop_text(event, "DTSTART") == "20270115T090000Z"
        assert attendee(copy.text, server.address(student)).params["PARTSTAT"] == "NEEDS-ACTION"
        assert sequence_of(copy.text) == server.profile.first_delivery_sequence
        # The students' copies carry no SCHEDULE-STATUS on first delivery.
        assert "SCHEDULE-STATUS" not in unfold(copy.text)
        (request,) = inbox_messages(server, student, uid)
        assert "METHOD:REQUEST" in request


def test_reply_reaches_organizer_with_answer_time(server: SchedulingServer) -> None:
    """A student's PARTSTAT change becomes a REPLY: the organizer's copy shows the new
    PARTSTAT (Cyrus adds X-DTSTAMP/X-SEQUENCE); the REPLY itself, with the student's
    DTSTAMP, COMMENT and X-RESPONSE-COMMENT, stays in the organizer's inbox. Neither
    server copies a comment into the organizer's copy."""
    uid = new_uid()
    url = publish(server, uid)
    before = time.time()
    student = server.students[0]
    copy = copy_of(server, student, uid)
    me = f"mailto:{server.address(student)}"

    def accept_with_comment(event: icalendar.cal.Component) -> None:
        for a in _attendees(event):
            if str(a) == me:
                a.params["PARTSTAT"] = "ACCEPTED"
                a.params["X-RESPONSE-COMMENT"] = "See you there"
        event.add("COMMENT", "I will bring my laptop")

    assert put(server, student, copy, edit(copy.text, accept_with_comment)) in (200, 204)

    stored = get(server, server.organizer, url).text
    line = attendee(stored, server.address(student))
    assert line.params["PARTSTAT"] == "ACCEPTED"
    for param in server.profile.reply_params:
        assert param in line.params, (param, line.params)
    if server.profile.reply_params:
        stamp = line.params["X-DTSTAMP"]
        assert re.fullmatch(r"\d{8}T\d{6}Z", stamp)
        assert abs(_epoch(stamp) - before) < 120
        assert line.params["X-SEQUENCE"] == str(server.profile.first_delivery_sequence)
    else:
        assert not [p for p in line.params if p.startswith("X-")]
    kept = "SCHEDULE-STATUS" in line.params and "RSVP" in line.params
    assert kept == server.profile.reply_keeps_schedule_status
    assert "X-RESPONSE-COMMENT" not in line.params
    assert "COMMENT" not in vevent(stored)
    assert "laptop" not in stored and "See you there" not in unfold(stored)
    # The others still wait.
    other = attendee(stored, server.address(server.students[1]))
    assert other.params["PARTSTAT"] == "NEEDS-ACTION"
    assert other.params["SCHEDULE-STATUS"] == server.profile.delivered_status

    (reply,) = inbox_messages(server, server.organizer, uid)
    assert "METHOD:REPLY" in reply
    event = vevent(reply)
    assert abs(event.decoded("DTSTAMP").timestamp() - before) < 120
    assert str(event["COMMENT"]) == "I will bring my laptop"
    (replier,) = _attendees(event)
    assert replier.params["PARTSTAT"] == "ACCEPTED"
    assert replier.params["X-RESPONSE-COMMENT"] == "See you there"


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("organizer_resets", [False, True], ids=["keeps", "resets"])
def test_reschedule_reaches_students(server: SchedulingServer, organizer_resets: bool) -> None:
    """A new DTSTART with SEQUENCE+1 reaches every student's copy. Cyrus then resets an
    accepted student to NEEDS-ACTION; Xandikos keeps the student's ACCEPTED even when
    the organizer resets it in its own copy, so the two copies disagree."""
    uid = new_uid()
    url = publish(server, uid)
    first, second = server.students[0], server.students[1]
    answer_as(server, first, uid, "ACCEPTED")
    stored = get(server, server.organizer, url)
    first_address = f"mailto:{server.address(first)}"

    def move(event: icalendar.cal.Component) -> None:
        event["DTSTART"] = icalendar.vDDDTypes(datetime(2027, 1, 16, 10, tzinfo=UTC))
        event["SEQUENCE"] = 1
        if organizer_resets:
            for a in _attendees(event):
                if str(a) == first_address:
                    a.params["PARTSTAT"] = "NEEDS-ACTION"
                    a.params["RSVP"] = "TRUE"

    assert put(server, server.organizer, stored, edit(stored.text, move)) in (200, 204)

    for student in (first, second):
        copy = copy_of(server, student, uid)
        event = vevent(copy.text)
        assert prop_text(event, "DTSTART") == "20270116T100000Z"
        assert sequence_of(copy.text) == 1
    mine = attendee(copy_of(server, first, uid).text, server.address(first))
    expected = "NEEDS-ACTION" if server.profile.reschedule_resets_partstat else "ACCEPTED"
    assert mine.params["PARTSTAT"] == expected
    untouched = attendee(copy_of(server, second, uid).text, server.address(second))
    assert untouched.params["PARTSTAT"] == "NEEDS-ACTION"
    organizer_view = attendee(get(server, server.organizer, url).text, server.address(first))
    assert organizer_view.params["PARTSTAT"] == ("NEEDS-ACTION" if organizer_resets else "ACCEPTED")


def test_cancel_marks_students_copies_cancelled(server: SchedulingServer) -> None:
    """STATUS:CANCELLED with SEQUENCE+1 reaches every student as STATUS:CANCELLED
    (Xandikos sends it as a REQUEST that says CANCELLED, Cyrus as a CANCEL)."""
    uid = new_uid()
    url = publish(server, uid)
    stored = get(server, server.organizer, url)

    def cancel(event: icalendar.cal.Component) -> None:
        event["STATUS"] = "CANCELLED"
        event["SEQUENCE"] = 1

    assert put(server, server.organizer, stored, edit(stored.text, cancel)) in (200, 204)
    for student in server.students:
        copy = copy_of(server, student, uid)
        assert str(vevent(copy.text)["STATUS"]) == "CANCELLED"
        # Cyrus sends 2 here: see test_cyrus_sequence_of_students_copies.
        expected = 2 if isinstance(server, CyrusServer) else 1
        assert sequence_of(copy.text) == expected
        methods = [vevent_method(m) for m in inbox_messages(server, student, uid)]
        assert methods[0] == "REQUEST" and server.profile.cancel_method in methods[1:]


def test_delete_cancels_too(server: SchedulingServer) -> None:
    """Deleting the organizer's copy leaves each student's copy marked STATUS:CANCELLED."""
    uid = new_uid()
    url = publish(server, uid)
    assert server.request(server.organizer, "DELETE", url).status in (200, 204)
    for student in server.students:
        copy = copy_of(server, student, uid)
        assert str(vevent(copy.text)["STATUS"]) == "CANCELLED"
        methods = [vevent_method(m) for m in inbox_messages(server, student, uid)]
        assert "CANCEL" in methods


def test_any_organizer_calendar_schedules(server: SchedulingServer) -> None:
    """Scheduling is not limited to the schedule-default calendar on the organizer's
    side: an event PUT into another calendar of the organizer is delivered too (and
    lands in the student's schedule-default calendar). The answer comes back into that
    copy on Cyrus; Xandikos keeps it in the organizer's inbox only."""
    home = server.calendar_url(server.organizer).rstrip("/").rsplit("/", 1)[0]
    calendar = f"{home}/sessions-{uuid.uuid4().hex[:8]}/"
    assert server.request(server.organizer, "MKCALENDAR", calendar).status == 201
    uid = new_uid()
    url = f"{calendar}{uid.split('@')[0]}.ics"
    created = server.request(
        server.organizer, "PUT", url, make_event(server, uid), {**_ICS, "If-None-Match": "*"}
    )
    assert created.status == 201
    stored = get(server, server.organizer, url).text
    student = server.students[0]
    status = attendee(stored, server.address(student)).params.get("SCHEDULE-STATUS")
    assert status == server.profile.delivered_status
    assert find_copy(server, student, uid) is not None

    answer_as(server, student, uid, "ACCEPTED")
    answered = attendee(get(server, server.organizer, url).text, server.address(student))
    expected = "ACCEPTED" if server.profile.replies_in_any_calendar else "NEEDS-ACTION"
    assert answered.params["PARTSTAT"] == expected
    (reply,) = inbox_messages(server, server.organizer, uid)
    assert "METHOD:REPLY" in reply


# ---- who is invited ----------------------------------------------------------------------


def test_organizer_not_of_the_login_schedules_nothing(server: SchedulingServer) -> None:
    """ORGANIZER must be one of the login's addresses; otherwise the event is stored as
    is, silently: no SCHEDULE-STATUS on any ATTENDEE and nobody invited."""
    for organizer in ("office@example.org", "organizer@elsewhere.net"):
        uid = new_uid()
        url = publish(server, uid, make_event(server, uid, organizer=organizer))
        stored = get(server, server.organizer, url).text
        students = [server.address(u) for u in server.students]
        assert set(schedule_statuses(stored, students).values()) == {None}
        assert all(find_copy(server, s, uid) is None for s in server.students)


def test_organizer_address_case(server: SchedulingServer) -> None:
    """Cyrus matches ORGANIZER to the login's address ignoring case; Xandikos does not."""
    uid = new_uid()
    url = publish(server, uid, make_event(server, uid, organizer="Organizer@Example.org"))
    stored = get(server, server.organizer, url).text
    status = attendee(stored, server.address(server.students[0])).params.get("SCHEDULE-STATUS")
    if server.profile.organizer_match_ignores_case:
        assert status == server.profile.delivered_status
        assert find_copy(server, server.students[0], uid) is not None
    else:
        assert status is None
        assert find_copy(server, server.students[0], uid) is None


def test_unknown_and_case_changed_attendees(server: SchedulingServer) -> None:
    """An ATTENDEE whose local part differs in case is not the student: Cyrus mails it
    (iMIP through sendmail, 1.1), Xandikos gives up (3.7). Same for unknown users.
    The student is not invited either way."""
    uid = new_uid()
    student, other = server.students[0], server.students[1]
    odd = [server.address(other).capitalize(), "someone@elsewhere.net"]
    url = publish(server, uid, make_event(server, uid, attendees=[server.address(student), *odd]))
    stored = get(server, server.organizer, url).text
    assert schedule_statuses(stored, [server.address(student), *odd]) == {
        server.address(student): server.profile.delivered_status,
        odd[0]: server.profile.unknown_user_status,
        odd[1]: server.profile.unknown_user_status,
    }
    assert find_copy(server, other, uid) is None
    if isinstance(server, CyrusServer):
        envelopes = b"".join(server.sent_mail())
        for address in odd:
            assert f"RCPT TO:<{address}>".encode() in envelopes


# ---- ETags, sync, Schedule-Tag ----------------------------------------------------------


def test_etags_and_sync_collection(server: SchedulingServer) -> None:
    """Strong ETags in PROPFIND/REPORT and plain GETs; Cyrus weakens the GET's ETag
    (W/"same") when it compresses the body, and If-Match accepts that weak form.
    sync-collection reports the organizer's object again when a reply changes it."""
    calendar = server.calendar_url(server.organizer)
    first = server.request(server.organizer, "REPORT", calendar, _SYNC.format(token=""))
    assert first.status == 207, first
    token = first.xml().findtext("{DAV:}sync-token") or ""
    assert token.startswith(server.profile.sync_token_prefix)
    if not server.profile.sync_token_prefix:
        assert re.fullmatch(r"[0-9a-f]{40}", token), token

    uid = new_uid()
    url = publish(server, uid)
    path = urlsplit(url).path
    changed = server.request(server.organizer, "REPORT", calendar, _SYNC.format(token=token))
    assert changed.status == 207
    rows = {
        r.findtext("{DAV:}href"): r.findtext(".//{DAV:}getetag")
        for r in changed.xml().iter("{DAV:}response")
    }
    plain = get(server, server.organizer, url)
    assert rows == {path: plain.etag}
    assert re.fullmatch(r'"[^"]+"', plain.etag)
    token = changed.xml().findtext("{DAV:}sync-token") or ""

    compressed = get(server, server.organizer, url, **{"Accept-Encoding": "gzip"})
    if server.profile.weak_etag_when_compressed:
        assert compressed.etag == f"W/{plain.etag}"
    else:
        assert compressed.etag == plain.etag

    answer_as(server, server.students[0], uid, "TENTATIVE")
    after = server.request(server.organizer, "REPORT", calendar, _SYNC.format(token=token))
    rows = {
        r.findtext("{DAV:}href"): r.findtext(".//{DAV:}getetag")
        for r in after.xml().iter("{DAV:}response")
    }
    newer = get(server, server.organizer, url)
    assert rows == {path: newer.etag} and newer.etag != plain.etag

    # If-Match with the form GET gave (weak on Cyrus when compressed) is accepted.
    compressed = get(server, server.organizer, url, **{"Accept-Encoding": "gzip"})
    retitled = compressed.text.replace("SUMMARY:Training", "SUMMARY:Training (room 2)")
    assert put(server, server.organizer, compressed, retitled) in (200, 204)
    stale = server.request(server.organizer, "PUT", url, retitled, {**_ICS, "If-Match": newer.etag})
    assert stale.status == 412


def test_schedule_tag_is_no_safe_write_guard(server: SchedulingServer) -> None:
    """Cyrus changes the organizer copy's Schedule-Tag when it merges a reply, so
    If-Schedule-Tag-Match with the earlier tag is refused (412). Xandikos keeps the tag
    and accepts the write, and the write then loses the reply. Write with If-Match."""
    uid = new_uid()
    url = publish(server, uid)
    before = server.request(server.organizer, "GET", url)
    tag = before.header("Schedule-Tag")
    assert tag
    student = server.students[1]
    answer_as(server, student, uid, "DECLINED")
    merged = server.request(server.organizer, "GET", url)
    assert attendee(merged.text, server.address(student)).params["PARTSTAT"] == "DECLINED"
    assert (merged.header("Schedule-Tag") != tag) == server.profile.schedule_tag_changes_on_reply

    retitled = before.text.replace("SUMMARY:Training", "SUMMARY:Training (new room)")
    answer = server.request(
        server.organizer, "PUT", url, retitled, {**_ICS, "If-Schedule-Tag-Match": tag}
    )
    if server.profile.schedule_tag_changes_on_reply:
        assert answer.status == 412
    else:
        assert answer.status in (200, 204)
        after = get(server, server.organizer, url).text
        assert attendee(after, server.address(student)).params["PARTSTAT"] == "NEEDS-ACTION"


# ---- force-send, attendee rights ---------------------------------------------------------


def test_schedule_force_send(server: SchedulingServer) -> None:
    """SCHEDULE-FORCE-SEND=REQUEST (RFC 6638 §7.1) on one ATTENDEE re-delivers an
    otherwise unchanged event: Cyrus to that student only, keeping the parameter in
    the stored copy (and sending the organizer's SEQUENCE unbumped, so the student's
    copy goes from 1 back to 0); Xandikos to every student, stripping the parameter.
    A PUT of the same text re-delivers nothing on either."""
    uid = new_uid()
    url = publish(server, uid)
    time.sleep(1.05)  # DTSTAMPs have one-second resolution

    def stamps() -> dict[str, tuple[str, str]]:
        out = {}
        for student in server.students:
            copy = copy_of(server, student, uid)
            out[student] = (copy.etag, prop_text(vevent(copy.text), "DTSTAMP"))
        return out

    initial = stamps()
    same = get(server, server.organizer, url)
    assert put(server, server.organizer, same, same.text) in (200, 204)
    assert stamps() == initial

    target = server.students[1]
    stored = get(server, server.organizer, url)
    forced = re.sub(
        r"(ATTENDEE;CN=Student 2;)",
        r"\1SCHEDULE-FORCE-SEND=REQUEST;",
        unfold(stored.text),
    ).replace('CN="Student 2";', 'CN="Student 2";SCHEDULE-FORCE-SEND=REQUEST;')
    assert "SCHEDULE-FORCE-SEND=REQUEST" in forced
    assert put(server, server.organizer, stored, forced) in (200, 204)

    after = stamps()
    redelivered = {s for s in server.students if after[s] != initial[s]}
    if server.profile.force_send_reaches == "that":
        assert redelivered == {target}
    else:
        assert redelivered == set(server.students)
    stored_text = unfold(get(server, server.organizer, url).text)
    assert ("SCHEDULE-FORCE-SEND" in stored_text) == server.profile.force_send_param_stored
    if isinstance(server, CyrusServer):
        assert sequence_of(copy_of(server, target, uid).text) == 0


def test_student_editing_the_event(server: SchedulingServer) -> None:
    """A student may change only their own ATTENDEE on Xandikos (412 attendee-allowed);
    Cyrus stores other changes in the student's copy but never passes them on."""
    uid = new_uid()
    url = publish(server, uid)
    student = server.students[2]
    copy = copy_of(server, student, uid)
    status = put(server, student, copy, copy.text.replace("SUMMARY:Training", "SUMMARY:Mine"))
    if server.profile.attendee_may_edit_event:
        assert status in (200, 204)
    else:
        assert status == 412
    assert "SUMMARY:Training" in get(server, server.organizer, url).text


def test_student_deleting_their_copy(server: SchedulingServer) -> None:
    """Cyrus turns a student's DELETE into a REPLY DECLINED; Xandikos tells nobody."""
    uid = new_uid()
    url = publish(server, uid)
    student = server.students[3]
    copy = copy_of(server, student, uid)
    assert server.request(student, "DELETE", copy.href).status in (200, 204)
    line = attendee(get(server, server.organizer, url).text, server.address(student))
    expected = "DECLINED" if server.profile.attendee_delete_declines else "NEEDS-ACTION"
    assert line.params["PARTSTAT"] == expected


# ---- server-specific ---------------------------------------------------------------------


def test_xandikos_forgets_students_until_they_log_in(xandikos_server: XandikosServer) -> None:
    """Xandikos knows principals only in memory: after a restart an invitation to a
    student who has not made a request since gets 3.7 and is not delivered."""
    server = xandikos_server
    assert server.profile.forgets_users_on_restart
    try:
        server.restart()
        server.request(server.students[0], "PROPFIND", server.principal_url(server.students[0]))
        uid = new_uid()
        url = publish(server, uid)
        stored = get(server, server.organizer, url).text
        statuses = schedule_statuses(stored, [server.address(u) for u in server.students])
        assert statuses[server.address(server.students[0])] == server.profile.delivered_status
        others = {statuses[server.address(u)] for u in server.students[1:]}
        assert others == {server.profile.unknown_user_status}
    finally:
        server.provision_users()


def test_cyrus_reply_marks_organizer_on_student_copy(cyrus_server: CyrusServer) -> None:
    """After a student answers, Cyrus stamps SCHEDULE-STATUS (delivery of the REPLY)
    on the ORGANIZER line of the student's own copy."""
    server = cyrus_server
    uid = new_uid()
    publish(server, uid)
    student = server.students[0]
    answer_as(server, student, uid, "ACCEPTED")
    organizer = vevent(copy_of(server, student, uid).text)["ORGANIZER"]
    assert organizer.params["SCHEDULE-STATUS"] == server.profile.delivered_status


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([], [1]),
        ([("SUMMARY:Other", 0)], [1, 0]),
        ([("DTSTART:20270116T090000Z", 0)], [1, 1]),
        ([("DTSTART:20270116T090000Z", 1), ("DTSTART:20270117T090000Z", 2)], [1, 1, 2]),
        ([("DTSTART:20270116T090000Z", 5)], [1, 5]),
        ([("STATUS:CANCELLED", 0)], [1, 2]),
        ([("DTSTART:20270116T090000Z", 1), ("STATUS:CANCELLED", 2)], [1, 1, 2]),
    ],
    ids=["create", "summary", "move-unbumped", "move-bumped", "move-5", "cancel", "move-cancel"],
)
def test_cyrus_sequence_of_students_copies(
    cyrus_server: CyrusServer, changes: list[tuple[str, int]], expected: list[int]
) -> None:
    """Cyrus rewrites SEQUENCE in what it delivers: 0 arrives as 1, a moved event
    whose SEQUENCE the organizer did not raise is raised for it, a cancel is raised
    past what the student has, but a change Cyrus deems minor (SUMMARY) is sent with
    the organizer's own SEQUENCE, which can move the student's copy backwards."""
    server = cyrus_server
    uid = new_uid()
    url = publish(server, uid)
    student = server.students[0]
    seen = [sequence_of(copy_of(server, student, uid).text)]
    for line, sequence in changes:
        stored = get(server, server.organizer, url)
        text = re.sub(r"SEQUENCE:\d+", f"SEQUENCE:{sequence}", unfold(stored.text))
        name = line.split(":")[0]
        if name == "STATUS":
            text = text.replace("SUMMARY:Training", f"SUMMARY:Training\r\n{line}")
        else:
            text = re.sub(rf"^{name}:.*$", line, text, count=1, flags=re.M)
        assert put(server, server.organizer, stored, text) in (200, 204)
        seen.append(sequence_of(copy_of(server, student, uid).text))
    assert seen == expected


# ---- the launchers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cyrus", "xandikos"])
def test_launcher_stops_everything(name: str, tmp_path: Path) -> None:
    """A fresh server answers as ours (our realm) and leaves no process behind."""
    from tests.scheduling_servers import ServerUnavailable

    users = dict(list(DEFAULT_USERS.items())[:2])
    try:
        server = start_scheduling_server(name, tmp_path / name, users)
    except ServerUnavailable as e:
        pytest.skip(str(e))
    pid = server.pid
    assert pid is not None
    if isinstance(server, CyrusServer):
        folder = server.folder
    else:
        assert isinstance(server, XandikosServer)
        folder = server.base_dir
    assert folder is not None
    challenge = server.request(None, "PROPFIND", server.calendar_url(server.organizer))
    assert challenge.status == 401
    assert server.realm in (challenge.header("WWW-Authenticate") or "")
    assert processes_under(folder)
    server.stop()
    assert server.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert processes_under(folder) == []
