"""The package's imports run one way down its floors with no cycle, matplotlib has one home, and nothing edits
sys.path."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "bundle"
# The floors of the package, lowest first: a module imports only from its own floor or the floors below (its own
# floor for the leaves and for modules of one subpackage; cycles are refused on their own). ``bundle`` is the
# package itself (``lazy_submodules``).
LAYERS = [
    {"bundle", "errors", "values", "atomic"},
    {"distributed", "runlock", "overrides", "startup", "workflow", "tracking"},
    {"data"},
    {"plots", "prepare"},
    {"networks"},
    {"losses", "checkpoints"},
    {"ssl"},
    {"engines"},
    {"relevance"},
    {"saliency"},
    {"evaluation"},
    {"inference"},
    {"settings"},
]
FLOOR = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """``bundle/ssl/moco.py`` -> ``bundle.ssl.moco``; ``bundle/ssl/__init__.py`` -> ``bundle.ssl``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, package: str) -> list[str]:
    """Bundle modules one import statement names (``from .x import a`` names ``x.a`` when ``a`` is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "bundle"]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    if base.split(".")[0] != "bundle":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def bundle_imports(name: str) -> tuple[set[str], set[str]]:
    """(every bundle module ``name`` imports, those imported inside a function or class body)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    everything = {m for node in ast.walk(tree) for m in _imported(node, package)}
    top = {m for node in tree.body for m in _imported(node, package)}
    return everything, everything - top


def floor(name: str) -> int:
    parts = name.split(".")
    return FLOOR["bundle"] if len(parts) == 1 else FLOOR[parts[1]]


def test_every_module_has_a_floor():
    assert not [n for n in MODULES if n.count(".") and n.split(".")[1] not in FLOOR]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_floors(name):
    imported, in_functions = bundle_imports(name)
    up = sorted(m for m in imported if floor(m) > floor(name))
    assert not up, f"{name} (floor {floor(name)}) imports {up} from a higher floor"
    # an import hidden in a function body is how a circle hides: every bundle import sits at the top
    assert not in_functions, f"{name} imports {sorted(in_functions)} inside a function"


def test_no_import_cycle():
    graph = {name: {m for m in bundle_imports(name)[0] if m in MODULES and m != name} for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        cycle = None if start in state else visit(start, [])
        assert not cycle, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :])


def test_settings_is_imported_only_from_outside_the_package():
    users = [n for n in MODULES if "bundle.settings" in bundle_imports(n)[0] and n != "bundle.settings"]
    assert not users


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
        for folder in ("bundle", "scripts", "tests", "benchmarks", "label_app")
        for p in (ROOT / folder).rglob("*.py")
        if _edits_sys_path(p) and p.relative_to(ROOT).as_posix() not in SYS_PATH_ALLOWED
    ]
    assert not offenders
    # the one exception is real: if it stops editing sys.path, drop it from the list
    assert all(_edits_sys_path(ROOT / f) for f in SYS_PATH_ALLOWED)


def test_the_readme_layout_names_every_module():
    """README.md's Layout lists every module of the package (prepare/'s layouts are summed up as a folder) and of
    benchmarks/."""
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"[a-z_]+(?:\.py|/)?", layout))  # a top-level module as x.py, a package as x/
    wanted = set()
    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) == 2:
            wanted.add(f"{parts[1]}/" if path.name == "__init__.py" else f"{parts[1]}.py")
        elif len(parts) > 2 and parts[1] != "prepare" and path.name != "__init__.py":
            wanted.add(parts[-1])
    # the benchmarks package, which the release leaves out, is listed by its modules too
    wanted |= {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("__")}
    missing = sorted(wanted - named)
    assert not missing, f"README.md's Layout does not name {missing}"


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_60_lines():
    """Every function and method of bundle/, scripts/, label_app/ and benchmarks/ fits in 60 lines, its docstring
    included."""
    offenders = []
    for folder in ("bundle", "scripts", "label_app", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{rel}:{node.lineno} {node.name} {length}")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines: {offenders}"
