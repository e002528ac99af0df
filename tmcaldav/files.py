"""Private files: what tmcaldav creates is for its own user only, whatever the umask.

The store holds addresses, phone numbers and notes; the lock, spools, the cookie key and
mail folders are no one else's business either. Files are created 0600 and folders
0700 (set explicitly after creating them, so neither a permissive umask nor an odd one
changes that); files that already exist keep their mode and `doctor` warns when others
can read them (`exposed`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create an empty file 0600 unless it exists; True when it was created here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return True


def open_private(path: str | os.PathLike[str], flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """`os.open` for a file of ours: a file it creates is 0600 (an existing one keeps its
    mode). Returns the descriptor."""
    created = flags & os.O_CREAT and not os.path.exists(path)
    fd = os.open(path, flags, PRIVATE_FILE)
    if created:
        try:
            os.fchmod(fd, PRIVATE_FILE)
        except OSError:
            os.close(fd)
            raise
    return fd


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a new file (replacing `path` atomically), 0600, synced to disk."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, target)


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create a folder (and missing parents) 0700; an existing one keeps its mode."""
    folder = Path(path)
    missing = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for item in reversed(missing):
        try:
            item.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to change
        os.chmod(item, PRIVATE_DIR)
    return folder


def exposed(path: str | os.PathLike[str]) -> str | None:
    """The mode (e.g. "-rw-r--r--") of an existing file or folder that group or others
    may read or write; None when it is private or does not exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return stat.filemode(mode)
    return None
