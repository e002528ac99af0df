"""CalendarService: one calendar collection on a CalDAV server, over caldav 3.

Discovery, conditional PUT/GET/DELETE, the sync REPORT and multiget, and the
translation of every failure into the typed errors of `tmcaldav.caldav.errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

from caldav.collection import Calendar as DAVCalendar
from caldav.davclient import DAVClient
from caldav.lib import error as dav_error
from caldav.lib.http_sync import requests as http

from tmcaldav.caldav.auth import build_auth
from tmcaldav.caldav.bodies import (
    CALDAV,
    CALENDAR_PROPS,
    CALSERVER,
    CTAG_PROPS,
    DAV,
    ICAL_CONTENT_TYPE,
    INBOX_PROPS,
    LISTING_PROPS,
    MKCALENDAR,
    MULTIGET,
    ORGANIZER_CHANGE,
    PLAIN_NAME,
    PRINCIPAL_PROPS,
    PROPFIND,
    SYNC_COLLECTION,
    UID_CONFLICT,
    VALID_SYNC_TOKEN,
)
from tmcaldav.caldav.errors import (
    AuthFailed,
    CalendarError,
    InvalidSyncToken,
    NotFound,
    OrganizerChangeRefused,
    PreconditionFailed,
    ServerError,
    Unreachable,
)
from tmcaldav.caldav.profiles import ServerProfile, detect_profile, profile_named
from tmcaldav.deadline import deadline, track_session
from tmcaldav.retry import parse_retry_after
from tmcaldav.tls import certificate_advice

log = logging.getLogger(__name__)

_Error = TypeVar("_Error", bound=CalendarError)

# -- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarSettings:
    """How to reach the calendar: server or principal URL, login, calendar id.

    ``auth`` is the login method (``basic``, ``digest`` or ``bearer``); a bearer token
    comes from ``fetch_token``, called again when the server answers 401. ``profile``
    names a server profile (:mod:`tmcaldav.caldav.profiles`); None detects it.
    """

    url: str
    username: str
    password: str = field(repr=False)
    #: Calendar id (last path segment), created if missing; None = the server's
    #: schedule-default calendar, else the first calendar, else a new "calendar".
    calendar: str | None = None
    tls_ca_file: str | None = None
    timeout: float = 30
    auth: str = "basic"
    fetch_token: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    profile: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """One calendar object resource as the server holds it.

    ``body`` is iCalendar text; servers re-serialise what they are sent (and XML turns
    CRLF into LF), so compare ETags or parsed values, never the text.
    """

    href: str
    etag: str
    body: str
    #: True when ``body`` is what we sent (the PUT answered an ETag), not the server's
    #: text: a scheduling server adds SCHEDULE-STATUS, so read it back to see those.
    echoed: bool = False


@dataclass(frozen=True)
class Unreadable:
    """An object whose data the server listed but could not give, and why."""

    href: str
    reason: str


@dataclass(frozen=True)
class Fetched:
    """What a multiget returned: the objects read, those gone, those unreadable."""

    events: tuple[StoredEvent, ...]
    gone: set[str]
    unreadable: tuple[Unreadable, ...]


@dataclass(frozen=True)
class Changes:
    """What changed in the calendar since the last poll.

    With ``full`` the listing is complete (first sync, or after an invalid token):
    any href the caller knows that is not in ``changed`` no longer exists.
    """

    sync_token: str
    changed: tuple[StoredEvent, ...]
    deleted: tuple[str, ...]
    full: bool
    #: Changed objects the server listed but whose data it could not give (a failing
    #: propstat in the multiget): not deleted, to be fetched again.
    unreadable: tuple[Unreadable, ...] = ()



def resource_name(uid: str) -> str:
    """The resource name (last URL segment) under which the event with ``uid`` is created.

    Plain UIDs are kept readable; others get a readable prefix and a hash, so two UIDs
    never share a name and no URL quoting rules come into play.
    """
    if PLAIN_NAME.fullmatch(uid):
        return f"{uid}.ics"
    digest = hashlib.sha256(uid.encode("utf-8")).hexdigest()[:24]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", uid).strip("-._")[:60]
    return f"{readable}-{digest}.ics" if readable else f"{digest}.ics"


def _href_of(url: str) -> str:
    """The server path of ``url`` (absolute or a path), in one canonical quoting.

    Servers differ in what they percent-encode (``@`` vs ``%40``); decoding and
    re-encoding makes the same resource always compare equal.
    """
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0].split("#", 1)[0]
    return quote(unquote(path), safe="/@:+,;=!$&'()*~")


def _last_segment(href: str) -> str:
    return unquote(href.rstrip("/").rsplit("/", 1)[-1])


# -- the service -------------------------------------------------------------------------


class CalendarService:
    """One calendar collection on a CalDAV server, reached with one login.

    Build it with :meth:`connect`. ``request_count`` counts every HTTP request sent
    (counted as its answer arrives), for tests and benchmarks.
    """

    def __init__(self, client: DAVClient, settings: CalendarSettings) -> None:
        """Wrap an unconnected client; use :meth:`connect` instead."""
        self._client = client
        self._settings = settings
        self.request_count = 0
        self.url = ""
        self.supports_sync = False
        self._calendar: DAVCalendar | None = None
        self._reports: tuple[str, ...] = ()
        # None: the server has no schedule-default-calendar-URL at all.
        self._schedule_default: str | None = None
        self._server_has_schedule_default = False
        #: Does the server schedule for this login (a scheduling inbox, and a profile
        #: that schedules)? Only then is delivery read back after a PUT.
        self.schedules = False
        #: The login's calendar addresses (``calendar-user-address-set``), as the server
        #: spells them, without ``mailto:``; empty when the server publishes none.
        self.user_addresses: tuple[str, ...] = ()
        #: The login's scheduling inbox (RFC 6638 ``schedule-inbox-URL``), a URL ending in
        #: "/"; None when the server names none.
        self.inbox_url: str | None = None
        #: The server's ``Server`` header, as first seen.
        self.server_header: str | None = None
        self.profile: ServerProfile = profile_named("generic")
        client.session.hooks.setdefault("response", []).append(self._count_response)
        # `timeout` bounds each whole request (connect, send, the full answer), not
        # only each read: a server trickling its answer cannot stall a poll.
        track_session(client.session)

    def _count_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self.request_count += 1
        if self.server_header is None:
            self.server_header = response.headers.get("Server")
        return response

    def _error(
        self, kind: type[_Error], message: str, url: str | None = None, **details: Any
    ) -> _Error:
        """A typed error naming the URL (the calendar's unless given) and the login user
        (``details``: the kind's own fields, e.g. a ServerError's status)."""
        return kind(message, url=url or self.url, user=self._settings.username, **details)

    # -- connecting ----------------------------------------------------------------------

    @classmethod
    def connect(cls, settings: CalendarSettings) -> CalendarService:
        """Log in, find (or create) the calendar, and learn what the server supports."""
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CalendarError(
                f"the CalDAV URL {settings.url!r} is not an http(s) URL: "
                "set [caldav] url to the server root or principal URL, e.g. https://dav.example.org/",
                url=settings.url,
                user=settings.username,
            )
        if parts.username is not None or parts.password is not None:
            raise CalendarError(
                f"the CalDAV URL for {parts.hostname} carries a login: remove it from "
                "[caldav] url and set username and a password source instead",
                url=f"{parts.scheme}://{parts.hostname}{parts.path}",
                user=settings.username,
            )
        if settings.tls_ca_file is not None and not os.access(settings.tls_ca_file, os.R_OK):
            raise CalendarError(
                f"the CA file {settings.tls_ca_file!r} for {settings.url} cannot be read: "
                "fix [caldav] tls_ca_file",
                url=settings.url,
                user=settings.username,
            )
        if settings.profile is not None:
            try:
                profile_named(settings.profile)
            except KeyError:
                raise CalendarError(
                    f"unknown server profile {settings.profile!r}: fix [caldav] server_profile",
                    url=settings.url,
                    user=settings.username,
                ) from None
        client = DAVClient(
            url=settings.url,
            username=settings.username,
            password=settings.password,
            # Credentials go with the first request: without them every request first
            # collects a 401 (Radicale delays that one by about a second), and Cyrus
            # answers an anonymous PROPFIND of / with 207 instead of a challenge.
            auth=build_auth(
                settings.auth, settings.username, settings.password, settings.fetch_token
            ),
            ssl_verify_cert=settings.tls_ca_file or True,
            # caldav annotates int, but hands the value to niquests, which takes floats.
            timeout=settings.timeout,  # type: ignore[arg-type]
            enable_rfc6764=False,
        )
        service = cls(client, settings)
        try:
            service._discover()
        except BaseException:
            service.close()
            raise
        log.info(
            "connected to calendar %s as %s (sync-collection: %s)",
            service.url,
            settings.username,
            "yes" if service.supports_sync else "no",
        )
        return service

    def _discover(self) -> None:
        settings = self._settings
        with self._translate("looking up the principal", settings.url):
            principal_url = str(self._client.principal().url)  # type: ignore[no-untyped-call]
        principal = self._propfind_one(principal_url, PRINCIPAL_PROPS, "reading the principal")
        home = principal.get(CALDAV + "calendar-home-set")
        if isinstance(home, list):
            home = home[0] if home else None
        if not home:
            raise CalendarError(
                f"the CalDAV server at {principal_url} names no calendar home for user "
                f"{settings.username!r}: check [caldav] url (it should be the server root or "
                "the principal URL)",
                url=principal_url,
                user=settings.username,
            )
        home_url = urljoin(principal_url, home)
        self._find_schedule_default(principal_url, principal)
        self.user_addresses = _addresses(principal.get(CALDAV + "calendar-user-address-set"))

        calendars = self._list_calendars(home_url)
        wanted = settings.calendar
        chosen: tuple[str, dict[str, Any]] | None = None
        if wanted is not None:
            chosen = next(
                ((href, props) for href, props in calendars if _last_segment(href) == wanted),
                None,
            )
            if chosen is not None and not _holds_events(chosen[1]):
                raise CalendarError(
                    f"the calendar {chosen[0]} does not accept events: choose another "
                    "[caldav] calendar",
                    url=urljoin(home_url, chosen[0]),
                    user=settings.username,
                )
        elif self._schedule_default is not None:
            chosen = next(((h, p) for h, p in calendars if h == self._schedule_default), None)
            if chosen is None:
                # The default calendar may live outside the home we listed.
                default_url = urljoin(home_url, self._schedule_default)
                chosen = (
                    self._schedule_default,
                    self._propfind_one(default_url, CALENDAR_PROPS, "reading the calendar"),
                )
        if chosen is None and wanted is None:
            chosen = next(((h, p) for h, p in calendars if _holds_events(p)), None)
        if chosen is None:
            chosen = self._make_calendar(home_url, wanted or "calendar")

        href, props = chosen
        self.url = urljoin(home_url, href.rstrip("/") + "/")
        self._reports = tuple(props.get(DAV + "supported-report-set") or ())
        if self._reports:
            self.supports_sync = DAV + "sync-collection" in self._reports
        else:
            # No supported-report-set: a sync-token property still means RFC 6578.
            self.supports_sync = bool(props.get(DAV + "sync-token"))
        self._calendar = DAVCalendar(client=self._client, url=self.url)
        token = props.get(DAV + "sync-token")
        if settings.profile is None and self.server_header is None:
            # Cyrus names itself only in OPTIONS answers: one request, once per connect.
            with (
                contextlib.suppress(CalendarError),
                self._translate("asking the server's name", self.url),
            ):
                self._client.options(self.url)
        self.profile = (
            profile_named(settings.profile)
            if settings.profile is not None
            else detect_profile(self.server_header, token if isinstance(token, str) else None)
        )
        inbox = principal.get(CALDAV + "schedule-inbox-URL")
        if isinstance(inbox, list):
            inbox = inbox[0] if inbox else None
        if inbox:
            # Xandikos names its inbox without the "/" of a collection.
            self.inbox_url = urljoin(principal_url, inbox).rstrip("/") + "/"
        self.schedules = self.profile.schedules and self.inbox_url is not None

    def _find_schedule_default(self, principal_url: str, principal: dict[str, Any]) -> None:
        # RFC 6638 puts schedule-default-calendar-URL on the scheduling inbox; some
        # servers also answer it on the principal, so ask there first.
        default = principal.get(CALDAV + "schedule-default-calendar-URL")
        inbox = principal.get(CALDAV + "schedule-inbox-URL")
        if not default and inbox:
            inbox_props = self._propfind_one(
                urljoin(principal_url, inbox), INBOX_PROPS, "reading the scheduling inbox"
            )
            default = inbox_props.get(CALDAV + "schedule-default-calendar-URL")
        if isinstance(default, list):
            default = default[0] if default else None
        if default:
            self._server_has_schedule_default = True
            # A collection's URL ends in "/"; Xandikos names it without one, and
            # resolving an event's name against that would leave the calendar.
            self._schedule_default = _href_of(urljoin(principal_url, default)).rstrip("/") + "/"

    def _list_calendars(self, home_url: str) -> list[tuple[str, dict[str, Any]]]:
        results = self._propfind(home_url, CALENDAR_PROPS, 1, "listing the calendars")
        calendars = [
            (_href_of(result.href), result.properties)
            for result in results
            if CALDAV + "calendar" in (result.properties.get(DAV + "resourcetype") or ())
        ]
        # Servers list in no promised order; sorting makes "the first calendar" stable.
        return sorted(calendars)

    def _make_calendar(self, home_url: str, calendar_id: str) -> tuple[str, dict[str, Any]]:
        url = urljoin(home_url, quote(calendar_id, safe="") + "/")
        name = calendar_id.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        with self._translate("creating the calendar", url):
            response = self._client.mkcalendar(url, MKCALENDAR.format(name=name))
        # 405/409: someone created it between our listing and now, which is fine; if
        # it is something else, the PROPFIND below says so.
        if response.status not in (200, 201, 405, 409):
            self._raise_for_status(response.status, "creating the calendar", url, response)
        log.info("created calendar %s", url)
        props = self._propfind_one(url, CALENDAR_PROPS, "reading the new calendar")
        return _href_of(url), props

    # -- events --------------------------------------------------------------------------

    def href_for(self, uid: str) -> str:
        """The href :meth:`create` uses for the event ``uid`` (a server path)."""
        return _href_of(urljoin(self.url, resource_name(uid)))

    def create(self, uid: str, body: str) -> StoredEvent:
        """Create the event ``uid``; PreconditionFailed if it already exists."""
        return self._put(self.href_for(uid), body, {"If-None-Match": "*"}, "creating the event")

    def update(self, href: str, body: str, etag: str) -> StoredEvent:
        """Replace the event at ``href`` if the server still holds version ``etag``.

        PreconditionFailed when it changed meanwhile (Radicale also answers 412 for an
        event deleted meanwhile); NotFound when the server says it is gone.
        """
        # Deliberately If-Match, never If-Schedule-Tag-Match: a server may keep the
        # schedule tag while applying attendee replies, and a stale PUT would then
        # silently reset those answers (DESIGN §6).
        return self._put(_href_of(href), body, {"If-Match": etag}, "updating the event")

    def get(self, href: str) -> StoredEvent:
        """Read the event at ``href``; NotFound if it does not exist."""
        href = _href_of(href)
        url = self._url_for(href)
        with self._translate("reading the event", url):
            response = self._client.request(url, "GET", "", {"Accept": "text/calendar"})
        if response.status != 200:
            self._raise_for_status(response.status, "reading the event", url, response)
        etag = response.headers.get("ETag")
        body = _response_text(response)
        if not etag:
            # RFC 4791 lets a server omit the ETag; ask for the property instead.
            etag = self._etag_of(url)
        log.debug("GET %s -> %s", href, etag)
        return StoredEvent(href=href, etag=etag, body=body)

    def delete(self, href: str, etag: str | None = None) -> None:
        """Delete the event at ``href`` (only if still at ``etag``, when given).

        NotFound when it is already gone; PreconditionFailed when it changed meanwhile.
        """
        href = _href_of(href)
        url = self._url_for(href)
        headers = {"If-Match": etag} if etag else {}
        with self._translate("deleting the event", url):
            response = self._client.delete(url, headers)
        if response.status not in (200, 202, 204):
            self._raise_for_status(response.status, "deleting the event", url, response)
        log.debug("DELETE %s", href)

    def _put(self, href: str, body: str, condition: dict[str, str], action: str) -> StoredEvent:
        url = self._url_for(href)
        headers = {"Content-Type": ICAL_CONTENT_TYPE, **condition}
        with self._translate(action, url):
            response = self._client.put(url, body, headers)
        if response.status not in (200, 201, 204):
            self._raise_for_status(response.status, action, url, response)
        etag = response.headers.get("ETag")
        if not etag:
            # A server that changed what we sent must not return an ETag (RFC 4791
            # §5.3.4): read its version, so the caller holds what is really stored.
            log.debug("PUT %s returned no ETag; reading it back", href)
            return self.get(href)
        log.debug("PUT %s -> %s", href, etag)
        return StoredEvent(href=href, etag=etag, body=body, echoed=True)

    def as_stored(self, event: StoredEvent) -> StoredEvent:
        """The event as the server holds it: ``event`` itself, or read back (GET) when its
        body is only what we sent. A scheduling server adds SCHEDULE-STATUS to our text."""
        return self.get(event.href) if event.echoed else event

    def _etag_of(self, url: str) -> str:
        props = self._propfind_one(url, PROPFIND.format(props="<d:getetag/>"), "reading an ETag")
        etag = props.get(DAV + "getetag")
        if not isinstance(etag, str) or not etag:
            raise self._error(
                ServerError,
                f"the CalDAV server gave no ETag for {url}: it cannot be used for safe updates",
                url=url,
            )
        return etag

    # -- changes -------------------------------------------------------------------------

    def changes_since(self, sync_token: str | None) -> Changes:
        """What changed since ``sync_token`` (RFC 6578); None lists the whole calendar.

        One sync-collection REPORT, plus one calendar-multiget REPORT when something
        changed. InvalidSyncToken when the server no longer knows the token: the caller
        then calls ``changes_since(None)`` for a full listing.
        """
        if not self.supports_sync:
            raise self._error(
                CalendarError,
                f"the calendar {self.url} does not support sync-collection (RFC 6578): "
                "use changes_by_listing() for this server",
            )
        # caldav quietly takes a "fake-" token as its own and lists the whole calendar
        # through a search, whatever disable_fallback says: treat it as unknown.
        if sync_token is not None and (not sync_token or sync_token.startswith("fake-")):
            raise self._error(
                InvalidSyncToken,
                f"the sync token {sync_token!r} was not issued by {self.url}: do a full sync",
            )
        tree = self._report(
            SYNC_COLLECTION.format(token=escape(sync_token or "")),
            "asking for changes",
            sync_token_given=bool(sync_token),
        )
        token = tree.findtext(DAV + "sync-token")
        if not token:
            raise self._error(
                ServerError,
                f"the CalDAV server answered the sync request for {self.url} without a "
                "sync token: the server or a proxy in front of it is misbehaving",
            )
        calendar_href = _href_of(self.url)
        deleted: set[str] = set()
        wanted: list[str] = []
        for response in tree.iter(DAV + "response"):
            href = _href_of(response.findtext(DAV + "href") or "")
            status = response.findtext(DAV + "status") or ""
            if href.rstrip("/") == calendar_href.rstrip("/"):
                if " 507 " in status:
                    log.warning("%s truncated its sync report; the rest comes next poll", self.url)
                continue
            if " 404 " in status:
                deleted.add(href)
            else:
                wanted.append(href)
        fetched = self._fetch(wanted)
        gone = fetched.gone
        log.debug(
            "sync %s: %d changed, %d deleted, %d unreadable",
            self.url,
            len(fetched.events),
            len(deleted | gone),
            len(fetched.unreadable),
        )
        return Changes(
            sync_token=token,
            changed=fetched.events,
            deleted=tuple(sorted(deleted | gone)),
            full=sync_token is None,
            unreadable=fetched.unreadable,
        )

    def _report(
        self, body: str, action: str, *, sync_token_given: bool = False, url: str | None = None
    ) -> Any:
        """One REPORT (Depth 1) on the calendar (or the collection at ``url``); returns the
        parsed multistatus.

        Built and parsed here rather than through caldav's object layer: a poll's cost
        should be the server's, not the client's (caldav builds an object per event).
        """
        url = url or self.url
        headers = {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
        with self._translate(action, url, sync_token_given=sync_token_given):
            response = self._client.request(url, "REPORT", body, headers)
        if response.status in (403, 412) and sync_token_given:
            conditions: set[str] = set()
            with contextlib.suppress(Exception):
                conditions = set(dav_error.parse_preconditions(response.raw))
            if VALID_SYNC_TOKEN in conditions or response.status == 412:
                raise self._error(
                    InvalidSyncToken,
                    f"the CalDAV server at {self.url} no longer knows the sync token: "
                    "do a full sync",
                )
        if response.status != 207:
            self._raise_for_status(response.status, action, url, response)
        tree = response.tree
        if tree is None or tree.tag != DAV + "multistatus":
            kind = response.headers.get("Content-Type") or "no content type"
            raise self._error(
                ServerError,
                f"the CalDAV server at {url} sent a malformed answer while {action} "
                f"({kind}): check the server, or a proxy in front of it",
                url=url,
                status=response.status,
            )
        return tree

    def changes_by_listing(
        self, known: Mapping[str, str], ctag: str | None
    ) -> tuple[str | None, Changes]:
        """Changes found by comparing ETags, for servers without sync-collection.

        ``known`` maps the hrefs the caller holds to their ETags; ``ctag`` is what this
        method returned last time. An unchanged ctag costs one PROPFIND and lists
        nothing. Returns the new ctag (None if the server has none) and the changes,
        with deletions computed from ``known``.
        """
        # The ctag is read before the listing: a change landing in between then makes
        # the next poll list again, instead of being missed.
        props = self._propfind_one(self.url, CTAG_PROPS, "reading the calendar's ctag")
        new_ctag = props.get(CALSERVER + "getctag") or props.get(DAV + "sync-token")
        new_ctag = new_ctag if isinstance(new_ctag, str) and new_ctag else None
        if ctag is not None and new_ctag == ctag:
            return ctag, Changes(sync_token=ctag, changed=(), deleted=(), full=False)
        results = self._propfind(self.url, LISTING_PROPS, 1, "listing the calendar")
        calendar_href = _href_of(self.url)
        listing: dict[str, str] = {}
        for result in results:
            href = _href_of(result.href)
            if href == calendar_href or DAV + "collection" in (
                result.properties.get(DAV + "resourcetype") or ()
            ):
                continue
            listing[href] = str(result.properties.get(DAV + "getetag") or "")
        known_etags = {_href_of(href): etag for href, etag in known.items()}
        wanted = [
            href
            for href, etag in sorted(listing.items())
            if not etag or known_etags.get(href) != etag
        ]
        fetched = self._fetch(wanted)
        deleted = {href for href in known_etags if href not in listing} | fetched.gone
        return new_ctag, Changes(
            sync_token=new_ctag or "",
            changed=fetched.events,
            deleted=tuple(sorted(deleted)),
            full=not known_etags,
            unreadable=fetched.unreadable,
        )

    # -- the scheduling inbox (RFC 6638 §2.2) -----------------------------------------------

    def inbox_listing(self) -> dict[str, str]:
        """The objects in the login's scheduling inbox: href → ETag (one PROPFIND).

        Listed, not queried: Xandikos answers a calendar-query on its inbox with 500.
        Empty when the server names no inbox.
        """
        if self.inbox_url is None:
            return {}
        results = self._propfind(self.inbox_url, LISTING_PROPS, 1, "listing the scheduling inbox")
        inbox_href = _href_of(self.inbox_url).rstrip("/")
        listing: dict[str, str] = {}
        for result in results:
            href = _href_of(result.href)
            if href.rstrip("/") == inbox_href or DAV + "collection" in (
                result.properties.get(DAV + "resourcetype") or ()
            ):
                continue
            listing[href] = str(result.properties.get(DAV + "getetag") or "")
        return listing

    def read_inbox(self, hrefs: Iterable[str]) -> Fetched:
        """Read objects of the scheduling inbox with one calendar-multiget REPORT on it."""
        if self.inbox_url is None:
            return Fetched((), set(), ())
        return self._fetch(sorted({_href_of(h) for h in hrefs}), self.inbox_url, inbox=True)

    def delete_from_inbox(self, href: str, etag: str) -> None:
        """Delete an object of the scheduling inbox, only if still at `etag`.

        An href outside the inbox is refused, whatever the server listed: the inbox
        reader deletes what the server named, and must never delete anything else.
        """
        inbox = _href_of(self.inbox_url or "").rstrip("/") + "/"
        href = _href_of(href)
        if self.inbox_url is None or not href.startswith(inbox) or "/../" in href:
            raise self._error(
                ServerError, f"{href} is not in the scheduling inbox {inbox}: not deleted"
            )
        self.delete(href, etag)

    def fetch(self, hrefs: Iterable[str]) -> Fetched:
        """Read the objects at ``hrefs`` with one calendar-multiget REPORT.

        Objects the server says are gone (404) are listed in ``gone``; objects it
        lists without their data (another status, no calendar-data) in ``unreadable``.
        """
        return self._fetch(sorted({_href_of(h) for h in hrefs}))

    def _fetch(self, hrefs: list[str], url: str | None = None, *, inbox: bool = False) -> Fetched:
        if not hrefs:
            return Fetched((), set(), ())
        body = MULTIGET.format(hrefs="".join(f"<d:href>{escape(h)}</d:href>" for h in hrefs))
        tree = self._report(body, "fetching changed events", url=url)
        events: list[StoredEvent] = []
        unreadable: dict[str, Unreadable] = {}
        gone = set(hrefs)
        for response in tree.iter(DAV + "response"):
            href = _href_of(response.findtext(DAV + "href") or "")
            etag = data = None
            answered = False
            statuses = [response.findtext(DAV + "status") or ""]
            for propstat in response.iter(DAV + "propstat"):
                status = propstat.findtext(DAV + "status") or ""
                if " 200 " not in status:
                    statuses.append(status)
                    continue
                answered = True
                etag = propstat.findtext(f"{DAV}prop/{DAV}getetag")
                data = propstat.findtext(f"{DAV}prop/{CALDAV}calendar-data")
            if data is None:
                failed = "; ".join(s.strip() for s in statuses if s.strip())
                if " 404 " in f" {failed} " or not (failed or answered):
                    # Deleted after the sync report was made, so deleted now.
                    continue
                # Listed but not given: kept for another try, never taken as deleted.
                gone.discard(href)
                unreadable[href] = Unreadable(
                    href, f"the server sent no calendar data ({failed[:200] or 'none given'})"
                )
                continue
            if not etag and inbox:
                # An inbox object is read to be deleted with If-Match: without an ETag it
                # stays, and the other objects are still read.
                gone.discard(href)
                unreadable[href] = Unreadable(href, "the server sent it without an ETag")
                continue
            if not etag:
                raise self._error(
                    ServerError,
                    f"the CalDAV server at {self.url} sent {href} without an ETag: "
                    "it cannot be used for safe updates",
                )
            gone.discard(href)
            unreadable.pop(href, None)
            events.append(StoredEvent(href=href, etag=etag, body=data))
        events.sort(key=lambda event: event.href)
        return Fetched(tuple(events), gone, tuple(unreadable[h] for h in sorted(unreadable)))

    # -- diagnostics ---------------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        """What ``tmcaldav doctor`` reports: product, DAV classes, sync and scheduling.

        ``is_schedule_default`` is None when the server has no schedule-default calendar.
        """
        with self._translate("asking for the server's capabilities", self.url):
            response = self._client.options(self.url)
        if response.status >= 400:
            self._raise_for_status(response.status, "asking for capabilities", self.url, response)
        dav_header = response.headers.get("DAV") or ""
        classes = [item.strip() for item in dav_header.split(",") if item.strip()]
        return {
            "url": self.url,
            "user": self._settings.username,
            "auth": self._settings.auth,
            "profile": self.profile.name,
            "schedules": self.schedules,
            "user_addresses": list(self.user_addresses),
            "product": response.headers.get("Server"),
            "dav": classes,
            "calendar_access": "calendar-access" in classes,
            "calendar_auto_schedule": "calendar-auto-schedule" in classes,
            "sync_collection": self.supports_sync,
            "reports": list(self._reports),
            "schedule_default_calendar": (
                urljoin(self.url, self._schedule_default) if self._schedule_default else None
            ),
            "is_schedule_default": (
                _href_of(self.url) == self._schedule_default
                if self._server_has_schedule_default
                else None
            ),
        }

    def close(self) -> None:
        """Close the HTTP session."""
        with contextlib.suppress(Exception):
            self._client.close()

    def __enter__(self) -> CalendarService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _url_for(self, href: str) -> str:
        return urljoin(self.url, href)

    def _propfind(self, url: str, body: str, depth: int, action: str) -> list[Any]:
        with self._translate(action, url):
            response = self._client.propfind(url, body, depth)
        if response.status not in (200, 207):
            self._raise_for_status(response.status, action, url, response)
        results = response.results
        # A real PROPFIND answer always describes at least the URL asked about; nothing
        # at all means HTML, a login portal or some other non-WebDAV answer.
        if not results:
            kind = response.headers.get("Content-Type") or "no content type"
            raise self._error(
                ServerError,
                f"the server at {url} answered {action} with something that is not WebDAV "
                f"XML ({response.status}, {kind}): check that [caldav] url points at the "
                "CalDAV server and not at a web page or login portal",
                url=url,
                status=response.status,
            )
        return list(results)

    def _propfind_one(self, url: str, body: str, action: str) -> dict[str, Any]:
        results = self._propfind(url, body, 0, action)
        wanted = _href_of(url).rstrip("/")
        for result in results:
            if _href_of(result.href).rstrip("/") == wanted:
                return dict(result.properties)
        # Some servers answer with an href spelled differently; one answer is ours.
        if len(results) == 1:
            return dict(results[0].properties)
        raise self._error(
            ServerError,
            f"the CalDAV server at {url} did not describe that URL while {action}",
            url=url,
        )

    @contextlib.contextmanager
    def _translate(
        self, action: str, url: str, *, sync_token_given: bool = False
    ) -> Iterator[None]:
        """Run one request under the deadline `timeout`, and turn caldav and HTTP-library
        failures into the typed errors above."""
        timeout = self._settings.timeout
        with deadline(timeout) as limit:
            try:
                with self._translate_errors(action, url, sync_token_given=sync_token_given):
                    yield
            except CalendarError as exc:
                if not limit.fired:
                    raise
                # The watchdog cut the connection: say so, not "connection reset".
                raise self._error(
                    Unreachable,
                    f"the CalDAV server at {url} did not answer within {timeout:g} s while "
                    f"{action} (the whole answer must arrive in that time): check that it "
                    "is up and not overloaded, or raise [caldav] timeout",
                    url=url,
                ) from exc

    @contextlib.contextmanager
    def _translate_errors(
        self, action: str, url: str, *, sync_token_given: bool = False
    ) -> Iterator[None]:
        """Turn caldav and HTTP-library failures into the typed errors above."""
        try:
            yield
        except CalendarError:
            raise
        except dav_error.RateLimitError as exc:
            self._raise_for_status(
                exc.status or 429, action, url, None, retry_after_header=exc.retry_after, cause=exc
            )
        except dav_error.DAVError as exc:
            if VALID_SYNC_TOKEN in exc.preconditions or (sync_token_given and exc.status == 412):
                raise self._error(
                    InvalidSyncToken,
                    f"the CalDAV server at {url} no longer knows the sync token: do a full sync",
                    url=url,
                ) from exc
            status = exc.status
            if status is None and isinstance(exc, dav_error.NotFoundError):
                status = 404
            if status is None:
                raise self._error(
                    ServerError,
                    f"the CalDAV server at {url} gave an unusable answer while {action} "
                    f"({exc.reason}): check the server's logs",
                    url=url,
                ) from exc
            self._raise_for_status(
                status, action, url, None, preconditions=exc.preconditions, cause=exc
            )
        except http.exceptions.Timeout as exc:
            raise self._error(
                Unreachable,
                f"the CalDAV server at {url} did not answer within "
                f"{self._settings.timeout:g} s while {action}: check that it is up, or raise "
                "the timeout",
                url=url,
            ) from exc
        except http.exceptions.SSLError as exc:
            advice = certificate_advice(
                exc,
                section="caldav",
                host=urlsplit(url).hostname or url,
                ca_file=self._settings.tls_ca_file,
                name_key="url",
            )
            raise self._error(
                Unreachable,
                f"{advice} (while {action} at {url})",
                url=url,
            ) from exc
        except (http.exceptions.RequestException, OSError) as exc:
            raise self._error(
                Unreachable,
                f"cannot reach the CalDAV server at {url} while {action} "
                f"({type(exc).__name__}): check [caldav] url and that the server is running",
                url=url,
            ) from exc
        except (
            SyntaxError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            AssertionError,
        ) as exc:
            # Only caldav runs inside this block. lxml's XMLSyntaxError is a SyntaxError;
            # the others are caldav tripping over an answer that is not the multistatus it
            # expected (an HTML login page gives a TypeError; caldav's own sanity checks
            # raise AssertionError outside its PRODUCTION mode).
            raise self._error(
                ServerError,
                f"the CalDAV server at {url} sent a malformed answer while {action} "
                f"({type(exc).__name__}): check the server, or a proxy in front of it",
                url=url,
            ) from exc

    def _raise_for_status(
        self,
        status: int,
        action: str,
        url: str,
        response: Any,
        *,
        retry_after_header: str | None = None,
        preconditions: Iterable[str] = (),
        cause: BaseException | None = None,
    ) -> NoReturn:
        user = self._settings.username
        conditions = set(preconditions)
        if response is not None:
            retry_after_header = retry_after_header or response.headers.get("Retry-After")
            with contextlib.suppress(Exception):
                conditions |= set(dav_error.parse_preconditions(response.raw))
        error: CalendarError
        if status == 401:
            check = (
                "check [caldav] token_command (it ran again and its new token was refused "
                "too) and the account the token belongs to"
                if self._settings.auth == "bearer"
                else f"check [caldav] username, the password source and auth "
                f"(now {self._settings.auth!r})"
            )
            error = AuthFailed(
                f"the CalDAV server at {url} rejected the login of user {user!r} (401): {check}",
                url=url,
                user=user,
            )
        elif ORGANIZER_CHANGE in conditions:
            error = OrganizerChangeRefused(
                f"the CalDAV server refused {action} at {url} ({status}): it does not let the "
                "ORGANIZER of an event change, and [scheduling] organizer_email is not the "
                "one the event was published with; delete the event on the server, then "
                "`tmcaldav invite KEY --all-enrolled --resend` publishes it anew",
                url=url,
                user=user,
            )
        elif conditions & UID_CONFLICT:
            error = PreconditionFailed(
                f"another event in {self.url or url} already uses this UID ({status} while "
                f"{action}): read that event instead of creating a new one",
                url=url,
                user=user,
            )
        elif status == 403:
            error = AuthFailed(
                f"the CalDAV server at {url} does not let user {user!r} do this (403 while "
                f"{action}): check [caldav] url and the user's access rights on the server",
                url=url,
                user=user,
            )
        elif status in (404, 410):
            error = NotFound(
                f"nothing found at {url} ({status} while {action})", url=url, user=user
            )
        elif status in (409, 412):
            error = PreconditionFailed(
                f"the CalDAV server refused {action} at {url} ({status}): the event changed "
                "or already exists (or is too large, on Radicale); read it again and merge",
                url=url,
                user=user,
            )
        elif status in (429, 503) or status >= 500:
            retry_after = parse_retry_after(retry_after_header)
            later = f" (it asks to retry after {retry_after:g} s)" if retry_after else ""
            error = ServerError(
                f"the CalDAV server at {url} failed with {status} while {action}{later}: "
                "try again later, and check the server's logs if it persists",
                url=url,
                user=user,
                status=status,
                retry_after=retry_after,
            )
        else:
            error = CalendarError(
                f"the CalDAV server at {url} refused {action} with status {status}"
                f"{_STATUS_HINTS.get(status, '')}",
                url=url,
                user=user,
            )
        raise error from cause


_STATUS_HINTS = {
    400: ": it rejected the iCalendar data as invalid",
    405: ": check that [caldav] url points at a CalDAV server",
    413: ": the event is too large for this server",
    415: ": it does not accept this kind of calendar data",
    422: ": it rejected the iCalendar data as invalid",
    501: ": check that [caldav] url points at a CalDAV server",
}


def _addresses(value: Any) -> tuple[str, ...]:
    """calendar-user-address-set as addresses spelled as the server spells them.

    Only ``mailto:`` entries count (principals also list their own URL there).
    """
    if value is None:
        return ()
    entries = [value] if isinstance(value, str) else list(value)
    found = []
    for entry in entries:
        text = unquote(str(entry).strip())
        if text[:7].lower() == "mailto:":
            found.append(text[7:].strip())
    return tuple(found)


def _holds_events(props: Mapping[str, Any]) -> bool:
    components = props.get(CALDAV + "supported-calendar-component-set")
    # Absent means "any component" (RFC 4791 §5.2.3).
    if not components:
        return True
    if isinstance(components, str):
        components = [components]
    return "VEVENT" in {str(component).upper() for component in components}


def _response_text(response: Any) -> str:
    # caldav keeps the body byte for byte in _raw_body (raw has CRLF turned into LF);
    # fall back to raw should a future caldav drop the attribute.
    body = getattr(response, "_raw_body", None) or response.raw
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body)
