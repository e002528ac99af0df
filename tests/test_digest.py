"""The shipped `digest` plugin and the notices it sends: a real store, a real Radicale,
a real SMTP sink. The daily summary and the decline alert arrive once each, in plain
text, to the office and never to a student; `on_daily` fires once a day at its hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from tmcaldav_plugins.digest import DigestPlugin

from tests.conftest import Cli
from tests.imip_support import parse, smtp_section
from tests.plugin_world import config_for, dispatcher_for, seed
from tests.scenario import StudentSide, add_people, add_session, cli_for
from tests.test_verbs import future, href_of
from tmcaldav.app import open_store
from tmcaldav.notices import send_notices, store_notice
from tmcaldav.store import Store
from tmcaldav.store.model import Notice, Outbox
from tmcaldav.testing import RadicaleServer
from tmcaldav.testing_mail import SmtpSink
from tmcaldav.views import DailyOverview, HookContext
from tmcaldav.views import Notice as NoticeSpec

PEOPLE = {
    "ann@example.org": "Ann Lee",
    "bob@example.org": "Bob",
    "cy@example.org": "Cy",
    "dee@example.org": "Dee",
}


def digest_config(sink: SmtpSink, **settings: str) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
    return (
        smtp_section(sink.port)
        + '\n[plugins]\nenable = ["waitlist", "digest"]\n\n[plugins.digest]\n'
        + 'to = ["office@example.org"]\ndaily_hour = 0\nnotify_days = 7\n'
        + lines
    )


def digest_cli(tmp_path: Path, server: RadicaleServer, extra: str) -> Cli:
    """The CLI on a fresh SQLite store with `extra` config, and the PEOPLE added."""
    tm = cli_for(tmp_path, server, f"sqlite:///{tmp_path / 'store.db'}", extra=extra)
    add_people(tm, PEOPLE)
    return tm


def test_daily_digest_and_decline_alert_arrive_once(
    tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink
) -> None:
    tm = digest_cli(tmp_path, radicale_server, digest_config(smtp_sink))
    tm.ok("person", "edit", "cy@example.org", "--phone", "+49 30 555")
    add_session(tm, "TM-1", "--capacity", "4", start=future(2), end=future(2, 17))
    add_session(tm, "FAR", start=future(20), end=future(20, 17))
    tm.ok("enroll", "TM-1", *PEOPLE)
    tm.ok("enroll", "FAR", "ann@example.org")
    tm.ok("invite", "TM-1", "--all-enrolled")
    tm.ok("invite", "FAR", "--all-enrolled")
    student = StudentSide(radicale_server)
    student.answer(
        href_of(tm), {"ann@example.org": "ACCEPTED", "bob@example.org": "DECLINED",
                      "cy@example.org": "TENTATIVE"}
    )  # fmt: skip
    student.answer(href_of(tm, "FAR"), {"ann@example.org": "DECLINED"})
    out = tm.ok("sync").output
    assert "notices: 2 sent" in out, out

    mails = smtp_sink.wait_for(2)
    assert len(mails) == 2
    for mail in mails:
        assert mail.rcpt_tos == ["office@example.org"]  # never a student
        message = parse(mail.content)
        assert message.get_content_type() == "text/plain"
        assert message.get_content_charset() == "utf-8"
        assert message["Auto-Submitted"] == "auto-generated"
    # A long Subject is folded; unfolded it may keep the fold's leading space.
    by_subject = {str(parse(m.content)["Subject"]).strip(): parse(m.content) for m in mails}
    alert = next(m for s, m in by_subject.items() if "declined TM-1" in s)
    text = alert.get_content()
    assert text.startswith("Bob <bob@example.org> declined TM-1 Intro,")
    assert "tmcaldav session show TM-1" in text
    # The decline of a session three weeks away is in the digest, not an alert.
    assert not any("declined FAR" in s for s in by_subject)
    digest = next(m for s, m in by_subject.items() if s.startswith("tmcaldav digest"))
    body = digest.get_content()
    assert "New answers since" in body
    for line in ("✓ accepted", "✗ declined", "? tentative"):
        assert line in body
    assert "Bob <bob@example.org>  TM-1 Intro" in body
    assert "Ann Lee <ann@example.org>  FAR Intro" in body
    # Open suggestions (the waitlist plugin's), and the session to watch with its
    # unsure and silent students (phone numbers to call).
    assert "cancel_enrollment bob@example.org" in body
    watch = body[body.index("Sessions in the next 3 days") :]
    assert "TM-1 Intro" in watch and "FAR" not in watch
    assert "? tentative  Cy <cy@example.org>  +49 30 555" in watch
    assert "✉ invited    Dee <dee@example.org>" in watch
    assert "ann@example.org" not in watch

    # Again and again: nothing more is sent (one digest a day, one alert per decline).
    tm.ok("sync")
    tm.ok("run", "--once")
    assert len(smtp_sink.received) == 2


def test_notices_never_go_to_students(
    tmp_path: Path, radicale_server: RadicaleServer, smtp_sink: SmtpSink
) -> None:
    extra = digest_config(smtp_sink, send_empty="true").replace(
        'to = ["office@example.org"]', 'to = ["Ann@Example.org"]'
    )
    tm = digest_cli(tmp_path, radicale_server, extra)
    tm.ok("sync")
    assert smtp_sink.received == []
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    with store.transaction() as db:
        notices = db.scalars(select(Notice)).all()
        assert [(n.state, n.next_attempt_at) for n in notices] == [("failed", None)]
        assert "ann@example.org is a student's address" in (notices[0].last_error or "")
    store.close()


def test_notices_wait_for_smtp_and_are_retried(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = open_store(url)
    store.upgrade()
    with store.transaction() as db:
        assert store_notice(db, "digest", "k1", "Subject", "Text\n", ()) is not None
        assert store_notice(db, "digest", "k1", "Subject", "Text\n", ()) is None  # once
    no_smtp = config_for(url)
    assert send_notices(store, no_smtp).waiting == 1
    with_smtp = config_for(
        url, smtp={"host": "127.0.0.1", "port": smtp_sink.port, "security": "none"}
    )
    smtp_sink.fail_next_data()
    failed = send_notices(store, with_smtp)
    assert (failed.sent, failed.failed) == (0, 1)
    assert send_notices(store, with_smtp).sent == 0  # not due yet: backoff
    later = datetime.now(UTC) + timedelta(hours=7)
    assert send_notices(store, with_smtp, now=later).sent == 1
    assert send_notices(store, with_smtp, now=later + timedelta(hours=7)).sent == 0
    mails = smtp_sink.wait_for(1)
    assert len(mails) == 1 and mails[0].rcpt_tos == ["training@example.org"]  # the organizer
    store.close()


def test_on_daily_fires_once_a_day_at_its_hour(store: Store) -> None:
    seed(store, start=datetime.now(UTC) + timedelta(days=1))
    config = config_for(store.url, scheduling={
        "organizer_email": "training@example.org", "timezone": "Europe/Berlin"
    })  # fmt: skip
    calls: list[tuple[str, DailyOverview]] = []

    from tmcaldav.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def on_daily(self, overview: DailyOverview, context: HookContext) -> None:
            calls.append((context.event_id, overview))

    dispatcher = dispatcher_for(config, store)
    from tmcaldav.hooks.plugins import register_plugin

    assert register_plugin(dispatcher.pm, Plugin(), "daily", settings={"daily_hour": 7})
    berlin = ZoneInfo("Europe/Berlin")
    day = (datetime.now(berlin) + timedelta(days=3)).date()
    at = lambda h, m=0: datetime(day.year, day.month, day.day, h, m, tzinfo=berlin)  # noqa: E731
    dispatcher.run(at(6, 59))
    assert calls == []
    dispatcher.run(at(7, 1))
    dispatcher.run(at(13))
    assert [event_id for event_id, _ in calls] == [f"daily:daily:{day.isoformat()}"]
    overview = calls[0][1]
    assert overview.day == day.isoformat() and overview.tz == "Europe/Berlin"
    next_day = at(7, 5) + timedelta(days=1)
    dispatcher.run(next_day)
    assert len(calls) == 2 and calls[1][0].endswith((day + timedelta(days=1)).isoformat())
    with store.transaction() as db:
        rows = db.scalars(select(Outbox.event_id).where(Outbox.hook == "daily")).all()
    assert len(rows) == 2


def test_digest_plugin_settings_and_windows() -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        DigestPlugin({"hour": 7})
    with pytest.raises(ValueError, match="to: not an e-mail address"):
        DigestPlugin({"to": ["nobody"]})
    with pytest.raises(ValueError, match="notify_days"):
        DigestPlugin({"notify_days": -1})
    plugin = DigestPlugin({"notify_days": 2})
    assert plugin.to == ()
    with pytest.raises(ValueError, match="a subject of one line"):
        NoticeSpec("k", "two\nlines", "text")


def test_digest_in_cli_plugins(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    from tests.conftest import write_config

    config = write_config(
        tmp_path / "c.toml", f"sqlite:///{tmp_path / 's.db'}", digest_config(smtp_sink)
    )
    Cli(config).ok("db", "upgrade")
    out = Cli(config).ok("plugins").output
    assert "digest" in out and "on_daily" in out and "on_decline" in out
