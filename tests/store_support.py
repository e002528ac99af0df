"""What a test reads from the store a tmcaldav config names, from outside the App: the
tests that drive tmcaldav as an administrator does (the CLI, a child process) and play
the students against the real server."""

from __future__ import annotations

from pathlib import Path

from tmcaldav.app import open_store
from tmcaldav.config import load_config
from tmcaldav.store import get_session


def session_href(config: Path, key: str = "TM-1") -> str:
    """Where session `key`'s event is on the server (what a student's client would find
    in its calendar), read from the store `config` names."""
    store = open_store(load_config(config).store.url)
    try:
        with store.scratch() as db:
            href = get_session(db, key).href
    finally:
        store.close()
    assert href, f"{key} has not been published"
    return href
