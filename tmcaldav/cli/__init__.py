"""The `tmcaldav` command line: parse, call a service through the App, render a table,
`--json` or `--csv`.

`base` holds the group and what every command shares; each other module adds the
commands of one part of the administrator's work. No service imports this package.
"""

from tmcaldav.cli import (  # noqa: F401 - they add the commands
    admin,
    advice,
    calendar,
    roster,
    verbs,
)
from tmcaldav.cli.base import cli, main

__all__ = ["cli", "main"]
