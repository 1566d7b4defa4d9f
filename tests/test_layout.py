"""The package's import layers stay one-way, matplotlib has one home, and nothing edits sys.path."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "bundle"
# subpackage -> the bundle modules it may import (besides itself): the layers data -> networks -> ssl -> engines
ALLOWED = {
    "data": {"settings", "atomic"},
    "networks": {"settings"},
    "ssl": {"settings", "atomic", "data", "networks", "checkpoints", "plots"},
    "engines": {"settings", "networks", "ssl"},
}


def bundle_imports(path: Path) -> set[str]:
    """First-level bundle modules imported by ``path`` (``bundle.data.x`` and ``..data.x`` both give ``data``)."""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("bundle", "ssl", "simclr")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level])
                name = ".".join(base + ([node.module] if node.module else []))
                names = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("bundle.") and n.count(".") >= 1}
    return found


@pytest.mark.parametrize("sub", sorted(ALLOWED))
def test_import_layers_are_one_way(sub):
    for path in sorted((PACKAGE / sub).rglob("*.py")):
        extra = bundle_imports(path) - ALLOWED[sub] - {sub, "lazy_submodules"}
        assert not extra, f"{path.relative_to(ROOT)} imports bundle.{sorted(extra)}"


def test_only_plots_imports_matplotlib():
    users = [p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "matplotlib" in p.read_text()]
    assert users == ["bundle/plots.py"]


def test_no_script_or_test_edits_sys_path():
    edit = re.compile(r"sys\.path\.(insert|append)\(")
    offenders = [
        p.relative_to(ROOT).as_posix()
        for folder in ("scripts", "tests")
        for p in (ROOT / folder).rglob("*.py")
        if edit.search(p.read_text())
    ]
    assert not offenders
