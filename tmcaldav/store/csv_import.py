"""CSV import of sessions, people and enrollments: all rows or none.

Every bad row is reported with its line number in the file; if there is any, the
transaction is rolled back and nothing is written.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from tmcaldav.domain import CAPACITY_MAX
from tmcaldav.errors import TmcaldavError
from tmcaldav.store import roster

# kind -> (required columns, optional columns)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sessions": (
        ("key", "title", "start", "end"),
        ("tz", "location", "capacity", "course", "description"),
    ),
    "people": (("email",), ("name", "phone")),
    "enrollments": (("session", "email"), ("status", "calendar", "responded_at")),
}


class CsvImportError(TmcaldavError, ValueError):
    """The file was refused; `problems` lists each with its line number."""

    def __init__(self, path: str, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{path}: import refused, nothing was written:\n"
            + "\n".join(f"  {p}" for p in problems)
        )


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote."""

    kind: str
    rows: int


def import_csv(db: Session, path: str, kind: str, default_tz: str) -> ImportResult:
    """Import one CSV file of `kind` inside the caller's transaction; all rows or none."""
    if kind not in COLUMNS:
        raise CsvImportError(path, [f"unknown kind {kind!r}; use one of {', '.join(COLUMNS)}"])
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise CsvImportError(path, [f"cannot read the file: {e.strerror}"]) from e
    except UnicodeDecodeError as e:
        raise CsvImportError(path, [f"not UTF-8 text (byte {e.start}); save it as UTF-8"]) from e
    required, optional = COLUMNS[kind]
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required + optional]
    problems = []
    if missing:
        problems.append(f"line 1: missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(
            f"line 1: unknown column(s) {', '.join(unknown)} "
            f"(known: {', '.join(required + optional)})"
        )
    if problems:
        raise CsvImportError(path, problems)
    apply_row = _ROW_HANDLERS[kind]
    rows = 0
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                problems.append(f"line {line}: expected {len(header)} fields")
                continue
            values = {k: v.strip() for k, v in row.items()}
            if not any(values.values()):
                continue
            empty = [c for c in required if not values[c]]
            if empty:
                problems.append(f"line {line}: empty {', '.join(empty)}")
                continue
            if any("\x00" in v for v in values.values()):
                problems.append(f"line {line}: contains a NUL character")
                continue
            try:
                apply_row(db, values, default_tz)
                rows += 1
            except TmcaldavError as e:
                problems.append(f"line {line}: {e}")
            except (IntegrityError, DataError) as e:
                # The checks above should catch everything; should the store refuse a
                # row anyway, say which, and stop: the transaction is spent.
                problems.append(f"line {line}: the store refused it ({e.orig})")
                break
    except csv.Error as e:
        problems.append(f"line {reader.line_num or line}: not readable as CSV ({e})")
    if problems:
        raise CsvImportError(path, problems[:MAX_PROBLEMS] + _more(problems))
    return ImportResult(kind, rows)


# Problems listed for one file; a file with more is refused all the same.
MAX_PROBLEMS = 100


def _more(problems: list[str]) -> list[str]:
    extra = len(problems) - MAX_PROBLEMS
    return [f"... and {extra} more problem(s)"] if extra > 0 else []


def _session_row(db: Session, row: dict[str, str], default_tz: str) -> None:
    capacity = None
    if row.get("capacity"):
        text = row["capacity"]
        if len(text) > 12 or not re.fullmatch(r"-?[0-9]+", text):
            raise roster.RosterError(
                f"capacity must be a whole number between 0 and {CAPACITY_MAX:,}, "
                f"not {text[:20]!r}"
            )
        capacity = int(text)
    fields = roster.SessionFields(
        title=row["title"],
        start=row["start"],
        end=row["end"],
        tz=row.get("tz") or None,
        location=row.get("location") or None,
        capacity=capacity,
        course=row.get("course") or None,
        description=row.get("description") or None,
    )
    roster.add_session(db, row["key"], fields, default_tz)


def _person_row(db: Session, row: dict[str, str], _tz: str) -> None:
    roster.add_person(db, row["email"], row.get("name") or None, row.get("phone") or None)


def _enrollment_row(db: Session, row: dict[str, str], tz: str) -> None:
    status = row.get("status") or "enrolled"
    calendar = row.get("calendar") or None
    if status in ("enrolled", "waitlisted") and not calendar and not row.get("responded_at"):
        roster.enroll(db, row["session"], [row["email"]], waitlist=status == "waitlisted")
        return
    # A row of the old system's history: how an ended session went for one student.
    roster.import_outcome(
        db,
        row["session"],
        row["email"],
        status,
        calendar,
        roster.parse_time(row["responded_at"], tz) if row.get("responded_at") else None,
    )


_ROW_HANDLERS: dict[str, Callable[[Session, dict[str, str], str], None]] = {
    "sessions": _session_row,
    "people": _person_row,
    "enrollments": _enrollment_row,
}
