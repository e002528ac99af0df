"""`tmcaldav demo`: the daemon at work on an embedded Radicale and a SQLite store.

It starts Radicale on 127.0.0.1 in a temp folder, seeds two sessions of one course,
invites the students, starts the real daemon (`tmcaldav run`) with a short interval,
and then plays the students' answers through a second CalDAV login, the way a
scheduling server writes them: accept, decline, tentative, a changed mind, silence.
As the daemon records each answer, the demo prints the session page and the new
suggestions, applies the waitlist's suggestions to show the seat moving, and ends
with the no-show report. Everything it does goes through the real CLI.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import click

from tmcaldav.app import App
from tmcaldav.localhost import die_with_parent

STUDENTS = [
    ("ann@example.org", "Ann Lee"),
    ("bob@example.org", "Bob Müller"),
    ("cy@example.org", "Cy O'Neil"),
    ("dee@example.org", "Dee Okafor"),
    ("eve@example.org", "Eve Ng"),
    ("fay@example.org", "Fay Hart"),
]
ENROLLED, WAITLISTED = STUDENTS[:4], STUDENTS[4:]
COURSE = "EXC"
NEXT, PAST = "EXC-2", "EXC-1"


class Demo:
    """One run of the demo in `folder`; `pace` scales every pause (1.0 ≈ a minute)."""

    def __init__(self, folder: Path, pace: float, echo: Callable[[str], None] = click.echo):
        self.folder = folder
        self.pace = pace
        self.echo = echo
        self.config = folder / "daemon.toml"
        self.server: Any = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self._app: App | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.seen_suggestions: set[int] = set()

    @property
    def app(self) -> App:
        """The demo's own view of the store (for the event's href)."""
        if self._app is None:
            self._app = App(str(self.config))
        return self._app

    # ---- the pieces -----------------------------------------------------------------

    def tm(self, *args: str, quiet: bool = False) -> str:
        """Run the real CLI (the `tmcaldav` command, in this process: a step costs
        milliseconds, not an interpreter start), show the command and its output."""
        from tmcaldav.cli import cli

        if not quiet:
            self.echo(click.style(f"$ tmcaldav {shlex.join(args)}", bold=True))
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(
                    ["-c", str(self.config), *args], prog_name="tmcaldav", standalone_mode=False
                )
            except click.exceptions.Exit as e:
                code = e.exit_code
            except click.ClickException as e:
                e.show()
                code = e.exit_code
        if code != 0:
            raise click.ClickException(
                f"demo step `tmcaldav {shlex.join(args)}` failed:\n"
                f"{out.getvalue()}{err.getvalue()}"
            )
        if not quiet:
            self.echo(out.getvalue().rstrip())
        return out.getvalue()

    def pause(self, seconds: float) -> None:
        """Wait (scaled by the pace), showing that time passes."""
        left = seconds * self.pace
        if left > 1:
            self.echo(click.style(f"  … {left:.0f} s pass", dim=True))
        time.sleep(left)

    def poll_now(self) -> None:
        """Ask the daemon to poll at once (SIGUSR1, as `systemctl kill -s USR1` does)."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGUSR1)

    def start_server(self) -> None:
        """Radicale on 127.0.0.1, a free port, storage in the demo folder."""
        try:
            from tmcaldav.radicale import start_radicale
        except ImportError as e:
            raise click.ClickException(
                f"the demo needs Radicale ({e}); install it: pip install 'tmcaldav[demo]'"
            ) from e
        self.server = start_radicale(self.folder / "radicale", die_with_parent=True)
        pw = self.folder / "caldav.pw"
        pw.write_text(self.server.users[self.server.organizer])
        pw.chmod(0o600)
        interval = 5 if self.pace else 1  # each answer is also polled at once (SIGUSR1)
        self.config.write_text(
            f'[store]\nurl = "sqlite:///{self.folder / "tmcaldav.db"}"\n\n'
            f'[caldav]\nurl = "{self.server.url}"\nusername = "{self.server.organizer}"\n'
            f'password_file = "{pw}"\ncalendar = "trainings"\n\n'
            '[scheduling]\nmode = "server"\norganizer_email = "training@example.org"\n'
            'organizer_name = "Training Office"\ntimezone = "Europe/Berlin"\n\n'
            f"[daemon]\npoll_interval = {interval}\nbackoff_max = {max(interval, 5)}\n\n"
            '[plugins]\nenable = ["waitlist", "followup", "noshow", "reschedule"]\n\n'
            "[plugins.followup]\ndays_before = 3\n"
        )

    def start_daemon(self) -> None:
        """The real daemon, as systemd would run it, logging to a file."""
        log = (self.folder / "daemon.log").open("ab")
        self.daemon = subprocess.Popen(
            # -P and the demo folder as working directory: a folder named `tmcaldav`
            # where the demo was started never shadows the installed package.
            [sys.executable, "-P", "-m", "tmcaldav", "-c", str(self.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=self.folder,
            preexec_fn=die_with_parent,
        )
        # Ready once its signal handlers are in place (a SIGUSR1 before would kill it).
        started = time.monotonic()
        while "daemon started" not in self.daemon_log():
            if self.daemon.poll() is not None or time.monotonic() > started + 60:
                raise click.ClickException(f"the daemon did not start:\n{self.daemon_log()}")
            time.sleep(0.05)

    def daemon_log(self) -> str:
        """What the daemon has logged so far."""
        path = self.folder / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_daemon(self) -> None:
        """SIGTERM, as `systemctl stop` sends (SIGKILL if it does not stop)."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()

    def start_web(self) -> None:
        """The web interface on a free port, with an admin login printed for the reader."""
        import secrets
        import urllib.request

        from tmcaldav.localhost import HOST, free_port, wait_for

        password = secrets.token_urlsafe(9)
        done = subprocess.run(
            [sys.executable, "-P", "-m", "tmcaldav", "-c", str(self.config), "user", "add",
             "demo", "--role", "admin"],
            input=password + "\n", capture_output=True, text=True, timeout=60, cwd=self.folder,
        )
        if done.returncode != 0:
            raise click.ClickException(f"demo step `tmcaldav user add` failed: {done.stderr}")
        url = f"http://{HOST}:{free_port()}"
        self.web = subprocess.Popen(
            # As the daemon: never shadowed by the current folder, gone with the demo.
            [sys.executable, "-P", "-m", "tmcaldav", "-c", str(self.config), "web",
             "--listen", url.removeprefix("http://")],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "web.log").open("ab"),
            cwd=self.folder,
            preexec_fn=die_with_parent,
        )

        def answers() -> bool:
            if self.web is None or self.web.poll() is not None:
                raise click.ClickException(f"tmcaldav web stopped; see {self.folder / 'web.log'}")
            try:
                with urllib.request.urlopen(url + "/login", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(answers, 30, "the web interface")
        self.echo(
            click.style("The web interface: ", bold=True)
            + f"{url}/sessions/{NEXT}  (log in as demo, password {password}); "
            "answers appear there as the daemon records them."
        )

    def stop_web(self) -> None:
        """Stop the web interface."""
        if self.web is not None and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
            self.web.wait(30)

    def answer(self, key: str, email: str, partstat: str) -> None:
        """A student's answer, written as a scheduling server writes it."""
        import niquests

        from tmcaldav import ical

        href = self.page(key)["href"]
        http = niquests.Session()
        http.auth = ("student", self.server.users["student"])
        url = urljoin(self.server.url, href)
        got = http.get(url)
        body = ical.set_partstats(got.text or "", {email: partstat})
        put = http.put(
            url,
            data=body.encode(),
            headers={
                "Content-Type": "text/calendar; charset=utf-8",
                "If-Match": got.headers["ETag"],
            },
        )
        if put.status_code not in (201, 204):
            raise click.ClickException(f"the student's answer was refused ({put.status_code})")
        name = dict(STUDENTS)[email]
        word = {"ACCEPTED": "Yes", "DECLINED": "No", "TENTATIVE": "Maybe"}[partstat]
        self.echo(
            click.style(f"\n>>> {name} clicks “{word}” for {key} in their calendar", fg="cyan")
        )
        self.poll_now()

    def page(self, key: str) -> dict[str, Any]:
        """The session page as JSON, plus the event's href from the store."""
        from tmcaldav.store import get_session

        data: dict[str, Any] = json.loads(self.tm("session", "show", key, "--json", quiet=True))
        with self.app.store.scratch() as db:
            data["href"] = get_session(db, key).href
        return data

    def wait_until(self, key: str, email: str, calendar: str) -> None:
        """Until the daemon has recorded `email`'s answer (saying so after a second)."""
        started = time.monotonic()
        told = False
        while time.monotonic() < started + 60:
            students = {s["email"]: s for s in self.page(key)["students"]}
            if students[email]["calendar"] == calendar:
                return
            if not told and time.monotonic() > started + 1:
                self.echo(click.style("  … waiting for the daemon's next poll", dim=True))
                told = True
            if self.daemon is not None and self.daemon.poll() is not None:
                break
            time.sleep(0.1)
        raise click.ClickException(
            f"the daemon did not record {email}'s answer; its log:\n{self.daemon_log()[-3000:]}"
        )

    def new_suggestions(
        self, key: str, kind: str | None = None, wait: float = 0
    ) -> list[dict[str, Any]]:
        """Print session `key`'s suggestions not shown before (waiting up to `wait` s for
        one of `kind`: the daemon runs the hooks right after the poll)."""
        deadline = time.monotonic() + wait
        while True:
            rows = json.loads(self.tm("suggestions", "--session", key, "--json", quiet=True))
            fresh = [r for r in rows if r["id"] not in self.seen_suggestions]
            if not wait or any(r["kind"] == kind for r in fresh) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for r in fresh:
            self.seen_suggestions.add(r["id"])
            self.echo(
                click.style(
                    f"  suggestion #{r['id']} ({r['plugin']}): {r['kind']} "
                    f"{r['email']} in {r['session']}: {r['reason']}",
                    fg="yellow",
                )
            )
        return fresh

    # ---- the story ------------------------------------------------------------------

    def seed(self) -> None:
        """Two sessions of one course, six students, invitations out."""
        self.tm("db", "upgrade")
        people = self.folder / "people.csv"
        people.write_text("email,name\n" + "".join(f"{e},{n}\n" for e, n in STUDENTS))
        self.tm("import", str(people), "--kind", "people")
        today = datetime.now(ZoneInfo("Europe/Berlin")).replace(
            hour=9, minute=0, second=0, microsecond=0
        )
        nxt = today + timedelta(days=7)
        past = today - timedelta(days=1)
        for key, start, title in (
            (PAST, past, "Excel basics (last week's run)"),
            (NEXT, nxt, "Excel basics"),
        ):
            self.tm(
                "session",
                "add",
                key,
                "--title",
                title,
                "--course",
                COURSE,
                "--start",
                start.isoformat(timespec="minutes"),
                "--end",
                (start + timedelta(hours=3)).isoformat(timespec="minutes"),
                "--capacity",
                "4",
                "--location",
                "Room 2.14",
            )
        self.tm("enroll", NEXT, *[e for e, _ in ENROLLED])
        self.tm("enroll", NEXT, *[e for e, _ in WAITLISTED], "--waitlist")
        self.tm("enroll", PAST, *[e for e, _ in ENROLLED[:3]])
        self.tm("invite", NEXT, "--all-enrolled")
        self.tm("invite", PAST, "--all-enrolled")

    def play(self) -> None:
        """The students answer while the daemon runs."""
        self.echo(
            click.style("\nThe daemon is running (`tmcaldav run`); students answer:", bold=True)
        )
        self.answer(NEXT, "ann@example.org", "ACCEPTED")
        self.wait_until(NEXT, "ann@example.org", "accepted")
        self.pause(6)
        self.answer(NEXT, "bob@example.org", "DECLINED")
        self.wait_until(NEXT, "bob@example.org", "declined")
        self.tm("session", "show", NEXT)
        self.new_suggestions(NEXT, "invite_waitlisted", wait=30)
        self.pause(6)
        self.answer(NEXT, "cy@example.org", "TENTATIVE")
        self.wait_until(NEXT, "cy@example.org", "tentative")
        self.new_suggestions(NEXT, "contact_student", wait=30)
        self.pause(6)
        self.answer(NEXT, "cy@example.org", "ACCEPTED")
        self.wait_until(NEXT, "cy@example.org", "accepted")
        self.echo("  (Cy changed their mind: the history keeps both answers)")
        self.tm("session", "history", NEXT, "cy@example.org")
        self.echo(click.style("\n>>> Dee does not answer at all.", fg="cyan"))
        self.pause(6)
        # The waitlist moves: the administrator applies the waitlist's suggestions.
        self.echo(click.style("\nThe administrator applies the waitlist's suggestions:", bold=True))
        for row in json.loads(self.tm("suggestions", "--session", NEXT, "--json", quiet=True)):
            if row["kind"] in ("cancel_enrollment", "invite_waitlisted"):
                self.tm("suggestions", "apply", str(row["id"]))
        self.tm("session", "show", NEXT)
        self.pause(6)
        self.answer(NEXT, "eve@example.org", "ACCEPTED")
        self.wait_until(NEXT, "eve@example.org", "accepted")
        for row in self.new_suggestions(NEXT, "promote_waitlisted", wait=30):
            if row["kind"] == "promote_waitlisted":
                self.tm("suggestions", "apply", str(row["id"]))
        self.tm("session", "show", NEXT)

    def before_the_daemon(self) -> None:
        """Last week's run of the course: who accepted, who came."""
        self.echo(
            click.style(
                f"\n{PAST} ended yesterday. Ann and Bob had accepted; only Ann "
                "came. Cy never answered.",
                bold=True,
            )
        )
        self.answer(PAST, "ann@example.org", "ACCEPTED")
        self.answer(PAST, "bob@example.org", "ACCEPTED")
        self.tm("set-status", PAST, "ann@example.org", "attended")

    def no_shows(self) -> None:
        """The no-show suggestions the daemon made for last week's run, and the report."""
        self.echo(click.style(f"\nThe daemon's advice for {PAST}:", bold=True))
        for row in json.loads(self.tm("suggestions", "--session", PAST, "--json", quiet=True)):
            self.echo(
                click.style(
                    f"  suggestion #{row['id']} ({row['plugin']}): {row['kind']} "
                    f"{row['email']}: {row['reason']}",
                    fg="yellow",
                )
            )
            if row["kind"] == "mark_no_show":
                self.tm("suggestions", "apply", str(row["id"]))
        self.tm("report", "no-shows")

    def run(self) -> None:
        """The whole story."""
        self.echo(click.style("tmcaldav demo", bold=True) + f" — files in {self.folder}")
        self.start_server()
        self.echo(f"Radicale is serving on {self.server.url} (pid {self.server.pid})")
        self.seed()
        self.start_web()
        self.tm("session", "show", NEXT)
        self.before_the_daemon()
        self.start_daemon()
        self.play()
        self.no_shows()
        self.stop_daemon()


def main(keep: bool, pace: float = 1.0) -> None:
    """Run the demo in a temp folder; keep the server and files when asked.

    Whatever happens — a failed step, Ctrl-C, SIGTERM — the daemon and Radicale are
    stopped (by PID) and the folder is removed unless `--keep`; a kill -9 of the demo
    takes both servers with it (the kernel sends them SIGTERM).
    """
    folder = Path(tempfile.mkdtemp(prefix="tmcaldav-demo-"))
    demo = Demo(folder, pace)
    ok = False
    previous = signal.signal(signal.SIGTERM, _stop_demo)
    try:
        demo.run()
        ok = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.stop_daemon()
        if demo._app is not None:
            demo._app.store.close()
        demo.stop_web()
        if ok and keep and demo.server is not None:
            click.echo(
                f"\nThe demo's files are in {folder}; Radicale keeps running at "
                f"{demo.server.url} (pid {demo.server.pid}). Try:\n"
                f"  export TMCALDAV_CONFIG={demo.config}\n"
                f"  tmcaldav session show {NEXT}\n  tmcaldav suggestions --all\n"
                f"  tmcaldav run --once\n"
                f"Stop the server with: kill {demo.server.pid}"
            )
            # Detach: the server outlives this process.
            demo.server = None
        else:
            if demo.server is not None:
                demo.server.stop()
            if ok:
                click.echo(f"\nDone. The files were in {folder} (removed; keep them with --keep).")
                shutil.rmtree(folder, ignore_errors=True)
            elif keep:
                click.echo(f"The demo failed; its files are kept in {folder}", err=True)
            else:
                click.echo(
                    f"The demo failed; its servers are stopped and {folder} removed "
                    "(keep it with --keep)",
                    err=True,
                )
                shutil.rmtree(folder, ignore_errors=True)


def _stop_demo(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
