"""What a CLI call costs an administrator: wall time of whole `tmcaldav` commands.

On a store of 1,000 sessions × 30 students (SQLite), each command is run as a new
process, as a shell or script runs it, several times; the median is printed next to
the floor measured in the same rounds: a new interpreter importing SQLAlchemy and click
and running one query on the same store. Read commands should cost at most 1.5× that
floor (import only what a command needs).

    .venv/bin/python -m bench.cli [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tmcaldav
from bench.common import seed
from tmcaldav.app import open_store

FLOOR = (
    "import click, sqlalchemy\n"
    "from sqlalchemy import create_engine, text\n"
    "engine = create_engine({url!r})\n"
    "with engine.connect() as c:\n"
    "    print(c.execute(text('SELECT count(*) FROM training_sessions')).scalar())\n"
)


def run_once(argv: list[str]) -> float:
    """Wall time of one run of `argv` (seconds); it must succeed."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
    return seconds


def main() -> None:
    """Seed a store, time the commands and the floor, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    # An installed tmcaldav has its bytecode compiled (pip does it, as it did for
    # SQLAlchemy and click); without this, under PYTHONDONTWRITEBYTECODE, every command
    # would compile tmcaldav's modules anew and the floor would not.
    compileall.compile_dir(Path(tmcaldav.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="tmcaldav-bench-cli-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'store.db'}"
        store = open_store(url)
        store.upgrade()
        keys = seed(store, 1000, 30)
        store.close()
        config = folder / "daemon.toml"
        config.write_text(
            f'[store]\nurl = "{url}"\n\n[scheduling]\norganizer_email = "training@example.org"\n'
        )
        tm = [str(Path(sys.executable).with_name("tmcaldav")), "-c", str(config)]
        floor_argv = [sys.executable, "-c", FLOOR.format(url=url)]
        key = keys[500]
        commands = {
            "session list": [*tm, "session", "list"],
            "session list --json": [*tm, "session", "list", "--json"],
            "session show KEY": [*tm, "session", "show", key],
            "suggestions": [*tm, "suggestions"],
        }
        reads = set(commands)
        # Writes: each run enrolls a new person / adds a new note.
        for i in range(runs):
            subprocess.run(
                [*tm, "person", "add", f"new{i}@example.org", "--name", "N"],
                check=True,
                capture_output=True,
            )
        # Round by round, the floor next to every command: on a shared machine the load
        # drifts, and a floor timed before all the commands would not be their floor.
        times: dict[str, list[float]] = {"floor": [], **{name: [] for name in commands}}
        times |= {"enroll KEY EMAIL": [], "note KEY EMAIL TEXT": []}
        for i in range(runs):
            times["floor"].append(run_once(floor_argv))
            for name, argv in commands.items():
                times[name].append(run_once(argv))
            times["enroll KEY EMAIL"].append(
                run_once([*tm, "enroll", keys[i], f"new{i}@example.org", "--waitlist"])
            )
            times["note KEY EMAIL TEXT"].append(
                run_once([*tm, "note", key, "s00001@example.org", f"phoned ({i + 1})"])
            )
        floor = statistics.median(times.pop("floor"))
        results = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"store: 1,000 sessions × 30 students (SQLite); median of {runs} runs")
    print(f"{'command':<24} {'wall':>8} {'× floor':>8}")
    print(f"{'floor (python + sqlalchemy + click + 1 query)':<24} {floor * 1000:>6.0f} ms")
    for name, seconds in results.items():
        kind = "read" if name in reads else "write"
        print(f"{name:<24} {seconds * 1000:>6.0f} ms {seconds / floor:>7.2f}  ({kind})")


if __name__ == "__main__":
    main()
