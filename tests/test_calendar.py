"""The CalDAV adapter against a real Radicale: ETags, typed errors, and cheap polls."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from caldav.davclient import DAVClient

from tmcaldav.caldav import (
    AuthFailed,
    CalendarError,
    CalendarService,
    CalendarSettings,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    ServerError,
    StoredEvent,
    Unreachable,
    resource_name,
)
from tmcaldav.testing import FaultProxy, RadicaleServer


def event_body(uid: str, summary: str = "Public speaking", partstat: str = "NEEDS-ACTION") -> str:
    """A session as the organizer publishes it, with one invited student."""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tmcaldav//tests//EN\r\n"
        "BEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nSEQUENCE:0\r\n"
        "DTSTART:20261201T090000Z\r\nDTEND:20261201T100000Z\r\n"
        f"SUMMARY:{summary}\r\n"
        "ORGANIZER;CN=Training Office:mailto:organizer@example.org\r\n"
        f"ATTENDEE;PARTSTAT={partstat};RSVP=TRUE:mailto:ann@example.org\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def settings_for(
    url: str,
    password: str = "pw-organizer",
    calendar: str | None = "trainings",
    timeout: float = 30,
) -> CalendarSettings:
    return CalendarSettings(
        url=url, username="organizer", password=password, calendar=calendar, timeout=timeout
    )


@pytest.fixture
def service(radicale_url: str, organizer_password: str) -> Iterator[CalendarService]:
    with CalendarService.connect(settings_for(radicale_url, organizer_password)) as connected:
        yield connected


def fill(service: CalendarService, count: int) -> list[StoredEvent]:
    return [service.create(f"TM-{n:03d}", event_body(f"TM-{n:03d}")) for n in range(count)]


# -- connecting -------------------------------------------------------------------------


def test_connect_creates_the_calendar_and_finds_it_again(
    radicale_server: RadicaleServer, radicale_url: str
) -> None:
    first = CalendarService.connect(settings_for(radicale_url))
    first.close()
    again = CalendarService.connect(settings_for(radicale_url))
    again.close()

    assert first.url == again.url == f"{radicale_url}organizer/trainings/"
    assert first.supports_sync
    organizer = DAVClient(
        url=radicale_url, username="organizer", password="pw-organizer", auth_type="basic"
    )
    assert [str(c.url) for c in organizer.principal().get_calendars()] == [first.url]


def test_connect_without_a_calendar_id_takes_the_first_or_creates_one(radicale_url: str) -> None:
    with CalendarService.connect(settings_for(radicale_url, calendar=None)) as fresh:
        assert fresh.url == f"{radicale_url}organizer/calendar/"
    with CalendarService.connect(settings_for(radicale_url, calendar="zz-later")):
        pass
    with CalendarService.connect(settings_for(radicale_url, calendar=None)) as chosen:
        assert chosen.url == f"{radicale_url}organizer/calendar/"


def test_connect_to_the_principal_url_works_too(radicale_url: str) -> None:
    with CalendarService.connect(settings_for(f"{radicale_url}organizer/")) as connected:
        assert connected.url == f"{radicale_url}organizer/trainings/"


def _principal_with_default_calendar(default_href: str) -> bytes:
    """A principal PROPFIND answer from a scheduling server (Radicale has none)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
        "<d:response><d:href>/organizer/</d:href><d:propstat><d:prop>"
        "<c:calendar-home-set><d:href>/organizer/</d:href></c:calendar-home-set>"
        f"<c:schedule-default-calendar-URL><d:href>{default_href}</d:href>"
        "</c:schedule-default-calendar-URL>"
        "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        "</d:multistatus>"
    ).encode()


def _asks_for_the_principal(method: str, path: str, body: bytes) -> bool:
    return b"calendar-home-set" in body


@pytest.mark.parametrize(
    ("configured", "expected_calendar", "is_default"),
    [(None, "main", True), ("trainings", "trainings", False)],
)
def test_the_schedule_default_calendar(
    radicale_faults: FaultProxy,
    configured: str | None,
    expected_calendar: str,
    is_default: bool,
) -> None:
    for calendar_id in ("aaa", "main"):
        CalendarService.connect(settings_for(radicale_faults.url, calendar=calendar_id)).close()
    radicale_faults.fail_next(
        207,
        {"Content-Type": "text/xml; charset=utf-8"},
        _principal_with_default_calendar("/organizer/main/"),
        when=_asks_for_the_principal,
    )

    with CalendarService.connect(settings_for(radicale_faults.url, calendar=configured)) as svc:
        assert svc.url == f"{radicale_faults.url}organizer/{expected_calendar}/"
        info = svc.server_info()
    assert info["is_schedule_default"] is is_default
    assert info["schedule_default_calendar"] == f"{radicale_faults.url}organizer/main/"


