"""The package's layout as users see it: the modules earlier releases kept at the root still import."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import ckatlas

SRC = Path(ckatlas.__file__).parent


@pytest.mark.parametrize("old, new", sorted(ckatlas.MOVED_MODULES.items()))
def test_an_old_module_name_is_the_moved_module(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_old_names_import_in_a_fresh_interpreter() -> None:
    code = ("from ckatlas.summary import read_summary; from ckatlas.cpu import settle_allocator; "
            "import ckatlas.formats, ckatlas.io.formats; assert ckatlas.formats is ckatlas.io.formats; "
            "from ckatlas.io.summary import read_summary as r; assert r is read_summary")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_package_itself_imports_only_current_names() -> None:
    """So that the import contracts (pyproject.toml) see the real graph."""
    old = set(ckatlas.MOVED_MODULES)
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if n in old]
    assert offenders == []


def test_the_root_holds_the_api_and_no_utilities() -> None:
    modules = sorted(p.stem for p in SRC.glob("*.py"))
    assert modules == ["__init__", "_version", "errors"]
