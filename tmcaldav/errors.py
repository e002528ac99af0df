"""One root for every error an administrator can meet, carrying its exit code.

The CLI prints `str(error)` — a message that says what is wrong and what to do — and
exits with `error.exit_code`; the daemon logs the same message. Exit codes follow
DESIGN §5: 1 a failed operation, 2 bad usage, bad config or a store that cannot be
opened, 3 a daemon fenced off its store (another daemon took over while it was paused),
75 (EX_TEMPFAIL) try again later.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# A daemon that lost the store lock (a standby took over while it was paused) and stopped
# without writing; systemd restarts it, as a standby when so configured.
EXIT_FENCED = 3
EXIT_TEMPFAIL = 75


class TmcaldavError(Exception):
    """An error with a message for the administrator and the exit code it means."""

    exit_code: int = EXIT_FAILED

    def report(self) -> str:
        """The message to print (several lines for a config with several problems)."""
        return str(self)


class UsageError(TmcaldavError):
    """Bad usage or bad input from the command line."""

    exit_code = EXIT_USAGE


class TryLater(TmcaldavError):
    """Nothing was done, and the same request may succeed later."""

    exit_code = EXIT_TEMPFAIL


class Refused(TmcaldavError):
    """A guard refused a change (a suggestion whose premise broke); nothing is recorded."""
