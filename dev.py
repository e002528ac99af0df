#!/usr/bin/env python3
"""The project's two commands, each doing its own set-up on a fresh machine.

    python3 dev.py demo    # run the demo: the daemon on SQLite and a local Radicale
    python3 dev.py test    # run the whole test suite (ruff and mypy first)

Set-up: a virtual environment in .venv with tmcaldav and its test extras, rebuilt
when pyproject.toml changes; for the tests, PostgreSQL's server programs, Dovecot's
IMAP server, Cyrus CalDAV and Chromium with its WebDriver (installed from Debian's
packages when missing and running as root).
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


_APT_UPDATED = False


def apt_env() -> dict[str, str]:
    """apt-get without questions."""
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def apt_update() -> None:
    """`apt-get update`, once per run."""
    global _APT_UPDATED
    if not _APT_UPDATED:
        run(["apt-get", "update", "-q"], env=apt_env())
        _APT_UPDATED = True


def enabled_services() -> set[Path]:
    """The links that enable system services (what `systemctl enable` creates)."""
    root = Path("/etc/systemd/system")
    return set(root.glob("*.wants/*")) | set(root.glob("*.requires/*"))


def apt_install(package: str | list[str], what: str) -> bool:
    """Install Debian packages the tests need, as root; True when they are installed.

    It says first what it will install, and installs nothing when apt would remove any
    package to do it (the tests that need them then skip, saying why). Debian's packages
    start and enable a system-wide server (PostgreSQL on 5432, Dovecot on every address,
    Cyrus on 143/8008); the tests run their own on 127.0.0.1, so policy-rc.d keeps them
    from starting, and any service the install enabled is disabled again.
    """
    packages = [package] if isinstance(package, str) else package
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"note: {' '.join(packages)} is not installed and cannot be installed here; "
            f"the {what} tests will be skipped (apt-get install {' '.join(packages)})."
        )
        return False
    apt_update()
    installs, removals = apt_plan(packages, apt_env())
    if removals:
        print(
            f"note: not installing {' '.join(packages)}: apt would remove "
            f"{', '.join(removals)}; the {what} tests will be skipped."
        )
        return False
    print(
        f"dev.py installs Debian packages for the {what} tests: {' '.join(installs)} "
        "(apt removes none; no system service is left enabled)",
        flush=True,
    )
    before = enabled_services()
    policy = Path("/usr/sbin/policy-rc.d")
    added = not policy.exists()
    if added:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            env=apt_env(),
        )
    finally:
        if added:
            policy.unlink()
        for link in sorted(enabled_services() - before):
            link.unlink()
            print(f"dev.py disabled {link.name} again (the package enabled it)")
    return True


def cyrus_installed() -> bool:
    """Cyrus's httpd (cyrus-caldav) and saslpasswd2 (sasl2-bin) are both there."""
    return Path("/usr/lib/cyrus/bin/httpd").exists() and bool(
        shutil.which("saslpasswd2") or Path("/usr/sbin/saslpasswd2").exists()
    )


def apt_plan(packages: list[str], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """What `apt-get install` would install and remove, from a simulation (-s)."""
    plan = subprocess.run(
        ["apt-get", "install", "-s", "-q", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if plan.returncode != 0:
        return [], [f"(apt-get -s failed: {plan.stderr.strip() or plan.stdout.strip()})"]
    installs = [line.split()[1] for line in plan.stdout.splitlines() if line.startswith("Inst ")]
    removals = [line.split()[1] for line in plan.stdout.splitlines() if line.startswith("Remv ")]
    return installs, removals


def ensure_cyrus() -> None:
    """Cyrus CalDAV, the scheduling-server tests' RFC 6638 server.

    Not `cyrus-imapd` (it conflicts with dovecot-imapd): cyrus-common (master, lmtpd),
    cyrus-caldav (httpd) and sasl2-bin (saslpasswd2). cyrus-common needs a mail
    transport agent; msmtp-mta is one with no daemon, asked for only when apt would
    otherwise bring in its default (exim4, a daemon). Nothing is installed if apt would
    remove any package: the tests then skip, saying so. No Cyrus service is started
    (policy-rc.d) and none may be left running.
    """
    if cyrus_installed():
        return
    packages = ["cyrus-common", "cyrus-caldav", "sasl2-bin"]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            "note: Cyrus CalDAV is not installed and cannot be installed here; the "
            f"scheduling-server tests will skip it (apt-get install {' '.join(packages)})."
        )
        return
    apt_update()
    installs, removals = apt_plan(packages, apt_env())
    if not removals and any(name.startswith("exim4") for name in installs):
        _with_msmtp, msmtp_removals = apt_plan([*packages, "msmtp-mta"], apt_env())
        if not msmtp_removals:
            packages = [*packages, "msmtp-mta"]
    if not apt_install(packages, "scheduling-server (Cyrus)"):
        return
    # policy-rc.d kept Debian's cyrus-imapd service from starting; make sure.
    try:
        leftover = subprocess.run(
            ["pgrep", "-u", "cyrus", "-x", "master"], capture_output=True, text=True
        ).stdout.split()
    except FileNotFoundError:  # no procps
        leftover = []
    if leftover:
        print(f"warning: a Cyrus master runs (pid {', '.join(leftover)}); the tests use their own")


def ensure_postgres() -> None:
    """PostgreSQL's server programs, for the store tests."""
    if postgres_bin() is None:
        apt_install("postgresql", "PostgreSQL store")


def ensure_dovecot() -> None:
    """Dovecot's IMAP server, the iMIP tests' mailbox."""
    if not (shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists()):
        apt_install("dovecot-imapd", "IMAP")


def ensure_chromium() -> None:
    """Chromium and chromium-driver, the browser the web interface's tests drive."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    packages = ["chromium", "chromium-driver"]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        apt_install(packages, "browser")  # says why it cannot, and what to run
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env)
    installs, removals = apt_plan(packages, env)
    if removals:
        print(
            f"note: not installing Chromium: apt would remove {', '.join(removals)}; "
            "the browser tests will be skipped."
        )
        return
    print(f"Chromium for the browser tests: apt will install {' '.join(installs)}")
    apt_install(packages, "browser", update=False)


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
    ensure_cyrus()
    ensure_chromium()
    if not extra:
        # The whole suite starts with the static checks: lint and types.
        for check in (["ruff", "check", "."], ["mypy", "tmcaldav"]):
            print("+", " ".join(check), flush=True)
            if subprocess.run([str(PYTHON), "-m", *check], cwd=ROOT).returncode:
                return 1
    return subprocess.run([str(PYTHON), "-m", "pytest", *extra], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
