"""Servers on 127.0.0.1 for the demo and the tests: a free port, and waiting for a condition.

Runtime code (the demo) and the test harnesses share these; nothing here imports pytest.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TypeVar

HOST = "127.0.0.1"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (a server may still race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], T | None], timeout: float = 20.0, what: str = "", step: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    TimeoutError naming `what` when the deadline passes first: a test that waits for
    something to happen fails when it does not, instead of sleeping and hoping.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(step)


def die_with_parent() -> None:
    """In a child process (`preexec_fn`): ask Linux to SIGTERM it when its parent dies,
    so a demo killed with -9 leaves no server behind. Elsewhere it does nothing."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