def test_a_web_page_instead_of_a_caldav_server_is_named_as_such(
    radicale_faults: FaultProxy,
) -> None:
    radicale_faults.fail_next(
        200, {"Content-Type": "text/html"}, b"<html><body>Sign in</body></html>", count=5
    )
    with pytest.raises(ServerError, match="not WebDAV"):
        CalendarService.connect(settings_for(radicale_faults.url))


def test_an_unreadable_ca_file_is_named() -> None:
    settings = CalendarSettings(
        url="https://dav.example.org/",
        username="organizer",
        password="pw",
        tls_ca_file="/nonexistent/ca.pem",
    )
    with pytest.raises(CalendarError, match=re.escape("/nonexistent/ca.pem")):
        CalendarService.connect(settings)


def test_settings_never_show_the_password() -> None:
    settings = settings_for("https://dav.example.org/", password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)


def test_a_login_in_the_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(CalendarError) as caught:
        CalendarService.connect(settings_for("https://office:hunter2@dav.example.org/"))
    assert "hunter2" not in str(caught.value)
    assert "dav.example.org" in str(caught.value)


# -- events and ETags -------------------------------------------------------------------


def test_create_get_update_delete_round_trip(service: CalendarService) -> None:
    created = service.create("TM-2026-0412", event_body("TM-2026-0412"))
    assert created.href == "/organizer/trainings/TM-2026-0412.ics"
    assert created.href == service.href_for("TM-2026-0412")
    assert service.get(service.url + "TM-2026-0412.ics").href == created.href
    assert created.etag

    read = service.get(created.href)
    assert read.etag == created.etag
    assert "UID:TM-2026-0412" in read.body

    updated = service.update(created.href, event_body("TM-2026-0412", "Moved"), created.etag)
    assert updated.etag != created.etag
    assert service.get(created.href).etag == updated.etag
    assert "SUMMARY:Moved" in service.get(created.href).body

    service.delete(created.href, updated.etag)
    with pytest.raises(NotFound):
        service.get(created.href)
    with pytest.raises(NotFound):
        service.delete(created.href)


def test_an_odd_uid_gets_a_safe_resource_name(service: CalendarService) -> None:
    uid = "040000008200E00074C5B7101A82E008/ä b@example.org"
    created = service.create(uid, event_body(uid))

    assert created.href.startswith("/organizer/trainings/")
    assert "/" not in created.href.removeprefix("/organizer/trainings/")
    assert service.get(created.href).etag == created.etag
    assert resource_name(uid) == resource_name(uid) != resource_name(uid + "x")


def test_update_with_a_stale_etag_is_refused(service: CalendarService) -> None:
    created = service.create("TM-1", event_body("TM-1"))
    service.update(created.href, event_body("TM-1", "First edit"), created.etag)

    with pytest.raises(PreconditionFailed):
        service.update(created.href, event_body("TM-1", "Lost edit"), created.etag)
    assert "SUMMARY:First edit" in service.get(created.href).body


def test_creating_twice_is_refused(service: CalendarService) -> None:
    service.create("TM-1", event_body("TM-1"))
    with pytest.raises(PreconditionFailed):
        service.create("TM-1", event_body("TM-1", "Second"))


def test_delete_with_a_stale_etag_is_refused(service: CalendarService) -> None:
    created = service.create("TM-1", event_body("TM-1"))
    service.update(created.href, event_body("TM-1", "Edited"), created.etag)
    with pytest.raises(PreconditionFailed):
        service.delete(created.href, created.etag)
    service.get(created.href)


def test_get_of_a_missing_event_is_not_found(service: CalendarService) -> None:
    with pytest.raises(NotFound) as caught:
        service.get("/organizer/trainings/nope.ics")
    assert "/organizer/trainings/nope.ics" in str(caught.value)


# -- failures ---------------------------------------------------------------------------


