"""A Hypothesis state machine over the whole answer path against a real Radicale.

Students answer (any PARTSTAT, any spelling), the organizer reschedules, the daemon
polls, and some polls crash before their commit. After every completed poll the store
must equal the server's latest state, and the history must hold no duplicates.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select

from tests.scenario import StudentSide
from tmcaldav import sync
from tmcaldav.app import open_store
from tmcaldav.config import parse_config
from tmcaldav.publish import Publisher
from tmcaldav.store import get_session
from tmcaldav.store.model import Enrollment, Person, Response, TrainingSession
from tmcaldav.store.roster import SessionFields
from tmcaldav.testing import RadicaleServer

EMAILS = ("ann@example.org", "bob@example.org", "cy@example.org")
PARTSTATS = (
    "ACCEPTED",
    "DECLINED",
    "TENTATIVE",
    "DELEGATED",
    "NEEDS-ACTION",
    "accepted",
    "X-UNKNOWN",
)
_runs = itertools.count()


class Crash(Exception):
    """Raised inside the poll's transaction, as a kill before the commit would."""


def make_machine(server: RadicaleServer, folder: Path) -> type[RuleBasedStateMachine]:
    class AnswerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            run = next(_runs)
            pw = folder / "pw"
            pw.write_text(server.users["organizer"])
            pw.chmod(0o600)
            self.config = parse_config(
                {
                    "store": {"url": f"sqlite:///{folder / f'store{run}.db'}"},
                    "caldav": {
                        "url": server.url,
                        "username": "organizer",
                        "password_file": str(pw),
                        "calendar": f"machine{run}",
                    },
                    "scheduling": {"organizer_email": "training@example.org"},
                }
            )
            self.store = open_store(self.config.store.url)
            self.store.upgrade()
            with self.store.transaction() as db:
                session = TrainingSession(
                    key="M",
                    title="Machine",
                    tz="UTC",
                    start_at=parse("2027-01-04T09:00:00+00:00"),
                    end_at=parse("2027-01-04T10:00:00+00:00"),
                )
                session.enrollments = [
                    Enrollment(person=Person(email=e, name=e.split("@")[0]), status="enrolled")
                    for e in EMAILS
                ]
                db.add(session)
            self.publisher = Publisher(self.config, self.store)
            self.publisher.invite("M", all_enrolled=True)
            self.poller = sync.Poller(self.store, self.publisher.calendar, "training@example.org")
            self.student = StudentSide(server)
            self.day = 4
            self.polled_clean = False

        def href(self) -> str:
            with self.store.transaction() as db:
                href = get_session(db, "M").href
            assert href
            return href

        @rule(who=st.sampled_from(EMAILS), partstat=st.sampled_from(PARTSTATS))
        def answer(self, who: str, partstat: str) -> None:
            self.student.answer(self.href(), {who: partstat})
            self.polled_clean = False

        @rule()
        def reschedule(self) -> None:
            self.day += 1
            self.publisher.edit(
                "M",
                SessionFields(
                    start=f"2027-01-{self.day:02d}T09:00+00:00",
                    end=f"2027-01-{self.day:02d}T10:00+00:00",
                ),
            )
            self.polled_clean = False

        @rule()
        def poll(self) -> None:
            self.poller.poll()
            self.polled_clean = True

        @rule()
        def crashing_poll(self) -> None:
            real = sync._apply_sessions

            def crash(*args: object) -> None:
                raise Crash

            sync._apply_sessions = crash  # type: ignore[assignment]
            crashed = False
            try:
                self.poller.poll()
            except Crash:
                crashed = True
            finally:
                sync._apply_sessions = real
            # An idle poll writes nothing, so there is nothing to crash in: then it is
            # a clean poll like any other.
            self.polled_clean = self.polled_clean and not crashed

        @precondition(lambda self: self.polled_clean)
        @invariant()
        def store_equals_server(self) -> None:
            from tmcaldav.ical import partstat_to_status

            on_server = {
                e: partstat_to_status(p) for e, p in self.student.partstats(self.href()).items()
            }
            with self.store.transaction() as db:
                in_store = {
                    e.person.email: e.calendar_status for e in get_session(db, "M").enrollments
                }
            assert in_store == on_server

        @invariant()
        def history_has_no_duplicates(self) -> None:
            with self.store.transaction() as db:
                rows = db.execute(
                    select(
                        Response.enrollment_id,
                        Response.calendar_status,
                        Response.sequence,
                        Response.reason,
                    ).order_by(Response.enrollment_id, Response.id)
                ).all()
            for before, after in itertools.pairwise(rows):
                if before[0] == after[0]:
                    assert before[1:] != after[1:], rows

        def teardown(self) -> None:
            self.store.close()

    return AnswerMachine


def parse(text: str):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_store_always_equals_server(radicale_server: RadicaleServer, tmp_path: Path) -> None:
    machine = make_machine(radicale_server, tmp_path)
    machine.TestCase.settings = settings(
        max_examples=12,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(machine, settings=machine.TestCase.settings)
