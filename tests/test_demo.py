"""The README's main job: `tmcaldav demo`, run in its quick mode, end to end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tmcaldav.localhost import wait_for

TMCALDAV = str(Path(sys.executable).with_name("tmcaldav"))


def test_demo_runs_end_to_end_from_a_folder_that_shadows_the_package(tmp_path: Path) -> None:
    # A clone named `tmcaldav` in the current directory must not shadow the installed
    # package in the demo's child processes.
    (tmp_path / "tmcaldav").mkdir()
    (tmp_path / "tmcaldav" / "__init__.py").write_text("raise ImportError('shadowed')\n")
    done = subprocess.run(
        [TMCALDAV, "demo", "--pace", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # The answers reached the session page through the real daemon.
    assert "✓ accepted" in out and "? tentative" in out
    # The waitlist moved: Bob declined, his seat went to Eve, first on the waitlist.
    assert "invite_waitlisted eve@example.org in EXC-2" in out
    assert "bob@example.org cancelled in EXC-2" in out
    assert "eve@example.org enrolled in EXC-2 (was waitlisted)" in out
    # Each session's suggestions are printed with that session.
    advice = out[out.index("The daemon's advice for EXC-1") :]
    assert "EXC-2" not in advice.split("$ tmcaldav report no-shows")[0]
    # The no-show report names the student who accepted and did not come.
    report = out[out.rindex("$ tmcaldav report no-shows") :]
    assert "bob@example.org" in report and "Bob Müller" in report
    assert "Done. The files were in" in out
    # The web interface ran beside the daemon, with a login to try.
    assert "The web interface: http://127.0.0.1:" in out and "log in as demo, password" in out


def _children_of(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _demo_half_way(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """A paced demo started in `tmp_path`, read until half-way: the daemon runs and
    students are answering. Returns the process and what it printed so far."""
    demo = subprocess.Popen(
        [TMCALDAV, "demo", "--pace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert demo.stdout is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "students answer" not in seen and time.monotonic() < deadline:
        seen += demo.stdout.readline()
    assert "students answer" in seen, seen
    return demo, seen


def test_a_demo_killed_half_way_leaves_no_process_behind(tmp_path: Path) -> None:
    demo, seen = _demo_half_way(tmp_path)
    children = _children_of(demo.pid)
    assert len(children) >= 2, children  # Radicale and the daemon
    folder = seen.split("files in ", 1)[1].split()[0]
    demo.send_signal(signal.SIGKILL)
    demo.wait()
    wait_for(lambda: not any(_alive(c) for c in children), timeout=30, what="the servers to stop")
    shutil.rmtree(folder, ignore_errors=True)  # kill -9 leaves the files; the servers go


def test_a_demo_stopped_half_way_cleans_up(tmp_path: Path) -> None:
    demo, seen = _demo_half_way(tmp_path)
    children = _children_of(demo.pid)
    folder = Path(seen.split("files in ", 1)[1].split()[0])
    demo.send_signal(signal.SIGTERM)
    out, _ = demo.communicate(timeout=60)
    assert "servers are stopped" in out
    assert not folder.exists()
    assert not any(_alive(c) for c in children)
