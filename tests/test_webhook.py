"""The webhook plugin against a real local HTTP server: signed JSON, retries with
backoff, a bounded queue that never blocks a hook, the spool, and no secrets in logs."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tmcaldav_plugins.webhook import WebhookPlugin, safe_url, sign

from tests.plugin_world import answer, config_for, seed
from tests.webhook_receiver import Receiver, receiving
from tmcaldav.hooks.dispatch import Dispatcher
from tmcaldav.hooks.plugins import get_plugin_manager
from tmcaldav.publish import Publisher
from tmcaldav.store import Store
from tmcaldav.views import HookContext, ResponseChange, SuggestionView

SECRET = "s3cret-for-tests"
NOW = datetime(2026, 11, 1, 9, tzinfo=UTC)


def change(event_id: str = "evt-1") -> tuple[ResponseChange, HookContext]:
    c = ResponseChange(
        event_id, "TM-1", "ann@x.org", "invited", "declined", NOW, 2, "poll", "enrolled"
    )
    return c, HookContext(NOW, event_id)


def plugin(receiver: Receiver, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> WebhookPlugin:
    monkeypatch.setenv("TM_WEBHOOK_SECRET", SECRET)
    base = {
        "urls": [receiver.url],
        "secret_env": "TM_WEBHOOK_SECRET",
        "backoff": 0.01,
        "drain_timeout": 10.0,
    }
    return WebhookPlugin({**base, **settings})


def test_each_event_is_posted_once_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    with receiving() as receiver:
        hook = plugin(receiver, monkeypatch)
        c, ctx = change()
        hook.on_response(c, ctx)
        s = SuggestionView(
            7,
            "TM-1",
            "ann@x.org",
            "cancel_enrollment",
            "declined",
            "waitlist",
            "open",
            "k",
            NOW,
            details={},
        )
        hook.on_suggestion(s, HookContext(NOW, "suggestion:7"))
        hook.on_shutdown()
        got = receiver.wait_for(2)
    assert [r.event_id for r in got] == ["evt-1", "suggestion:7"]
    assert all(r.signed_with(SECRET.encode()) for r in got)
    assert not got[0].signed_with(b"another secret")
    assert got[0].json == {
        "event_id": "evt-1",
        "type": "response",
        "data": {
            "session": "TM-1",
            "email": "ann@x.org",
            "old": "invited",
            "new": "declined",
            "responded_at": NOW.isoformat(),
            "sequence": 2,
            "source": "poll",
            "enrollment_status": "enrolled",
        },
    }
    assert got[1].json["type"] == "suggestion"
    assert got[1].json["data"]["kind"] == "cancel_enrollment"
    assert got[0].headers["X-Tmcaldav-Signature"] == sign(SECRET.encode(), got[0].body)
    assert got[0].headers["Content-Type"].startswith("application/json")


def test_failures_are_retried_with_backoff(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with receiving() as receiver:
        receiver.answers.extend([503, 500])
        hook = plugin(receiver, monkeypatch, max_attempts=5)
        with caplog.at_level(logging.INFO, logger="tmcaldav"):
            hook.on_response(*change())
            hook.on_shutdown()
        got = receiver.wait_for(3)
    assert [r.event_id for r in got] == ["evt-1"] * 3  # same id: the receiver dedupes
    assert hook.sender.delivered == 1
    assert "retry 2" in caplog.text and "retry 3" in caplog.text


def test_client_errors_are_not_retried_and_attempts_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with receiving() as receiver:
        receiver.answers.extend([400, 503, 503])
        hook = plugin(receiver, monkeypatch, max_attempts=2)
        with caplog.at_level(logging.INFO, logger="tmcaldav"):
            hook.on_response(*change("evt-400"))
            receiver.wait_for(1)
            hook.on_response(*change("evt-503"))
            hook.on_shutdown()
        got = receiver.wait_for(3)
    assert [r.event_id for r in got] == ["evt-400", "evt-503", "evt-503"]
    assert "answered HTTP 400 for event evt-400; not retried" in caplog.text
    assert "event evt-503" in caplog.text and "failed 2 time(s)" in caplog.text
    assert hook.sender.delivered == 0


def test_a_stalled_receiver_never_blocks_a_hook(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with receiving() as receiver:
        receiver.gate.clear()  # the receiver takes requests but does not answer
        hook = plugin(receiver, monkeypatch, queue_size=2, timeout=30)
        calls = threading.Thread(
            target=lambda: [hook.on_response(*change(f"evt-{i}")) for i in range(4)]
        )
        with caplog.at_level(logging.WARNING, logger="tmcaldav"):
            calls.start()
            calls.join(10)
            hooks_returned = not calls.is_alive()
            receiver.wait_for(1)
            receiver.gate.set()
            hook.on_shutdown()
        got = receiver.wait_for(2)
    assert hooks_returned  # the hooks only queued their requests
    assert hook.sender.dropped == 2  # a bounded queue: the rest is dropped, and said so
    assert "webhook queue full (2 requests); event evt-2" in caplog.text
    assert sorted(r.event_id or "" for r in got) == ["evt-0", "evt-1"]


def test_the_spool_keeps_requests_across_a_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with receiving() as receiver:
        receiver.answers.extend([503] * 100)  # down for now
        first = plugin(receiver, monkeypatch, spool_dir=str(spool), max_attempts=100, backoff=5.0)
        first.on_response(*change("evt-kept"))
        receiver.wait_for(1)
        first.sender.close(timeout=0)  # the process ends (or is killed) before delivery
        assert len(list(spool.glob("*.json"))) == 1
        receiver.answers.clear()
        second = plugin(receiver, monkeypatch, spool_dir=str(spool))  # the next start
        second.on_response(*change("evt-new"))  # its first request: it takes the spool
        got = receiver.wait_for(3)
        second.on_shutdown()
    assert sorted(r.event_id or "" for r in got) == ["evt-kept", "evt-kept", "evt-new"]
    assert all(r.signed_with(SECRET.encode()) for r in got)
    assert list(spool.glob("*.json")) == []


def _leave_in_spool(receiver: Receiver, monkeypatch: pytest.MonkeyPatch, spool: Path) -> None:
    """A process that queued one request (evt-left) and ended before it was delivered."""
    receiver.answers.append(503)
    gone = plugin(receiver, monkeypatch, spool_dir=str(spool), backoff=30.0, backoff_max=60.0)
    gone.on_response(*change("evt-left"))
    receiver.wait_for(1)
    gone.sender.close(timeout=0)
    assert len(list(spool.glob("*.json"))) == 1


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "tmcaldav-webhook"}


def test_building_the_plugin_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`tmcaldav plugins` builds every plugin: that must not send the spool (the daemon
    may be sending it) nor make the command wait for it at exit."""
    spool = tmp_path / "spool"
    with receiving() as receiver:
        _leave_in_spool(receiver, monkeypatch, spool)
        before = _workers()
        listed = plugin(receiver, monkeypatch, spool_dir=str(spool))
        assert _workers() - before == set()
        assert not listed.sender.sends_spool
        listed.on_shutdown()
        assert len(receiver.received) == 1  # only the first process's try
        # Its first request starts it: it takes the spool and sends what waits there.
        user = plugin(receiver, monkeypatch, spool_dir=str(spool))
        user.on_response(*change("evt-now"))
        got = receiver.wait_for(3)
        user.on_shutdown()
    assert sorted(r.event_id or "" for r in got) == ["evt-left", "evt-left", "evt-now"]
    assert list(spool.glob("*.json")) == []


