"""The CLI imports a command's module only when that command is asked for
(`tmcaldav.cli.base.COMMAND_MODULES`), and loses no command doing so."""

from __future__ import annotations

import subprocess
import sys

from tmcaldav.cli import cli
from tmcaldav.cli.base import COMMAND_MODULES, load_commands


def test_every_command_is_listed_with_the_module_that_adds_it() -> None:
    load_commands()
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, modules in COMMAND_MODULES.items():
        callback = cli.commands[name].callback
        assert callback is not None
        assert callback.__module__ == f"tmcaldav.cli.{modules[0]}", name


def test_a_read_command_loads_only_its_own_modules() -> None:
    # A fresh interpreter: resolving `session list` imports roster and verbs (both add
    # `session` subcommands), not what `run`, `web`, `plugins` or `invite` need.
    code = (
        "import sys, click\n"
        "from tmcaldav.cli import cli\n"
        "ctx = click.Context(cli)\n"
        "session = cli.get_command(ctx, 'session')\n"
        "assert session is not None and 'list' in session.commands\n"
        "print(' '.join(m for m in sys.modules if m.startswith('tmcaldav.cli.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "tmcaldav.cli.roster" in out and "tmcaldav.cli.verbs" in out
    for other in ("admin", "advice", "calendar", "web"):
        assert f"tmcaldav.cli.{other}" not in out
