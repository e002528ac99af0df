"""Plugins shipped with tmcaldav, registered through the `tmcaldav` entry-point group
like any third-party plugin."""