def test_wrong_password_names_url_and_user_but_not_the_password(radicale_url: str) -> None:
    with pytest.raises(AuthFailed) as caught:
        CalendarService.connect(settings_for(radicale_url, password="wrong-pw-7731"))
    message = str(caught.value)
    assert radicale_url in message
    assert "organizer" in message
    assert "wrong-pw-7731" not in message
    assert "wrong-pw-7731" not in repr(caught.value.__cause__)


def test_a_stopped_server_is_unreachable(
    radicale_server: RadicaleServer, service: CalendarService
) -> None:
    token = service.changes_since(None).sync_token
    radicale_server.stop()

    with pytest.raises(Unreachable) as caught:
        service.changes_since(token)
    assert radicale_server.url in str(caught.value)
    with pytest.raises(Unreachable):
        service.get("/organizer/trainings/x.ics")
    with pytest.raises(Unreachable):
        CalendarService.connect(settings_for(radicale_server.url))


def test_nothing_listening_is_unreachable(radicale_server: RadicaleServer) -> None:
    url = radicale_server.url
    radicale_server.stop()
    with pytest.raises(Unreachable, match="cannot reach"):
        CalendarService.connect(settings_for(url))


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_wait"),
    [(503, "7", 7.0), (429, "120", 120.0), (503, None, None), (500, None, None)],
)
def test_overload_and_server_failures_are_server_errors(
    radicale_faults: FaultProxy,
    status: int,
    retry_after: str | None,
    expected_wait: float | None,
) -> None:
    service = CalendarService.connect(settings_for(radicale_faults.url))
    token = service.changes_since(None).sync_token
    radicale_faults.fail_next(status, {"Retry-After": retry_after} if retry_after else {})

    with pytest.raises(ServerError) as caught:
        service.changes_since(token)
    assert caught.value.status == status
    assert caught.value.retry_after == expected_wait
    assert radicale_faults.url in str(caught.value)
    service.close()


def test_retry_after_as_an_http_date(radicale_faults: FaultProxy) -> None:
    service = CalendarService.connect(settings_for(radicale_faults.url))
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    radicale_faults.fail_next(503, {"Retry-After": when})

    with pytest.raises(ServerError) as caught:
        service.get("/organizer/trainings/x.ics")
    assert caught.value.retry_after is not None
    assert 80 <= caught.value.retry_after <= 90
    service.close()


def test_malformed_xml_is_a_server_error(radicale_faults: FaultProxy) -> None:
    service = CalendarService.connect(settings_for(radicale_faults.url))
    token = service.changes_since(None).sync_token
    radicale_faults.garble_next(methods=("REPORT",))

    with pytest.raises(ServerError, match="malformed answer"):
        service.changes_since(token)
    service.close()


def test_a_stalled_server_times_out_as_unreachable(radicale_faults: FaultProxy) -> None:
    service = CalendarService.connect(settings_for(radicale_faults.url, timeout=0.3))
    radicale_faults.stall_next(2)

    with pytest.raises(Unreachable, match=re.escape("did not answer within 0.3 s")):
        service.get("/organizer/trainings/x.ics")
    service.close()


# -- polling ----------------------------------------------------------------------------


def test_initial_sync_lists_everything(service: CalendarService) -> None:
    stored = fill(service, 30)

    changes = service.changes_since(None)

    assert changes.full
    assert changes.deleted == ()
    assert {(e.href, e.etag) for e in changes.changed} == {(e.href, e.etag) for e in stored}
    assert all("BEGIN:VEVENT" in e.body for e in changes.changed)


def test_initial_sync_of_an_empty_calendar_is_one_request(service: CalendarService) -> None:
    before = service.request_count
    changes = service.changes_since(None)
    assert (changes.changed, changes.deleted, changes.full) == ((), (), True)
    assert service.request_count - before == 1


def test_a_poll_without_changes_is_one_request(service: CalendarService) -> None:
    fill(service, 30)
    token = service.changes_since(None).sync_token

    before = service.request_count
    changes = service.changes_since(token)

    assert service.request_count - before == 1
    assert (changes.changed, changes.deleted, changes.full) == ((), (), False)
    assert changes.sync_token == token


