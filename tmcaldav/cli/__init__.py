"""The `tmcaldav` command line: parse, call a service through the App, render a table,
`--json` or `--csv`.

`base` holds the group and what every command shares; each other module adds the
commands of one part of the administrator's work, and is imported when one of its
commands is asked for (`base.COMMAND_MODULES`): a read command loads only what it uses.
No service imports this package.
"""

from tmcaldav.cli.base import cli, main

__all__ = ["cli", "main"]
