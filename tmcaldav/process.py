"""A server in a child process: the one launcher behind Radicale, Dovecot, Cyrus and Xandikos.

What every such server needs, said once: start the program with its output going to a
log file (a pipe that nobody drains while tests run would fill and block the server
mid-request), wait by deadline until a readiness check passes while noticing that the
process died instead, stop it by process id (SIGTERM, then SIGKILL if it lingers) and
read its log for failure messages. What differs per server (its config, its readiness
check, its ports) stays with the server. Nothing here imports pytest: the demo runs
Radicale through it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# A port we picked ourselves can be taken by someone else between our probe and the
# server's bind (parallel test workers do exactly that): try a fresh one.
PORT_ATTEMPTS = 5


class ServerProcess:
    """One child process whose output goes to `log_path`; `what` names it in messages."""

    def __init__(self, what: str, log_path: Path) -> None:
        """Prepare (not start) the process."""
        self.what = what
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """Process id while started (None once stopped)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def spawn(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        **popen_options: Any,
    ) -> None:
        """Start `args` in `cwd` (stdin closed, stdout and stderr appended to the log)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        # What this start writes is what explains its failure, not an earlier start's.
        self._log_offset = self.log_path.stat().st_size
        try:
            self._process = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                **popen_options,
            )
        except BaseException:
            self._close_log()
            raise

    def wait_until_ready(
        self, ready: Callable[[], bool], timeout: float = READY_TIMEOUT, step: float = 0.05
    ) -> str:
        """Poll `ready` until it is true and return "", or return why not: the process
        exited, or the deadline passed (with what the process wrote since it started)."""
        assert self._process is not None, "spawn the process first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return (
                    f"{self.what} exited with status {self._process.returncode}\n"
                    f"{self.log_text()[self._log_offset :]}"
                )
            if ready():
                return ""
            time.sleep(step)
        return f"{self.what} not ready after {timeout:g} s\n{self.log_text()[self._log_offset :]}"

    def stop(self, timeout: float = STOP_TIMEOUT, how: signal.Signals = signal.SIGTERM) -> None:
        """Signal the process (`how`: SIGTERM), wait for it, SIGKILL it if it lingers;
        close the log."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.send_signal(how)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        """What the process wrote to its log so far (for failure messages)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def looks_like_port_clash(failure: str) -> bool:
    """Does a start's failure say that someone else took the port?"""
    lowered = failure.lower()
    return "address already in use" in lowered or "no servers started" in lowered


def start_with_retries(
    start_once: Callable[[], str],
    clean_up: Callable[[], None],
    *,
    attempts: int = PORT_ATTEMPTS,
    retry_if: Callable[[str], bool] = looks_like_port_clash,
) -> str:
    """Call `start_once` (pick a port, spawn, wait until ready) until it returns "";
    after a failure `clean_up` and try again while `retry_if(failure)` holds.

    Returns "" once started, else the last failure (the caller raises with it).
    """
    failure = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.2)
        try:
            failure = start_once()
        except BaseException:
            # A readiness check that raised (or Ctrl-C) must not leave the child running.
            clean_up()
            raise
        if not failure:
            return ""
        clean_up()
        if not retry_if(failure):
            break
    return failure