@pytest.mark.parametrize("k", [1, 5])
def test_a_poll_after_k_changes_is_two_requests(service: CalendarService, k: int) -> None:
    stored = fill(service, 30)
    token = service.changes_since(None).sync_token
    edited = [
        service.update(e.href, event_body(f"TM-{n:03d}", "Edited"), e.etag)
        for n, e in enumerate(stored)
        if 3 <= n < 3 + k
    ]

    before = service.request_count
    changes = service.changes_since(token)

    assert service.request_count - before == 2
    assert [(e.href, e.etag) for e in changes.changed] == [(e.href, e.etag) for e in edited]
    assert all("SUMMARY:Edited" in e.body for e in changes.changed)
    assert changes.deleted == ()
    assert changes.sync_token != token


def test_our_own_put_etag_is_the_one_the_sync_reports(service: CalendarService) -> None:
    token = service.changes_since(None).sync_token
    created = service.create("TM-9", event_body("TM-9"))

    (seen,) = service.changes_since(token).changed

    assert (seen.href, seen.etag) == (created.href, created.etag)


def test_a_deletion_is_reported(service: CalendarService) -> None:
    stored = fill(service, 3)
    token = service.changes_since(None).sync_token
    service.delete(stored[1].href, stored[1].etag)

    before = service.request_count
    changes = service.changes_since(token)

    assert changes.deleted == (stored[1].href,)
    assert changes.changed == ()
    assert service.request_count - before == 1


def test_a_garbage_token_asks_for_a_full_sync(service: CalendarService) -> None:
    fill(service, 2)
    for garbage in ("http://radicale.org/ns/sync/0000", "not-a-token", "fake-1234"):
        with pytest.raises(InvalidSyncToken):
            service.changes_since(garbage)
    assert len(service.changes_since(None).changed) == 2


def test_a_student_answer_in_the_organizers_copy_is_seen(
    service: CalendarService, student_client: DAVClient
) -> None:
    created = service.create("TM-1", event_body("TM-1"))
    token = service.changes_since(None).sync_token

    # The student's scheduling server writes the answer into the organizer's copy.
    organizer_calendar = student_client.calendar(url=service.url)
    event = organizer_calendar.event_by_url(service.url + "TM-1.ics")
    event.load()
    event.icalendar_component["ATTENDEE"].params["PARTSTAT"] = "ACCEPTED"
    event.save(increase_seqno=False)

    (seen,) = service.changes_since(token).changed
    assert seen.href == created.href
    assert seen.etag != created.etag
    assert "PARTSTAT=ACCEPTED" in seen.body
    assert "SEQUENCE:0" in seen.body
    with pytest.raises(PreconditionFailed):
        service.update(created.href, event_body("TM-1", "Stale"), created.etag)


# -- servers without sync-collection ----------------------------------------------------


def test_listing_fallback_uses_the_ctag_and_etags(service: CalendarService) -> None:
    stored = fill(service, 5)
    ctag, first = service.changes_by_listing({}, None)
    assert first.full
    assert {e.etag for e in first.changed} == {e.etag for e in stored}
    known = {e.href: e.etag for e in first.changed}

    before = service.request_count
    same_ctag, nothing = service.changes_by_listing(known, ctag)
    assert service.request_count - before == 1
    assert (same_ctag, nothing.changed, nothing.deleted) == (ctag, (), ())

    edited = service.update(stored[0].href, event_body("TM-000", "Edited"), stored[0].etag)
    service.delete(stored[4].href, stored[4].etag)
    before = service.request_count
    new_ctag, changes = service.changes_by_listing(known, ctag)
    assert service.request_count - before == 3  # ctag, listing, multiget
    assert new_ctag != ctag
    assert [(e.href, e.etag) for e in changes.changed] == [(edited.href, edited.etag)]
    assert changes.deleted == (stored[4].href,)
    assert not changes.full


# -- doctor -----------------------------------------------------------------------------


def test_server_info_for_doctor(service: CalendarService) -> None:
    info = service.server_info()

    assert info["url"] == service.url
    assert info["calendar_access"] is True
    assert info["calendar_auto_schedule"] is False
    assert info["sync_collection"] is True
    # Radicale does no scheduling, so it has no default scheduling calendar.
    assert info["is_schedule_default"] is None
    assert "pw-organizer" not in repr(info)


# -- pure helpers -----------------------------------------------------------------------


def test_resource_names() -> None:
    assert resource_name("TM-2026-0412") == "TM-2026-0412.ics"
    assert resource_name("a@b.org").startswith("a-b.org-")
    assert resource_name("a b") != resource_name("a-b") == "a-b.ics"
    assert resource_name("////").endswith(".ics")