def test_one_process_at_a_time_sends_the_spool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The daemon sends the spool; a `tmcaldav sync` beside it leaves its requests there
    for the daemon instead of sending the daemon's (and its own) a second time."""
    spool = tmp_path / "spool"
    with receiving() as receiver:
        _leave_in_spool(receiver, monkeypatch, spool)
        receiver.gate.clear()  # the receiver takes requests but answers none yet
        daemon = plugin(receiver, monkeypatch, spool_dir=str(spool))
        daemon.sender.rescan_interval = 0.05
        daemon.on_response(*change("evt-daemon"))
        assert daemon.sender.sends_spool
        receiver.wait_for(2)  # evt-left again, now stalled
        sync = plugin(receiver, monkeypatch, spool_dir=str(spool), drain_timeout=0.5)
        sync.on_response(*change("evt-sync"))
        assert not sync.sender.sends_spool
        sync.on_shutdown()  # nothing of its own in flight: it ends at once
        assert len(list(spool.glob("*.json"))) == 3
        receiver.gate.set()
        got = receiver.wait_for(4)
        daemon.on_shutdown()
    assert sorted(r.event_id or "" for r in got[1:]) == ["evt-daemon", "evt-left", "evt-sync"]
    assert len(receiver.received) == 4
    assert list(spool.glob("*.json")) == []


