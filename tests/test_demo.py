"""The README's main job: `tmcaldav demo`, run in its quick mode, end to end."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tmcaldav", "demo", "--pace", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # The answers reached the session page through the real daemon.
    assert "✓ accepted" in out and "? tentative" in out
    # The waitlist moved: Bob declined, his seat went to Eve, first on the waitlist.
    assert "invite_waitlisted eve@example.org in EXC-2" in out
    assert "bob@example.org cancelled in EXC-2" in out
    assert "eve@example.org enrolled in EXC-2 (was waitlisted)" in out
    # The no-show report names the student who accepted and did not come.
    report = out[out.rindex("$ tmcaldav report no-shows") :]
    assert "bob@example.org" in report and "Bob Müller" in report
    assert "Done. The files were in" in out
    # The web interface ran beside the daemon, with a login to try.
    assert "The web interface: http://127.0.0.1:" in out and "log in as demo, password" in out
