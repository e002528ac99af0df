"""The vocabulary and the one address rule: what is accepted at any door can be invited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmcaldav import ical
from tmcaldav.domain import (
    ICONS,
    PAGE_RANK,
    AddressError,
    CalendarStatus,
    EnrollmentStatus,
    normalise_address,
    values,
)

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def event_with(address: str) -> str:
    attendee = ical.Attendee(address, "A Student")
    spec = ical.EventSpec(
        uid="tmcaldav-T@example.org",
        summary="Training",
        start=START,
        end=START + timedelta(hours=2),
        tz="Europe/Berlin",
        sequence=0,
        dtstamp=START,
        status="CONFIRMED",
        organizer_email="training@example.org",
        organizer_name=None,
        attendees=(attendee,),
    )
    return ical.build_calendar(spec)


@pytest.mark.parametrize(
    "bad", ["ann@ex..org", "ann@localhost", "not-an-address", "a@b@c.org", "ann@.org", "@x.org"]
)
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(AddressError, match="not an e-mail address"):
        normalise_address(bad)


def test_spellings_of_one_address_agree() -> None:
    assert normalise_address(" MAILTO:Ann@Example.ORG ") == "ann@example.org"


@given(st.text(max_size=40) | st.emails())
def test_every_accepted_address_can_be_invited_and_read_back(text: str) -> None:
    try:
        address = normalise_address(text)
    except AddressError:
        return
    state = ical.read_event(event_with(address))
    assert list(state.attendees) == [address]


def test_every_status_has_an_icon_and_a_place_on_the_page() -> None:
    assert set(ICONS) == set(values(CalendarStatus))
    assert set(PAGE_RANK) == set(values(EnrollmentStatus))
