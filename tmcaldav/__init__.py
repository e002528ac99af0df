"""tmcaldav: keeps a training organisation's enrollment records in step with its
students' calendars, over CalDAV and iTIP."""

__version__ = "0.1.0"
