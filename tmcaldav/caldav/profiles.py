"""What differs between CalDAV servers, as data: one profile per server tmcaldav was tried on.

Each row was measured on the real server (tests/test_scheduling_servers.py, docs/servers.md;
tests/test_interop.py checks this table against those measurements). The adapter and its
callers read a field here instead of asking which server they talk to; an unknown server
gets ``generic``, the RFCs' defaults. The profile is picked from what the server says
about itself (its ``Server`` header, the form of its sync tokens) or set in
``[caldav] server_profile``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final


@dataclass(frozen=True)
class ServerProfile:
    """How one CalDAV server behaves where servers differ."""

    #: The profile's name (``cyrus``, ``xandikos``, ``radicale``, ``generic``).
    name: str
    #: How to recognise the server: lower-case substrings of its HTTP ``Server`` header.
    server_header: tuple[str, ...]
    #: ...and, when the header is not specific (Xandikos answers as aiohttp), the form of
    #: its calendars' sync tokens (a regular expression the whole token matches).
    sync_token_form: str | None
    #: Does it schedule (RFC 6638 implicit scheduling: the organizer's PUT invites)?
    schedules: bool
    #: ATTENDEE parameter of the organizer's copy holding the student's answer time
    #: (UTC), or None when the server keeps no answer time there.
    answer_time_param: str | None
    #: Does a student's answer remove SCHEDULE-STATUS from their ATTENDEE line (it comes
    #: back with the organizer's next scheduling PUT)? A missing status is then no failure.
    reply_drops_schedule_status: bool
    #: Does a reschedule reset the PARTSTAT in the students' own copies? If not, their
    #: calendars keep showing the old answer and they must change it to answer again.
    reschedule_resets_student_copy: bool
    #: Does it send invitations from any calendar of the organizer (else only from the
    #: schedule-default one)?
    schedules_from_any_calendar: bool
    #: Does a student's answer come back into the organizer's copy in any calendar (else
    #: only in the schedule-default one: elsewhere the answers never arrive)?
    replies_in_any_calendar: bool
    #: Is ORGANIZER matched against the login's addresses ignoring case (else exactly)?
    organizer_match_ignores_case: bool
    #: May the ORGANIZER of a stored event change (else 403,
    #: allowed-organizer-scheduling-object-change: delete and publish anew)?
    organizer_change_allowed: bool
    #: Whom ``SCHEDULE-FORCE-SEND=REQUEST`` on one ATTENDEE re-sends to: "that" or "all".
    force_send_reaches: str
    #: Does the student's note (``X-RESPONSE-COMMENT``) reach the organizer's ATTENDEE?
    keeps_attendee_note: bool
    #: What an administrator should know, in one line (doctor, README).
    notes: str


#: The servers tmcaldav was measured on, in the order of the columns below; ``generic`` (the
#: RFCs' defaults, for any other server) last.
_SERVERS: Final = ("cyrus", "xandikos", "radicale", "generic")

#: How each server behaves: one row per field of ServerProfile, one column per server
#: (aligned by hand: the formatter leaves it alone).
# fmt: off
_BEHAVIOUR: Final[Mapping[str, tuple[Any, ...]]] = {
    #                                   cyrus        xandikos           radicale   generic
    "server_header": (("cyrus",), ("xandikos", "aiohttp"), ("radicale",), ()),
    "sync_token_form":                 (None,        r"[0-9a-f]{40}",   None,      None),
    "schedules":                       (True,        True,              False,     True),
    # generic: no RFC names one; X-DTSTAMP is Cyrus's, which other servers built on it
    # may share (Fastmail runs Cyrus behind its own front end).
    "answer_time_param":               ("X-DTSTAMP", None,              None,      "X-DTSTAMP"),
    "reply_drops_schedule_status":     (True,        False,             False,     False),
    "reschedule_resets_student_copy":  (True,        False,             False,     True),
    # generic: RFC 6638 lets a server apply replies only in the schedule-default calendar.
    "schedules_from_any_calendar":     (True,        True,              False,     False),
    "replies_in_any_calendar":         (True,        False,             False,     False),
    "organizer_match_ignores_case":    (True,        False,             False,     False),
    "organizer_change_allowed":        (False,       True,              True,      False),
    "force_send_reaches":              ("that",      "all",             "that",    "that"),
    "keeps_attendee_note":             (False,       False,             False,     False),
}
# fmt: on

_NOTES: Final = {
    "cyrus": (
        "schedules only when ORGANIZER is one of the login's addresses; "
        "records each answer's time (X-DTSTAMP)"
    ),
    "xandikos": (
        "multi-user mode only; answers come back only into the schedule-default "
        "calendar; addresses match exactly (case too); a reschedule leaves the "
        "students' own answers in their calendars"
    ),
    "radicale": 'no scheduling: use scheduling.mode = "imip"',
    "generic": "an unknown server: RFC 6638 defaults are assumed",
}

PROFILES: Final[Mapping[str, ServerProfile]] = MappingProxyType(
    {
        name: ServerProfile(
            name=name,
            notes=_NOTES[name],
            **{field: values[column] for field, values in _BEHAVIOUR.items()},
        )
        for column, name in enumerate(_SERVERS)
    }
)
GENERIC: Final = PROFILES["generic"]


def detect_profile(server_header: str | None, sync_token: str | None) -> ServerProfile:
    """The profile of a server from its ``Server`` header and a calendar's sync token.

    The first profile whose header words appear in ``server_header`` (and whose sync-token
    form, if it has one, matches ``sync_token``) wins; else ``generic``.
    """
    header = (server_header or "").lower()
    for profile in PROFILES.values():
        if not any(word in header for word in profile.server_header):
            continue
        if profile.sync_token_form is not None and not (
            sync_token and re.fullmatch(profile.sync_token_form, sync_token)
        ):
            continue
        return profile
    return GENERIC


def profile_named(name: str) -> ServerProfile:
    """The profile called ``name``; KeyError for an unknown one."""
    return PROFILES[name]
