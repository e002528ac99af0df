"""Plugin discovery and loading: entry points (for real, through importlib.metadata),
plugin_dirs files, settings, failures reported by name, and `tmcaldav plugins`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import Cli, write_config
from tests.plugin_file_support import logged_calls, plugins_section, recording_hooks
from tests.plugin_world import Recorder, answer, config_for, seed
from tmcaldav.hooks.dispatch import Dispatcher
from tmcaldav.hooks.plugins import get_plugin_manager, hook_names, register_plugin
from tmcaldav.publish import Publisher
from tmcaldav.store import Store

SHIPPED = ["waitlist", "followup", "noshow", "reschedule", "webhook"]

# A third-party plugin: a class built with its settings, appending each call to a file.
ACME = """
import json
from tmcaldav.hookspecs import hookimpl

__version__ = "1.2"


class AcmePlugin:
    def __init__(self, settings):
        self.log = settings["log_file"]

    def _record(self, hook, event_id):
        with open(self.log, "a") as f:
            f.write(json.dumps({"plugin": "acme", "hook": hook, "event": event_id}) + "\\n")
""" + recording_hooks("on_decline", "on_response")

# A local plugin file: module-level hooks and a settings factory.
LOCAL = """
import json
from tmcaldav.hookspecs import hookimpl


class Local:
    def __init__(self, settings):
        self.log = settings["log_file"]

    @hookimpl
    def on_decline(self, change, session, context):
        with open(self.log, "a") as f:
            f.write(json.dumps({"plugin": "local", "hook": "on_decline",
                                "event": context.event_id, "module": __name__,
                                "spec": __spec__.origin}) + "\\n")


def tmcaldav_plugin(settings):
    return Local(settings)
"""


def install_entry_point(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install acme as a distribution in `site` (a dist-info with entry_points.txt)."""
    site.mkdir()
    (site / "acme_tmcaldav.py").write_text(ACME)
    info = site / "acme_tmcaldav-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tmcaldav\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[tmcaldav]\nacme = acme_tmcaldav:AcmePlugin\n")
    monkeypatch.syspath_prepend(str(site))


