"""Text rules shared by building and reading: display names, TEXT values, RFC 6868
parameter escapes, and the stable UID of a session."""

from __future__ import annotations

import hashlib
import html
import re

from tmcaldav.domain import normalise_address

# --------------------------------------------------------------------------- text rules

# Line breaks (including the Unicode ones) and other control characters cannot appear in
# a parameter value; runs of them collapse to one space so "Ann\r\nLee" reads "Ann Lee".
_NAME_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# In TEXT values a line break is escaped as \n, but other control characters are illegal.
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def normalise_name(name: str | None) -> str | None:
    """Return the display name exactly as :func:`build_calendar` writes it into ``CN``.

    This is the documented lossy mapping: ``"`` becomes ``'`` (RFC 5545 has no way to put a
    double quote inside a quoted parameter value), every run of line breaks and control
    characters becomes one space, lone surrogates become U+FFFD, and surrounding whitespace
    is stripped. An empty result is ``None`` (no CN). Reading the built calendar back gives
    this value, so compare names after this function.
    """
    if name is None:
        return None
    text = _SURROGATES.sub("\ufffd", name)
    text = _NAME_BREAKS.sub(" ", text).replace('"', "'").strip()
    return text or None


def _clean_text(value: str) -> str:
    """Make a TEXT value (SUMMARY, DESCRIPTION, LOCATION) legal; line breaks survive."""
    text = _SURROGATES.sub("\ufffd", value).replace("\r\n", "\n").replace("\r", "\n")
    return _TEXT_CONTROLS.sub(" ", text)


def _encode_param_text(text: str) -> str:
    # RFC 6868: a literal caret is "^^", so readers that decode ^n and ^' (sabre, icalendar,
    # this module) get the name back unchanged.
    return text.replace("^", "^^")


_RFC6868 = re.compile(r"\^([\^nN'])")
_RFC6868_MAP = {"^": "^", "n": "\n", "N": "\n", "'": '"'}


def _decode_param_text(raw: str) -> str:
    if "^" not in raw:
        return raw
    return _RFC6868.sub(lambda match: _RFC6868_MAP[match.group(1)], raw)


_TEXT_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# Apple and others escape the double quote although RFC 5545 does not ask for it.
_TEXT_UNESCAPE = {"n": "\n", "N": "\n", "\\": "\\", ";": ";", ",": ",", '"': '"'}


def _decode_text(raw: str) -> str:
    if "\\" not in raw:
        return raw
    # Unknown escapes are kept as they are, as vobject does.
    return _TEXT_ESCAPE.sub(lambda m: _TEXT_UNESCAPE.get(m.group(1), m.group(0)), raw)


def decode_note_param(values: list[str]) -> str | None:
    """A student's note carried in a parameter (``X-RESPONSE-COMMENT``), as plain text.

    Gmail writes the note quoted, with TEXT escapes (``\\;``, ``\\,``, ``\\n``) and HTML
    entities (``&#39;``) inside; an unquoted value that held commas arrives split into
    several values. All of that is undone here (RFC 6868 escapes too); an empty note is None.
    """
    raw = ",".join(values)
    text = html.unescape(_decode_text(_decode_param_text(raw)))
    text = _SURROGATES.sub("\ufffd", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _TEXT_CONTROLS.sub(" ", text).strip()
    return text or None


# --------------------------------------------------------------------------- UID


_UID_SAFE = re.compile(r"[A-Za-z0-9.-]+")
_UID_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9.-]+")
_UID_READABLE_MAX = 64


def session_uid(session_key: str, organizer_email: str) -> str:
    """Return the stable UID of a session: ``tmcaldav-<key>@<organizer's domain>``.

    A key made only of ASCII letters, digits, ``.`` and ``-`` (up to 64 characters) is used
    as it is. Any other key has each run of other characters replaced by ``-``, is cut to 64
    characters, and gets ``_`` plus 16 hex digits of its SHA-256, so the UID is safe in a URL
    and distinct keys keep distinct UIDs (``_`` never appears in the plain form). The result
    depends only on the arguments. Raises ``ValueError`` for an empty key or a bad address.
    """
    if not session_key:
        raise ValueError("a session key must not be empty")
    domain = normalise_address(organizer_email).rpartition("@")[2]
    if _UID_SAFE.fullmatch(session_key) and len(session_key) <= _UID_READABLE_MAX:
        readable = session_key
    else:
        digest = hashlib.sha256(session_key.encode("utf-8", "surrogatepass")).hexdigest()
        readable = _UID_UNSAFE_RUN.sub("-", session_key)[:_UID_READABLE_MAX] + "_" + digest[:16]
    # The domain may hold non-ASCII letters (IDN); UIDs are TEXT, so that is legal.
    return f"tmcaldav-{readable}@{domain}"


_TOKEN = re.compile(r"[A-Za-z0-9-]+")


def _check_token(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} must be a token like NEEDS-ACTION, got {value!r}")
    return value.upper()


def _fold(line: str, newline: str) -> str:
    """Fold a logical line at 75 octets without splitting a UTF-8 sequence (RFC 5545 §3.1)."""
    if line.isascii():
        # One octet a character: slice (75 on the first line, 74 after the space).
        if len(line) <= 75:
            return line
        rest = [line[i : i + 74] for i in range(75, len(line), 74)]
        return (newline + " ").join([line[:75], *rest])
    pieces: list[str] = []
    current: list[str] = []
    size, limit = 0, 75
    for char in line:
        width = len(char.encode("utf-8", "surrogatepass"))
        if size + width > limit:
            pieces.append("".join(current))
            current, size, limit = [], 0, 74  # continuation lines start with a space
        current.append(char)
        size += width
    pieces.append("".join(current))
    return (newline + " ").join(pieces)