def test_settings_and_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "webhook.secret"
    secret.write_text("file-secret\n")
    secret.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        WebhookPlugin({"urls": ["https://h.example.org/x"], "secret_file": str(secret)})
    secret.chmod(0o600)
    hook = WebhookPlugin({"urls": ["https://h.example.org/x"], "secret_file": str(secret)})
    assert hook.settings.secret == b"file-secret"
    assert "file-secret" not in repr(hook.settings)
    with pytest.raises(ValueError, match="timeout") as bad:
        WebhookPlugin(
            {
                "urls": ["https://user:pw@h.example.org/x?token=t"],
                "secret_file": str(secret),
                "timeout": 0,
                "secret_env": "X",
            }
        )
    assert "exactly one of secret_file, secret_env" in str(bad.value)
    assert safe_url("https://user:pw@h.example.org:8443/x?token=t") == (
        "https://h.example.org:8443/x"
    )


def test_webhook_through_the_plugin_manager(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seed(store, waitlisted=["dee@example.org"])
    monkeypatch.setenv("TM_WEBHOOK_SECRET", SECRET)
    with receiving() as receiver:
        receiver.answers.append(503)
        config = config_for(
            store.url,
            plugins={
                "enable": ["waitlist", "webhook"],
                "webhook": {
                    "urls": [receiver.url],
                    "secret_env": "TM_WEBHOOK_SECRET",
                    "backoff": 0.01,
                },
            },
        )
        pm = get_plugin_manager(config)
        assert pm.failures == []
        dispatcher = Dispatcher(config, store, Publisher(config, store), pm)
        answer(store, "TM-1", "ann@example.org", "declined")
        with caplog.at_level(logging.DEBUG, logger="tmcaldav"):
            dispatcher.run()
            dispatcher.close()
        got = receiver.wait_for(4)
    kinds = {r.event_id: r.json["type"] for r in got}
    # The answer (sent twice: the first try got a 503), the cancel and the invite.
    assert sorted(kinds.values()) == ["response", "suggestion", "suggestion"]
    assert len(got) == 4
    assert all(r.signed_with(SECRET.encode()) for r in got)
    assert SECRET not in caplog.text


def test_a_withdrawn_suggestion_is_posted(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(store, waitlisted=["dee@example.org"])
    monkeypatch.setenv("TM_WEBHOOK_SECRET", SECRET)
    with receiving() as receiver:
        config = config_for(
            store.url,
            plugins={
                "enable": ["waitlist", "webhook"],
                "webhook": {"urls": [receiver.url], "secret_env": "TM_WEBHOOK_SECRET"},
            },
        )
        pm = get_plugin_manager(config)
        dispatcher = Dispatcher(config, store, Publisher(config, store), pm)
        answer(store, "TM-1", "ann@example.org", "declined")
        dispatcher.run()
        # Ann accepts after all: the cancel and the invite are withdrawn.
        answer(store, "TM-1", "ann@example.org", "accepted")
        dispatcher.run()
        dispatcher.close()
        got = receiver.wait_for(6)
    withdrawn = [r.json for r in got if r.json["type"] == "suggestion_withdrawn"]
    kinds = sorted(w["data"]["kind"] for w in withdrawn)
    assert kinds == ["cancel_enrollment", "invite_waitlisted"]
    assert all(w["data"]["withdrawn_reason"].startswith("Ann accepted") for w in withdrawn)
    assert all(w["event_id"].startswith("suggestion_withdrawn:") for w in withdrawn)


def test_the_example_config_documents_valid_webhook_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tomllib

    example = (Path(__file__).resolve().parent.parent / "daemon.example.toml").read_text()
    start = example.index("# [plugins.webhook]")
    block = []
    for line in example[start:].splitlines():
        if not line.startswith("# "):
            break
        block.append(line[2:])
    settings = tomllib.loads("\n".join(block))["plugins"]["webhook"]
    assert set(settings) >= {"urls", "secret_file", "spool_dir", "max_attempts", "backoff"}
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    settings |= {"secret_file": str(secret), "spool_dir": str(tmp_path / "spool")}
    hook = WebhookPlugin(settings)
    assert hook.settings.urls == ("https://hooks.example.org/tmcaldav",)
    hook.on_shutdown()
