"""Meta-tests that keep the plugin contract honest: every hook is documented in the
README with its exact signature, has a docstring, and is exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tmcaldav import hookspecs
from tmcaldav.hooks.plugins import hook_names

ROOT = Path(__file__).resolve().parent.parent
HOOKS = hook_names()


def signature(name: str) -> str:
    """`on_decline(change: ResponseChange, ...) -> SuggestionResult`, from hookspecs."""
    # Annotations are strings (postponed evaluation): drop their quotes.
    return f"{name}{inspect.signature(getattr(hookspecs, name))}".replace("'", "")


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 8 and "on_decline" in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_in_the_readme_with_its_signature(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert signature(name) in readme, f"README.md lacks `{signature(name)}`"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring(name: str) -> None:
    # When it fires, what it may return, and what a failure does.
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert doc.startswith("Called ")
    assert ":return:" in doc
    assert "logged with the plugin's name" in doc


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    this = Path(__file__).resolve()
    sources = [
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").glob("test_*.py")
        if p.resolve() != this
    ]
    pattern = re.compile(rf"\b{name}\b")
    assert any(pattern.search(text) for text in sources), f"no test mentions {name}"
