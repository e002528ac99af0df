"""Edit one calendar object's text in place: set attendees' PARTSTAT and nothing else
(every other byte stays, so the server's and the students' data survive)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from vobject.base import (
    line_re,
    params_re,
    parseLine,
)

from tmcaldav.domain import address_or_none, normalise_address
from tmcaldav.ical.event import ICalError
from tmcaldav.ical.read import _LINE_BREAK, _as_text, read_event
from tmcaldav.ical.text import _check_token, _fold

# --------------------------------------------------------------------------- editing


def _with_partstat(line: str, partstat: str) -> str:
    """``line`` (an unfolded ATTENDEE) with its PARTSTAT parameter set to ``partstat``.

    Only the PARTSTAT parameter is rewritten (or appended); every other byte of the line,
    including the quoting of CN, stays as the server or client wrote it.
    """
    match = line_re.match(line)
    if match is None:  # parseLine accepted this line already; keep the invariant visible
        raise ICalError(f"cannot edit content line {line[:40]!r}")
    params_start, params_end = match.span("params")
    replacement = f";PARTSTAT={partstat}"
    found = False

    def set_value(param: re.Match[str]) -> str:
        nonlocal found
        if param.group(1).upper() != "PARTSTAT":
            return param.group(0)
        found = True
        return replacement

    params: str = params_re.sub(set_value, line[params_start:params_end])
    if not found:
        params += replacement
    return line[:params_start] + params + line[params_end:]


def _physical_lines(text: str) -> Iterable[tuple[str, str]]:
    """(content, line ending) pairs; the last ending may be empty."""
    parts = _LINE_BREAK.split(text)
    endings = _LINE_BREAK.findall(text)
    return zip(parts, [*endings, ""], strict=True)


def set_partstats(text: str | bytes, partstats: Mapping[str, str]) -> str:
    """Return the calendar with the given attendees' PARTSTAT replaced, all else untouched.

    ``partstats`` maps addresses (any spelling) to PARTSTAT tokens. Every ATTENDEE line of
    that address in every VEVENT (master and overridden instances, never a VALARM) is
    rewritten; SEQUENCE and every other line keep their exact bytes. Raises ``ValueError``
    for an address that is not an attendee of the event or a PARTSTAT that is not a token,
    and :class:`ICalError` for data :func:`read_event` cannot read.
    """
    source = _as_text(text)
    state = read_event(source)
    wanted = {
        normalise_address(address): _check_token(partstat, "PARTSTAT")
        for address, partstat in partstats.items()
    }
    missing = sorted(set(wanted) - set(state.attendees))
    if missing:
        raise ValueError(f"not attendees of {state.uid}: {', '.join(missing)}")
    if not wanted:
        return source

    # Group physical lines into logical ones, remembering each one's exact source text.
    logical: list[tuple[str, list[tuple[str, str]]]] = []
    for content, ending in _physical_lines(source):
        if content[:1] in (" ", "\t") and logical:
            unfolded, physical = logical[-1]
            logical[-1] = (unfolded + content[1:], [*physical, (content, ending)])
        else:
            logical.append((content, [(content, ending)]))

    out: list[str] = []
    stack: list[str] = []
    done = False  # read_event reads the first calendar object only; edit no further
    for unfolded, physical in logical:
        original = "".join(content + ending for content, ending in physical)
        if done or not unfolded.strip():
            out.append(original)
            continue
        # read_event has parsed these very lines, so parseLine cannot fail here.
        name, _params, value, _group = parseLine(unfolded)
        name = name.upper()
        if name == "BEGIN":
            stack.append(value.strip().upper())
        elif name == "END":
            stack.pop()
            done = not stack
        elif name == "ATTENDEE" and stack[1:] == ["VEVENT"]:
            address = address_or_none(value)
            if address in wanted:
                newline = next((end for _content, end in physical if end), "\r\n")
                edited = _fold(_with_partstat(unfolded, wanted[address]), newline)
                out.append(edited + physical[-1][1])
                continue
        out.append(original)
    return "".join(out)
