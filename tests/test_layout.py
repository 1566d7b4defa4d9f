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
    "data": {"errors", "settings", "atomic", "distributed"},
    "networks": {"errors", "settings"},
    "ssl": {"errors", "settings", "atomic", "data", "networks", "checkpoints", "plots", "distributed"},
    "engines": {"errors", "settings", "data", "networks", "ssl", "distributed"},
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


# The zoo-style unit test runs inside a model-zoo checkout, where the bundle is not installed: like the zoo's own
# ci/verify_bundle.py it puts the bundle root first on sys.path (MONAI adds it only in ConfigWorkflow.run()).
SYS_PATH_ALLOWED = {"tests/zoo/ci/unit_tests/test_chest_xray_ssl_multitask.py"}


def _edits_sys_path(path) -> bool:
    edit = re.compile(r"sys\.path(\.(insert|append|extend)\(|\s*(\+?=|\[))")
    return any(edit.search(line.split("#", 1)[0]) for line in path.read_text().splitlines())


def test_no_script_or_test_edits_sys_path():
    offenders = [
        p.relative_to(ROOT).as_posix()
        for folder in ("bundle", "scripts", "tests")
        for p in (ROOT / folder).rglob("*.py")
        if _edits_sys_path(p) and p.relative_to(ROOT).as_posix() not in SYS_PATH_ALLOWED
    ]
    assert not offenders
    # the one exception is real: if it stops editing sys.path, drop it from the list
    assert all(_edits_sys_path(ROOT / f) for f in SYS_PATH_ALLOWED)
