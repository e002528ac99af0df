"""The plugin manager: discovery, loading with settings, and hooks called one by one.

`get_plugin_manager(config)` builds a manager (nothing happens at import time). It
finds plugins in the `tmcaldav` entry-point group (the shipped ones are registered
there too) and in the `[plugins] plugin_dirs` folders (one `NAME.py` per plugin), and
loads those named in `[plugins] enable` and not in `disable`. A plugin that fails to
load is reported by name with the reason; the others load.

What a plugin is: the entry point (or the file) gives a module or a callable. A
callable (a class, a factory function) is called with the plugin's settings, the
`[plugins.NAME]` table as a read-only mapping, and what it returns is registered. A
module that defines `tmcaldav_plugin(settings)` is treated the same way; any other
module is registered as it is. A plugin that rejects its settings raises ValueError:
it is reported as failing to load, with that message.

`call_each` calls a hook's implementations one at a time through pluggy's public
`get_hookimpls()`, so an exception in one plugin is logged with its name and the event
and never stops the others.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from tmcaldav.config import Config, PluginsConfig
from tmcaldav.hooks import spec as hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tmcaldav"
# Module names of plugins loaded from files, kept apart from importable packages.
LOCAL_PACKAGE = "tmcaldav_local_plugins"
# `days_before` in a plugin's settings: when its on_no_response fires.
DEFAULT_DAYS_BEFORE = 3
# `daily_hour` in a plugin's settings: the local hour its on_daily fires.
DEFAULT_DAILY_HOUR = 7


def hook_names() -> list[str]:
    """Every hook of the contract, in the order hookspecs.py declares them."""
    return [
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
    ]


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin, for `tmcaldav plugins`."""

    name: str
    version: str | None
    # "entry point tmcaldav_plugins.waitlist:WaitlistPlugin" or "file /path/x.py"
    source: str
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that was asked for and could not be loaded, with the reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A plugin that could be loaded: where it comes from and how to load it."""

    name: str
    source: str
    version: str | None
    load: Callable[[], Any]


class TmcaldavPluginManager(pluggy.PluginManager):
    """A pluggy manager with tmcaldav's hooks and what loading found."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.loaded: list[PluginInfo] = []
        self.failures: list[LoadFailure] = []
        # Plugins found but not enabled (for `tmcaldav plugins`).
        self.available: list[str] = []
        # Plugin name -> days before a session's start its on_no_response fires.
        self.days_before: dict[str, int] = {}
        # Plugin name -> the local hour ([scheduling] timezone) its on_daily fires.
        self.daily_hour: dict[str, int] = {}
        self._closed = False

    def hook_callers(self, plugin_name: str) -> list[str]:
        """The hooks a registered plugin implements."""
        plugin = self.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(h.name for h in self.get_hookcallers(plugin) or [])

    def close(self) -> None:
        """Call on_shutdown once on every plugin (each on its own)."""
        if self._closed:
            return
        self._closed = True
        call_each(self, "on_shutdown", {}, event_id="shutdown")


def get_plugin_manager(
    config: Config | None = None, *, load_entrypoints: bool = True
) -> TmcaldavPluginManager:
    """A plugin manager with the plugins `config` enables.

    Without a config, or with `load_entrypoints=False`, entry points are not looked at:
    tests register exactly the plugins they want with `register_plugin`.
    """
    if config is None:
        return TmcaldavPluginManager()
    return manager_for(config.plugins, load_entrypoints=load_entrypoints)


def manager_for(plugins: PluginsConfig, *, load_entrypoints: bool = True) -> TmcaldavPluginManager:
    """A plugin manager with the plugins of a `[plugins]` section (`check-config` builds
    one from a section before the whole config is valid)."""
    pm = TmcaldavPluginManager()
    candidates: dict[str, list[Candidate]] = {}
    found = list(_file_candidates(plugins.plugin_dirs))
    if load_entrypoints:
        found += list(_entry_point_candidates())
    for candidate in found:
        candidates.setdefault(candidate.name, []).append(candidate)
    wanted = [n for n in dict.fromkeys(plugins.enable) if n not in set(plugins.disable)]
    pm.available = sorted(n for n in candidates if n not in wanted)
    for name in wanted:
        options = candidates.get(name, [])
        if not options:
            where = ["the 'tmcaldav' entry-point group"] if load_entrypoints else []
            where += [f"{d}/{name}.py" for d in plugins.plugin_dirs]
            _fail(pm, name, f"not found (looked in {', '.join(where) or 'nowhere'})")
            continue
        if len(options) > 1:
            _fail(
                pm,
                name,
                "found twice (" + "; ".join(c.source for c in options) + "); rename one",
            )
            continue
        settings = plugins.settings.get(name, {})
        _load(pm, options[0], settings if isinstance(settings, Mapping) else {})
    return pm


def register_plugin(
    pm: TmcaldavPluginManager,
    plugin: Any,
    name: str,
    *,
    settings: Mapping[str, Any] | None = None,
    source: str = "registered",
    version: str | None = None,
) -> bool:
    """Register one plugin object (or build it from a callable with `settings`).

    Returns False (and records the failure) when it cannot be used.
    """
    return _load(pm, Candidate(name, source, version, lambda: plugin), settings or {})


