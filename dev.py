#!/usr/bin/env python3
"""The project's two commands, each doing its own set-up on a fresh machine.

    python3 dev.py demo    # run the demo: the daemon on SQLite and a local Radicale
    python3 dev.py test    # run the whole test suite

Set-up: a virtual environment in .venv with tmcaldav and its test extras, rebuilt
when pyproject.toml changes; for the tests, PostgreSQL's server programs and Dovecot's
IMAP server (installed from Debian's packages when missing and running as root).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".tmcaldav-installed"


def run(argv: list[str], **kwargs: object) -> None:
    """Run a command (an argv list, never a shell string); stop on failure."""
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def ensure_venv() -> None:
    """Create .venv and install the project with its test extras, once per pyproject."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PYTHON.exists():
        return
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"])
    STAMP.write_text(digest)


def postgres_bin() -> Path | None:
    """The folder holding PostgreSQL's initdb, if it is installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def apt_install(package: str, what: str) -> None:
    """Install a Debian package the tests need, as root, without starting its service.

    Debian's packages start a system-wide server (PostgreSQL on 5432, Dovecot on every
    address); the tests run their own on 127.0.0.1, so policy-rc.d says no.
    """
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"note: {package} is not installed and cannot be installed here; "
            f"the {what} tests will be skipped (apt-get install {package})."
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    added = not policy.exists()
    if added:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(["apt-get", "update", "-q"], env=env)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env)
    finally:
        if added:
            policy.unlink()


def ensure_postgres() -> None:
    """PostgreSQL's server programs, for the store tests."""
    if postgres_bin() is None:
        apt_install("postgresql", "PostgreSQL store")


def ensure_dovecot() -> None:
    """Dovecot's IMAP server, the iMIP tests' mailbox."""
    if not (shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists()):
        apt_install("dovecot-imapd", "IMAP")


def main() -> int:
    """Dispatch `demo` or `test`."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    ensure_venv()
    if command == "demo":
        return subprocess.run([str(VENV / "bin" / "tmcaldav"), "demo", *extra]).returncode
    ensure_postgres()
    ensure_dovecot()
    return subprocess.run([str(PYTHON), "-m", "pytest", *extra], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
