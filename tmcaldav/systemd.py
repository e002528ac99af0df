"""systemd's notify protocol (sd_notify): readiness, status, reload, stop and watchdog.

A few lines we own rather than a dependency. Outside systemd (no NOTIFY_SOCKET) every
call is a no-op, so the daemon calls it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to the socket systemd named in NOTIFY_SOCKET."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: the name starts with a NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec: int | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when running under systemd with Type=notify."""
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping the watchdog (half its timeout), or None without one."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def notify(self, *lines: str) -> None:
        """Send one datagram of `KEY=value` lines; errors are logged, never raised."""
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as e:
            log.debug("sd_notify to %r failed: %s", self.address, e)

    def ready(self, status: str | None = None) -> None:
        """READY=1 (with a status line)."""
        self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> None:
        """STATUS=: one line shown by `systemctl status`."""
        self.notify(f"STATUS={_one_line(text)}")

    def reloading(self) -> None:
        """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload expects."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """STOPPING=1."""
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """WATCHDOG=1, when systemd asked for a watchdog."""
        if self.watchdog_usec:
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
