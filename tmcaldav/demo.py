"""`tmcaldav demo`: a tour of tmcaldav on an embedded SQLite store, in a temp folder.

It drives the real CLI (the same commands an administrator types) and prints what
each shows, so a newcomer sees the product work before reading any docs.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from click.testing import CliRunner

STUDENTS = [
    ("ann@example.org", "Ann Lee"),
    ("bob@example.org", "Bob Müller"),
    ("cy@example.org", "Cy O'Neil"),
    ("dee@example.org", "Dee, Jr."),
    ("eve@example.org", "Eve Ng"),
    ("fay@example.org", "Fay Okafor"),
]


def write_demo_config(folder: Path, extra: str = "") -> Path:
    """A config for the demo's SQLite store in `folder`."""
    config = folder / "daemon.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{folder / "tmcaldav.db"}"\n\n'
        '[scheduling]\norganizer_email = "training@example.org"\n'
        'organizer_name = "Training Office"\ntimezone = "Europe/Berlin"\n' + extra
    )
    return config


def run_tour(folder: Path, echo: Callable[[str], None] = click.echo) -> None:
    """Seed two sessions of one course and show the pages, through the real CLI."""
    from tmcaldav.cli import cli

    config = write_demo_config(folder)
    runner = CliRunner()

    def tm(*args: str) -> str:
        echo(click.style(f"$ tmcaldav {shlex.join(args)}", bold=True))
        result = runner.invoke(cli, ["-c", str(config), *args])
        if result.exit_code != 0:
            raise click.ClickException(f"demo step failed: {result.output}")
        echo(result.output.rstrip())
        return result.output

    tm("db", "upgrade")
    for email, name in STUDENTS:
        tm("person", "add", email, "--name", name)
    start = (datetime.now(UTC) + timedelta(days=7)).replace(hour=8, minute=0, second=0)
    for i, key in enumerate(("EXC-1", "EXC-2")):
        day = start + timedelta(days=7 * i)
        tm(
            "session",
            "add",
            key,
            "--title",
            f"Excel basics, part {i + 1}",
            "--start",
            day.isoformat(timespec="minutes"),
            "--end",
            (day + timedelta(hours=3)).isoformat(timespec="minutes"),
            "--capacity",
            "4",
            "--course",
            "EXC",
            "--location",
            "Room 2.14",
        )
    tm("enroll", "EXC-1", *[e for e, _ in STUDENTS[:4]])
    tm("enroll", "EXC-1", *[e for e, _ in STUDENTS[4:]], "--waitlist")
    tm("note", "EXC-1", "cy@example.org", "asked for a parking permit")
    tm("session", "show", "EXC-1")
    tm("session", "list")


def main(keep: bool) -> None:
    """Run the demo in a temp folder; keep it when asked."""
    folder = Path(tempfile.mkdtemp(prefix="tmcaldav-demo-"))
    try:
        run_tour(folder)
    finally:
        if keep:
            click.echo(
                f"\nThe demo's files are in {folder}; try:\n"
                f"  tmcaldav -c {folder / 'daemon.toml'} session show EXC-1"
            )
        else:
            shutil.rmtree(folder, ignore_errors=True)
