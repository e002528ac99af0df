"""The XML bodies tmcaldav sends (PROPFIND, sync-collection REPORT, multiget, MKCALENDAR).

Built as text: the sync path parses its own multistatus, which costs a third of the
client library's object layer on every poll.
"""

from __future__ import annotations

import re

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
CALSERVER = "{http://calendarserver.org/ns/}"
VALID_SYNC_TOKEN = DAV + "valid-sync-token"
UID_CONFLICT = frozenset(
    {CALDAV + "no-uid-conflict", CALDAV + "unique-scheduling-object-resource"}
)
ORGANIZER_CHANGE = CALDAV + "allowed-organizer-scheduling-object-change"
ICAL_CONTENT_TYPE = "text/calendar; charset=utf-8"

PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"'
    ' xmlns:cs="http://calendarserver.org/ns/"><d:prop>{props}</d:prop></d:propfind>'
)
PRINCIPAL_PROPS = PROPFIND.format(
    props="<c:calendar-home-set/><c:schedule-inbox-URL/><c:schedule-default-calendar-URL/>"
    "<c:calendar-user-address-set/>"
)
INBOX_PROPS = PROPFIND.format(props="<c:schedule-default-calendar-URL/>")
CALENDAR_PROPS = PROPFIND.format(
    props="<d:resourcetype/><d:displayname/><d:supported-report-set/>"
    "<c:supported-calendar-component-set/><cs:getctag/><d:sync-token/>"
)
CTAG_PROPS = PROPFIND.format(props="<cs:getctag/><d:sync-token/>")
LISTING_PROPS = PROPFIND.format(props="<d:resourcetype/><d:getetag/>")
SYNC_COLLECTION = (
    '<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:">'
    "<d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>"
    "<d:prop><d:getetag/></d:prop></d:sync-collection>"
)
MULTIGET = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
    "<d:prop><d:getetag/><c:calendar-data/></d:prop>{hrefs}</c:calendar-multiget>"
)
MKCALENDAR = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop>'
    "<d:displayname>{name}</d:displayname>"
    '<c:supported-calendar-component-set><c:comp name="VEVENT"/>'
    "</c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>"
)

# A UID made of these characters is used as the resource name as it is; anything else
# is hashed, so that no server has to agree with us on how to quote it in a URL.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
