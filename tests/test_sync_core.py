"""The pure core, hit directly (no server): iTIP ordering, the diff, and the merge.

Hypothesis drives each with generated stores and server events; the end-to-end tests
against Radicale (test_sync.py, test_sync_machine.py) check the same rules through the
network.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tmcaldav import ical
from tmcaldav.domain import CalendarStatus, EnrollmentStatus, values
from tmcaldav.publish import Plan, Student, merge_attendees
from tmcaldav.sync import KnownEnrollment, KnownSession, ServerEvent, diff, is_newer

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ORGANIZER = "training@example.org"
EMAILS = [f"s{i}@example.org" for i in range(6)]

sequences = st.integers(min_value=0, max_value=5)
stamps = st.none() | st.integers(min_value=0, max_value=10).map(lambda m: T0 + timedelta(minutes=m))
answered = st.sampled_from([s for s in values(CalendarStatus) if s != "not_invited"])
stored = st.sampled_from(values(CalendarStatus))


def attendee(email: str, status: str, stamp: datetime | None = None) -> ical.AttendeeState:
    partstat = ical.STATUS_TO_PARTSTAT.get(status, "NEEDS-ACTION")
    return ical.AttendeeState(email, None, partstat, status, None, stamp)


def event(uid: str, sequence: int, attendees: dict[str, ical.AttendeeState]) -> ical.EventState:
    return ical.EventState(
        uid=uid,
        sequence=sequence,
        dtstamp=T0,
        status="CONFIRMED",
        summary="T",
        start=T0,
        end=T0 + timedelta(hours=1),
        organizer=ORGANIZER,
        attendees=attendees,
        duplicates=(),
        method=None,
        comment=None,
    )


# ---- is_newer ----------------------------------------------------------------------------


@given(sequences, stamps, sequences, stamps)
def test_a_higher_sequence_always_wins(
    seq: int, stamp: datetime | None, cur: int, cur_stamp: datetime | None
) -> None:
    if seq != cur:
        assert is_newer((seq, stamp), (cur, cur_stamp)) == (seq > cur)


@given(sequences, stamps, stamps)
def test_within_a_sequence_the_later_stamp_wins_and_a_tie_goes_to_the_newcomer(
    seq: int, stamp: datetime | None, cur_stamp: datetime | None
) -> None:
    newer = is_newer((seq, stamp), (seq, cur_stamp))
    if stamp is not None and cur_stamp is not None and stamp != cur_stamp:
        assert newer == (stamp > cur_stamp)
    else:
        assert newer


@given(sequences, stamps, sequences, stamps)
def test_of_two_different_answers_exactly_one_is_newer(
    seq: int, stamp: datetime | None, cur: int, cur_stamp: datetime | None
) -> None:
    if (seq, stamp) != (cur, cur_stamp) and stamp is not None and cur_stamp is not None:
        assert is_newer((seq, stamp), (cur, cur_stamp)) != is_newer((cur, cur_stamp), (seq, stamp))


# ---- diff --------------------------------------------------------------------------------


@st.composite
def worlds(draw: st.DrawFn) -> tuple[KnownSession, ServerEvent]:
    enrolled = draw(st.lists(st.sampled_from(EMAILS), unique=True, max_size=5))
    enrollments = {
        email: KnownEnrollment(
            id=i + 1,
            email=email,
            status=draw(st.sampled_from(values(EnrollmentStatus))),
            calendar_status=draw(stored),
            answer_sequence=draw(st.none() | sequences),
            answer_dtstamp=draw(stamps),
        )
        for i, email in enumerate(enrolled)
    }
    on_server = draw(st.lists(st.sampled_from([*EMAILS, ORGANIZER]), unique=True, max_size=7))
    attendees = {e: attendee(e, draw(answered), draw(stamps)) for e in on_server}
    session = KnownSession(
        1, "TM-1", "uid-1", "/cal/1.ics", "etag-old", 0, "published", enrollments
    )
    server = ServerEvent("/cal/1.ics", "etag-new", event("uid-1", draw(sequences), attendees))
    return session, server


@settings(max_examples=300)
@given(worlds())
def test_the_diff_reports_exactly_the_changed_answers(
    world: tuple[KnownSession, ServerEvent],
) -> None:
    session, server = world
    assert server.state is not None
    result = diff([session], [server], [], full=False, organizer=ORGANIZER)
    changed = {a.email: a for a in result.answers}
    for email, state in server.state.attendees.items():
        known = session.enrollments.get(email)
        if known is None:
            # Nobody enrolled them: a stranger (never the organizer), never an answer.
            assert email not in changed
            assert (email == ORGANIZER) != any(s.email == email for s in result.strangers)
            continue
        if state.calendar_status == known.calendar_status:
            assert email not in changed
        elif email in changed:
            change = changed[email]
            assert (change.old, change.new) == (known.calendar_status, state.calendar_status)
            assert change.sequence == server.state.sequence
            # A reset to "invited" with a higher SEQUENCE is the organizer's reschedule.
            assert (change.reason == "rescheduled") == (
                change.new == "invited"
                and known.answer_sequence is not None
                and server.state.sequence > known.answer_sequence
            )
        else:
            # Left out only when the store's answer is newer in iTIP order.
            assert not is_newer(
                (server.state.sequence, state.reply_time),
                (known.answer_sequence, known.answer_dtstamp),
            )
    assert result.seen == {1: ("/cal/1.ics", "etag-new", server.state.sequence)}


@settings(max_examples=300)
@given(worlds())
def test_the_diff_applied_once_finds_nothing_more(world: tuple[KnownSession, ServerEvent]) -> None:
    session, server = world
    first = diff([session], [server], [], full=False, organizer=ORGANIZER)
    updated = dict(session.enrollments)
    for change in first.answers:
        known = updated[change.email]
        updated[change.email] = KnownEnrollment(
            known.id, known.email, known.status, change.new, change.sequence, change.dtstamp
        )
    again = diff(
        [KnownSession(1, "TM-1", "uid-1", "/cal/1.ics", "etag-new", 0, "published", updated)],
        [server],
        [],
        full=False,
        organizer=ORGANIZER,
    )
    assert again.answers == []


def test_a_deleted_event_and_a_missing_one_in_a_full_listing_are_missing() -> None:
    session = KnownSession(1, "TM-1", "uid-1", "/cal/1.ics", "e", 0, "published", {})
    other = KnownSession(2, "TM-2", "uid-2", "/cal/2.ics", "e", 0, "published", {})
    assert diff([session], [], ["/cal/1.ics"], full=False, organizer=ORGANIZER).missing == [1]
    assert sorted(diff([session, other], [], [], full=True, organizer=ORGANIZER).missing) == [1, 2]
    assert diff([session], [], [], full=False, organizer=ORGANIZER).missing == []


# ---- merge_attendees --------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> tuple[Plan, ical.EventState | None]:
    emails = draw(st.lists(st.sampled_from(EMAILS), unique=True, max_size=6))
    students = tuple(Student(e, None, draw(answered), "enrolled") for e in emails)
    plan = Plan(attendees=students, reschedule=draw(st.booleans()))
    if draw(st.booleans()):
        return plan, None
    on_server = draw(st.lists(st.sampled_from(EMAILS), unique=True, max_size=6))
    return plan, event("uid-1", 0, {e: attendee(e, draw(answered)) for e in on_server})


@settings(max_examples=300)
@given(plans())
def test_the_merge_keeps_every_answer_the_server_holds(
    case: tuple[Plan, ical.EventState | None],
) -> None:
    plan, server = case
    attendees, unrecorded = merge_attendees(plan, server)
    assert [a.email for a in attendees] == [s.email for s in plan.attendees]
    on_server = server.attendees if server is not None else {}
    for student, written in zip(plan.attendees, attendees, strict=True):
        there = on_server.get(student.email)
        if plan.reschedule:
            assert written.partstat == "NEEDS-ACTION"
        elif there is not None:
            assert written.partstat == there.partstat  # the student's answer wins
        else:
            assert written.partstat == ical.STATUS_TO_PARTSTAT[student.calendar_status]
    expected = (
        {}
        if plan.reschedule
        else {
            s.email: on_server[s.email].calendar_status
            for s in plan.attendees
            if s.email in on_server and on_server[s.email].calendar_status != s.calendar_status
        }
    )
    assert unrecorded == expected
