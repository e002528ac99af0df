"""`--csv`: the listing commands' rows as RFC 4180 CSV for a spreadsheet or a colleague.

One writer for every command: UTF-8, CRLF line ends, a header row, the same fields as
`--json` (a nested object becomes `name.field` columns, a list its JSON text, a missing
value an empty cell). A text cell that starts with `=`, `+`, `-`, `@` (or a tab or
carriage return) is prefixed with `'`, so a spreadsheet shows it and never runs it as a
formula (CSV injection).
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import click

from tmcaldav.cli.base import emit_json, json_option
from tmcaldav.errors import UsageError

csv_option = click.option(
    "--csv", "as_csv", is_flag=True, help="Print CSV (RFC 4180, UTF-8, header row)."
)

P = ParamSpec("P")
R = TypeVar("R")

# What a spreadsheet may take for the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def check_formats(as_json: bool, as_csv: bool) -> None:
    """UsageError when both --json and --csv are asked for."""
    if as_json and as_csv:
        raise UsageError("choose one of --json and --csv")


def script_formats(command: Callable[P, R]) -> Callable[P, R]:
    """The options `--json` and `--csv` of a listing command, refused together before the
    command does anything (it prints with `emit_for_scripts`)."""

    @functools.wraps(command)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        check_formats(bool(kwargs["as_json"]), bool(kwargs["as_csv"]))
        return command(*args, **kwargs)

    return json_option(csv_option(checked))


def cell(value: Any) -> str:
    """One value as a safe CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)  # a number stays a number (-1 is no formula)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A row with nested objects as `name.field` keys (lists stay whole)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = ()) -> str:
    """The rows as CSV text; the columns are `columns`, then every other key in the
    order first seen."""
    flat = [flatten(row) for row in rows]
    header = list(dict.fromkeys([*columns, *(key for row in flat for key in row)]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(name) for name in header])
    for row in flat:
        writer.writerow([cell(row.get(name)) for name in header])
    return out.getvalue()


def emit_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = ()) -> None:
    """Print rows as CSV on standard output."""
    click.echo(to_csv(rows, columns), nl=False)


def emit_for_scripts(
    data: Any,
    as_json: bool,
    as_csv: bool,
    columns: Sequence[str],
    csv_rows: Iterable[Mapping[str, Any]] | None = None,
) -> bool:
    """Print `data` as JSON, or as CSV (its rows, or `csv_rows` where one row of the JSON
    becomes several), when `--json` or `--csv` asks for it; False when neither does and
    the caller prints its text."""
    if as_json:
        emit_json(data)
    elif as_csv:
        emit_csv(data if csv_rows is None else csv_rows, columns)
    return as_json or as_csv
