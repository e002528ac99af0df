"""Plugin files for the tests that load plugins the way an administrator does: written
into a `plugin_dirs` folder (or installed), named in the `[plugins]` TOML, and run by
`tmcaldav sync` in a child process.

A recording plugin appends one JSON line per hook call to the file named by its
`log_file` setting; `logged_calls` reads those lines back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# The start of a plugin file: `Recording` appends each call to the file its `log_file`
# setting names, one JSON line, flushed to disk (a test may kill the process next).
RECORDING = '''
import json
import os
from pathlib import Path

from tmcaldav.hookspecs import hookimpl


class Recording:
    def __init__(self, settings):
        self.log = Path(settings["log_file"])

    def _record(self, hook, event_id):
        with open(self.log, "a") as f:
            f.write(json.dumps({"hook": hook, "event": event_id}) + "\\n")
            f.flush()
            os.fsync(f.fileno())
'''


def recording_plugin(*hooks: str) -> str:
    """The source of a plugin file whose hooks (these) only record their calls."""
    return (
        RECORDING
        + "\n\nclass Recorder(Recording):"
        + recording_hooks(*hooks)
        + "\n\ndef tmcaldav_plugin(settings):\n    return Recorder(settings)\n"
    )


def recording_hooks(*hooks: str) -> str:
    """The source of hookimpl methods, one per hook, that only record their call with
    the plugin class's own `self._record(hook, event_id)`; pasted into a class body."""
    return "".join(
        f"""
    @hookimpl
    def {hook}(self, change, context):
        self._record("{hook}", context.event_id)
"""
        for hook in hooks
    )


def plugins_section(
    folder: Path,
    enable: Sequence[str],
    settings: Mapping[str, Mapping[str, object]],
    extra: str = "",
) -> str:
    """The `[plugins]` TOML that enables `enable` (in that order) from `folder`, with the
    raw `extra` keys of [plugins] (e.g. "max_attempts = 3") and each plugin's settings."""
    lines = [
        "[plugins]",
        f"enable = {json.dumps(list(enable))}",
        f"plugin_dirs = {json.dumps([str(folder)])}",
        extra,
    ]
    for name, values in settings.items():
        lines += ["", f"[plugins.{name}]"]
        # JSON strings, numbers, booleans and lists of them are TOML as they stand.
        lines += [
            f"{key} = {json.dumps(str(value) if isinstance(value, Path) else value)}"
            for key, value in values.items()
        ]
    return "\n".join(lines) + "\n"


def run_sync(config: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`tmcaldav -c CONFIG sync` in a child process (a plugin may kill or stop it),
    with no TMCALDAV_CONFIG from the test's environment."""
    env = {k: v for k, v in os.environ.items() if k != "TMCALDAV_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "tmcaldav", "-c", str(config), "sync"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def logged_calls(log: Path) -> list[dict[str, str]]:
    """The calls a recording plugin wrote to `log`, in order (none if it never ran)."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