def _fail(pm: TmcaldavPluginManager, name: str, reason: str) -> None:
    log.error("plugin %s failed to load: %s", name, reason)
    pm.failures.append(LoadFailure(name, reason))


def _load(pm: TmcaldavPluginManager, candidate: Candidate, settings: Mapping[str, Any]) -> bool:
    name = candidate.name
    frozen = types.MappingProxyType(dict(settings))
    try:
        days_before = _days_before(frozen)
        daily_hour = _daily_hour(frozen)
        loaded = candidate.load()
        plugin = _instantiate(loaded, frozen, name)
    except Exception as e:  # a broken plugin must not stop the others
        _fail(pm, name, f"{type(e).__name__}: {e}")
        log.debug("plugin %s failed to load", name, exc_info=True)
        return False
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as e:
        _fail(pm, name, str(e))
        return False
    unknown = [h.name for h in pm.get_hookcallers(plugin) or [] if not h.has_spec()]
    if unknown:
        pm.unregister(plugin)
        _fail(
            pm,
            name,
            f"implements {', '.join(sorted(unknown))}, not a tmcaldav hook "
            f"(hooks: {', '.join(hook_names())})",
        )
        return False
    wrappers = [
        impl.plugin_name
        for hook in hook_names()
        for impl in getattr(pm.hook, hook).get_hookimpls()
        if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper)
    ]
    if wrappers:
        pm.unregister(plugin)
        _fail(pm, name, "hook wrappers are not supported; implement plain hooks")
        return False
    version = candidate.version or getattr(plugin, "__version__", None)
    pm.days_before[name] = days_before
    pm.daily_hour[name] = daily_hour
    pm.loaded.append(PluginInfo(name, version, candidate.source, tuple(pm.hook_callers(name))))
    log.debug("plugin %s loaded from %s", name, candidate.source)
    return True


def _days_before(settings: Mapping[str, Any]) -> int:
    value = settings.get("days_before", DEFAULT_DAYS_BEFORE)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"days_before must be a whole number of days, 0 or more (got {value!r})")
    return value


def _daily_hour(settings: Mapping[str, Any]) -> int:
    value = settings.get("daily_hour", DEFAULT_DAILY_HOUR)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
        raise ValueError(f"daily_hour must be a whole hour from 0 to 23 (got {value!r})")
    return value


def _instantiate(loaded: Any, settings: Mapping[str, Any], name: str) -> Any:
    if isinstance(loaded, types.ModuleType):
        factory = getattr(loaded, "tmcaldav_plugin", None)
        if factory is None:
            if set(settings) - {"days_before", "daily_hour"}:
                log.warning(
                    "plugin %s takes no settings; [plugins.%s] is ignored except days_before",
                    name,
                    name,
                )
            return loaded
        return factory(settings)
    if callable(loaded):
        return loaded(settings)
    return loaded


def _entry_point_candidates() -> Iterable[Candidate]:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        version = ep.dist.version if ep.dist is not None else None
        yield Candidate(ep.name, f"entry point {ep.value}", version, ep.load)


def _file_candidates(folders: Iterable[str]) -> Iterable[Candidate]:
    for folder in folders:
        base = Path(folder)
        if not base.is_dir():
            log.error("plugins.plugin_dirs: no such folder %s", base)
            continue
        for path in sorted(base.glob("*.py")):
            if path.name.startswith("_"):
                continue
            yield Candidate(
                path.stem,
                f"file {path}",
                None,
                lambda path=path: _import_file(path),  # type: ignore[misc]
            )


def _import_file(path: Path) -> types.ModuleType:
    """Import a plugin file with a real module spec (so it can use __spec__ and pickling)."""
    module_name = f"{LOCAL_PACKAGE}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    if LOCAL_PACKAGE not in sys.modules:
        package = types.ModuleType(LOCAL_PACKAGE)
        package.__path__ = []
        sys.modules[LOCAL_PACKAGE] = package
    # A fresh module each time: two managers in one process do not share its state.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


# ---- calling hooks one implementation at a time ---------------------------------------------


@dataclass
class CallOutcome:
    """What one hook call returned: (plugin, value) per implementation, and failures."""

    results: list[tuple[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def call_each(
    pm: pluggy.PluginManager,
    hook: str,
    kwargs: Mapping[str, Any],
    *,
    event_id: str,
    only: str | None = None,
) -> CallOutcome:
    """Call every implementation of `hook` on its own; log and skip one that raises.

    `only` restricts the call to one plugin (time hooks fire per plugin). The order is
    pluggy's (tryfirst / trylast honoured, later registered first).
    """
    outcome = CallOutcome()
    caller = getattr(pm.hook, hook)
    for impl in reversed(caller.get_hookimpls()):
        if only is not None and impl.plugin_name != only:
            continue
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            value = impl.function(*(kwargs[arg] for arg in impl.argnames))
        except Exception:
            log.exception(
                "plugin %s failed in %s for event %s; the other plugins go on",
                impl.plugin_name,
                hook,
                event_id,
            )
            outcome.failed.append(impl.plugin_name)
            continue
        outcome.results.append((impl.plugin_name, value))
    return outcome