def test_entry_point_and_plugin_dir_plugins_receive_hooks(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_entry_point(tmp_path / "site", monkeypatch)
    folder = tmp_path / "local-plugins"
    folder.mkdir()
    (folder / "local.py").write_text(LOCAL)
    log = tmp_path / "calls.jsonl"
    config = config_for(
        store.url,
        plugins={
            "enable": ["acme", "local"],
            "plugin_dirs": [str(folder)],
            "acme": {"log_file": str(log)},
            "local": {"log_file": str(log)},
        },
    )
    pm = get_plugin_manager(config)
    assert pm.failures == []
    info = {p.name: p for p in pm.loaded}
    assert info["acme"].version == "1.2"
    assert info["acme"].source == "entry point acme_tmcaldav:AcmePlugin"
    assert info["acme"].hooks == ("on_decline", "on_response")
    assert info["local"].source == f"file {folder / 'local.py'}"
    # Shipped plugins are found through the same entry-point group, but not enabled.
    assert set(SHIPPED) <= set(pm.available)
    seed(store)
    answer(store, "TM-1", "bob@example.org", "declined")
    Dispatcher(config, store, Publisher(config, store), pm).run()
    calls = logged_calls(log)
    assert sorted((c["plugin"], c["hook"]) for c in calls) == [
        ("acme", "on_decline"),
        ("acme", "on_response"),
        ("local", "on_decline"),
    ]
    assert len({c["event"] for c in calls}) == 1
    local = next(c for c in calls if c["plugin"] == "local")
    # Loaded with a real module spec, under its own package name.
    assert local["module"] == "tmcaldav_local_plugins.local"
    assert local["spec"] == str(folder / "local.py")


def test_load_failures_are_reported_by_name_and_the_rest_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text("raise ImportError('needs the acme SDK')\n")
    (folder / "typo.py").write_text(
        "from tmcaldav.hookspecs import hookimpl\n\n@hookimpl\ndef on_declined(change):\n    pass\n"
    )
    (folder / "wrongargs.py").write_text(
        "from tmcaldav.hookspecs import hookimpl\n\n@hookimpl\ndef on_decline(change, seat):\n"
        "    pass\n"
    )
    (folder / "good.py").write_text(
        "from tmcaldav.hookspecs import hookimpl\n\n@hookimpl\ndef on_accept(change):\n    pass\n"
    )
    (folder / "waitlist.py").write_text("")  # clashes with the shipped plugin's name
    config = config_for(
        f"sqlite:///{tmp_path / 's.db'}",
        plugins={
            "enable": [
                "broken",
                "typo",
                "wrongargs",
                "good",
                "missing",
                "waitlist",
                "followup",
                "noshow",
            ],
            "disable": ["noshow"],
            "plugin_dirs": [str(folder)],
            "followup": {"days_before": "three"},
        },
    )
    with caplog.at_level(logging.ERROR, logger="tmcaldav"):
        pm = get_plugin_manager(config)
    assert [p.name for p in pm.loaded] == ["good"]
    reasons = {f.name: f.reason for f in pm.failures}
    assert set(reasons) == {"broken", "typo", "wrongargs", "missing", "waitlist", "followup"}
    assert reasons["broken"] == "ImportError: needs the acme SDK"
    assert "implements on_declined, not a tmcaldav hook" in reasons["typo"]
    assert "seat" in reasons["wrongargs"]
    assert reasons["missing"].startswith("not found")
    assert "found twice" in reasons["waitlist"] and "rename one" in reasons["waitlist"]
    assert "days_before must be a whole number" in reasons["followup"]
    for name in reasons:
        assert f"plugin {name} failed to load" in caplog.text


def test_plugin_settings_errors_name_the_plugin(tmp_path: Path) -> None:
    config = config_for(
        f"sqlite:///{tmp_path / 's.db'}",
        plugins={
            "enable": ["waitlist", "webhook"],
            "waitlist": {"colour": "blue"},
            "webhook": {"urls": ["ftp://x"]},
        },
    )
    pm = get_plugin_manager(config)
    reasons = {f.name: f.reason for f in pm.failures}
    assert "unknown setting(s) colour" in reasons["waitlist"]
    assert "not an http(s) URL" in reasons["webhook"]
    assert "secret_file, secret_env" in reasons["webhook"]


def test_shipped_plugins_load_through_entry_points(tmp_path: Path) -> None:
    config = config_for(
        f"sqlite:///{tmp_path / 's.db'}",
        plugins={"enable": ["waitlist", "followup", "noshow", "reschedule"]},
    )
    pm = get_plugin_manager(config)
    assert pm.failures == []
    hooks = {p.name: p.hooks for p in pm.loaded}
    assert hooks == {
        "waitlist": ("on_accept", "on_decline"),
        "followup": ("on_no_response", "on_tentative"),
        "noshow": ("on_session_ended",),
        "reschedule": ("on_decline",),
    }
    assert all(p.source.startswith("entry point tmcaldav_plugins.") for p in pm.loaded)
    # Without entry points, only what a test registers.
    assert get_plugin_manager(config, load_entrypoints=False).loaded == []
    assert [f.name for f in get_plugin_manager(config, load_entrypoints=False).failures] == [
        "waitlist",
        "followup",
        "noshow",
        "reschedule",
    ]


def test_on_shutdown_is_called_once_per_plugin_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pm = get_plugin_manager()
    calm = Recorder()

    class Stubborn:
        from tmcaldav.hookspecs import hookimpl

        @hookimpl
        def on_shutdown(self) -> None:
            raise OSError("disk full")

    assert register_plugin(pm, calm, "calm")
    assert register_plugin(pm, Stubborn(), "stubborn")
    with caplog.at_level(logging.ERROR, logger="tmcaldav"):
        pm.close()
        pm.close()
    assert [c.hook for c in calm.calls] == ["on_shutdown"]
    assert "plugin stubborn failed in on_shutdown" in caplog.text


def test_hook_wrappers_are_refused() -> None:
    import pluggy

    impl = pluggy.HookimplMarker("tmcaldav")

    class Wrapper:
        @impl(wrapper=True)
        def on_decline(self, change):  # type: ignore[no-untyped-def]
            return (yield)

    pm = get_plugin_manager()
    assert not register_plugin(pm, Wrapper(), "wrapper")
    assert "wrappers are not supported" in pm.failures[0].reason
    assert pm.get_plugin("wrapper") is None


def test_plugins_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_entry_point(tmp_path / "site", monkeypatch)
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "local.py").write_text(LOCAL)
    logs = {name: {"log_file": tmp_path / f"{name}.log"} for name in ("acme", "local")}
    extra = plugins_section(folder, ["waitlist", "acme", "local", "nowhere"], logs)
    tm = Cli(write_config(tmp_path / "daemon.toml", f"sqlite:///{tmp_path / 's.db'}", extra))
    tm.ok("db", "upgrade")
    result = tm("plugins", "--json")
    assert result.exit_code == 1  # one plugin could not be loaded
    data = json.loads(result.stdout)
    assert [(p["name"], p["version"], p["hooks"]) for p in data["loaded"]] == [
        ("waitlist", "0.1.0", ["on_accept", "on_decline"]),
        ("acme", "1.2", ["on_decline", "on_response"]),
        ("local", None, ["on_decline"]),
    ]
    assert data["failed"] == [
        {
            "name": "nowhere",
            "reason": f"not found (looked in the 'tmcaldav' entry-point group, "
            f"{folder}/nowhere.py)",
        }
    ]
    assert "webhook" in data["available"]
    text = tm("plugins").stdout
    assert "acme" in text and "1.2" in text and "failed to load nowhere: not found" in text


def test_every_hook_is_known() -> None:
    assert hook_names() == [
        "on_response",
        "on_accept",
        "on_decline",
        "on_tentative",
        "on_no_response",
        "on_session_ended",
        "on_invitation_sent",
        "on_suggestion",
        "on_suggestion_withdrawn",
        "on_daily",
        "on_shutdown",
    ]
