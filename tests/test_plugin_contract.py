"""Meta-tests that keep the plugin contract honest: every hook is documented in the
README's Hooks section with its exact signature, has a docstring, and is exercised by a
test (in code, not in a comment); importing the contract loads no database code."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tmcaldav import hookspecs
from tmcaldav.cli.base import COMMAND_MODULES
from tmcaldav.hooks.plugins import hook_names

ROOT = Path(__file__).resolve().parent.parent
HOOKS = hook_names()


def signature(name: str) -> str:
    """`on_decline(change: ResponseChange, ...) -> SuggestionResult`, from hookspecs."""
    # Annotations are strings (postponed evaluation): drop their quotes.
    return f"{name}{inspect.signature(getattr(hookspecs, name))}".replace("'", "")


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 8 and "on_decline" in HOOKS


def readme_section(heading: str) -> str:
    """The text of one README section, up to the next heading of the same or a higher level."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    level = heading.split(" ", 1)[0]
    start = lines.index(heading) + 1
    end = next(
        (
            i
            for i in range(start, len(lines))
            if lines[i].startswith("#")
            and len(lines[i].split(" ", 1)[0]) <= len(level)
            and not lines[i].startswith("#!")
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_in_the_readme_with_its_signature(name: str) -> None:
    section = readme_section("### Hooks")
    assert signature(name) in section, f"README.md's Hooks section lacks `{signature(name)}`"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring(name: str) -> None:
    # When it fires, what it may return, and what a failure does.
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert doc.startswith("Called ")
    assert ":return:" in doc
    assert "logged with the plugin's name" in doc


def code_names(path: Path) -> set[str]:
    """Names a test module uses in code: functions it defines (a plugin's hook
    implementations), attributes it reads (`pm.hook.on_decline`), and strings that are
    exactly a name (a recorded hook). Comments and docstrings do not count."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    this = Path(__file__).resolve()
    used = [code_names(p) for p in (ROOT / "tests").glob("test_*.py") if p.resolve() != this]
    assert any(name in names for names in used), f"no test exercises {name}"


def test_code_names_ignore_comments_and_docstrings(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text('"""on_decline in a docstring."""\n# on_accept in a comment\nx = 1\n')
    assert not {"on_decline", "on_accept"} & code_names(sample)


def modules_loaded_by(*names: str) -> set[str]:
    """Every module a fresh Python has loaded once it has imported `names`."""
    code = f"import sys, {', '.join(names)}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_plugin_contract_loads_no_database_code() -> None:
    loaded = modules_loaded_by("tmcaldav.hookspecs", "tmcaldav.views")
    assert "tmcaldav.hookspecs" in loaded  # the probe saw the import
    assert sorted(m for m in loaded if m.split(".")[0] in ("sqlalchemy", "alembic")) == []


def test_the_runtime_never_imports_pytest() -> None:
    # The CLI's command modules are imported on demand (`COMMAND_MODULES`): name them all.
    commands = sorted({f"tmcaldav.cli.{m}" for ms in COMMAND_MODULES.values() for m in ms})
    loaded = modules_loaded_by(
        "tmcaldav.demo", "tmcaldav.daemon", "tmcaldav.cli", "tmcaldav.radicale", *commands
    )
    assert "tmcaldav.daemon" in loaded  # the probe saw the import
    assert "pytest" not in loaded
