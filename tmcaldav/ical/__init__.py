"""iCalendar, pure: build a session's VEVENT, read attendee states, VTIMEZONE from zoneinfo.

Lossy mappings, on purpose (see :func:`normalise_name`): a display name (CN) cannot hold a
double quote or a line break in RFC 5545, so ``"`` becomes ``'`` and every run of line breaks
or other control characters becomes one space. ``^`` is written as ``^^`` (RFC 6868) and
RFC 6868 escapes are decoded on reading, as sabre/dav, Apple and the ``icalendar`` library do.
"""

from tmcaldav.domain import normalise_address
from tmcaldav.ical.build import build_calendar
from tmcaldav.ical.edit import set_partstats
from tmcaldav.ical.event import (
    PARTSTAT_TO_STATUS,
    PRODID,
    STATUS_TO_PARTSTAT,
    Attendee,
    AttendeeState,
    EventSpec,
    EventState,
    ICalError,
    calendar_address,
    partstat_to_status,
)
from tmcaldav.ical.read import find_uid, read_event
from tmcaldav.ical.schedule import ScheduleResult, read_schedule_status
from tmcaldav.ical.text import normalise_name, session_uid

__all__ = [
    "PARTSTAT_TO_STATUS",
    "PRODID",
    "STATUS_TO_PARTSTAT",
    "Attendee",
    "AttendeeState",
    "EventSpec",
    "EventState",
    "ICalError",
    "ScheduleResult",
    "build_calendar",
    "calendar_address",
    "find_uid",
    "normalise_address",
    "normalise_name",
    "partstat_to_status",
    "read_event",
    "read_schedule_status",
    "session_uid",
    "set_partstats",
]
