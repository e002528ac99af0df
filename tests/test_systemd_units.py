"""The shipped systemd units: valid for systemd, and hardened as the README says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "contrib" / "systemd"


def test_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; it verifies the unit files")
    for unit in UNITS.iterdir():
        # ExecStart must name an existing program for verify; the path is the admin's.
        text = unit.read_text().replace("/opt/tmcaldav/bin/tmcaldav", "/bin/true")
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_service_is_notify_hardened_and_restarts() -> None:
    text = (UNITS / "tmcaldav.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=tmcaldav",
        "ConfigurationDirectory=tmcaldav",
        "LoadCredential=caldav.pw:",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=2 75",
    ):
        assert line in text, line
    timer = (UNITS / "tmcaldav-once.timer").read_text()
    assert "OnUnitInactiveSec=" in timer
    assert "run --once" in (UNITS / "tmcaldav-once.service").read_text()


def test_web_service_is_notify_and_hardened_like_the_daemon() -> None:
    web = (UNITS / "tmcaldav-web.service").read_text()
    daemon = (UNITS / "tmcaldav.service").read_text()
    assert "Type=notify" in web and " web\n" in web
    assert "RestartPreventExitStatus=2" in web and "StateDirectory=tmcaldav" in web
    hardening = [
        line
        for line in daemon.splitlines()
        if line.startswith(("Protect", "Private", "Restrict", "NoNewPrivileges", "Lock",
                            "MemoryDeny", "SystemCall", "CapabilityBoundingSet", "UMask"))
    ]
    assert len(hardening) > 15
    for line in hardening:
        assert line in web.splitlines(), line
