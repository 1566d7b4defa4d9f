"""The MONAI model zoo's code-format rules hold: the four checks of ``make lint``, on every file the zoo would check.

Settings: ``setup.cfg`` ([flake8], [isort]) and ``[tool.black]`` in ``pyproject.toml``; JSON as pre-commit-hooks'
``pretty-format-json --no-sort-keys --indent=4`` (``.ci/format_json.py``). ``make format`` fixes what it can.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, launch

# The same commands as the Makefile's lint target, run on the whole repository; the Python checkers verbose, so
# that one run shows both that the check passes and which files it looked at.
CHECKS = {
    "isort": [sys.executable, "-m", "isort", "--check-only", "--diff", "--verbose", "."],
    "black": [sys.executable, "-m", "black", "--check", "--verbose", "."],
    "flake8": [sys.executable, "-m", "flake8", "-vv", "."],
    "json": [sys.executable, ".ci/format_json.py", "--check"],
}
# each tool's line for a file it checked (isort: SUCCESS or ERROR; black: reformat or not; flake8: discovery)
SEEN = {
    "isort": (r"^(?:SUCCESS|ERROR): (.+\.pyi?) ", "stdout"),
    "black": (
        r"^(?:would reformat (.+\.pyi?)|(.+\.pyi?) (?:already well formatted|wasn't modified on disk))",
        "stderr",
    ),
    "flake8": (r'"(.+\.py)" has not been excluded', "stderr"),
}
_results: dict[str, subprocess.CompletedProcess] = {}


def check(tool: str) -> subprocess.CompletedProcess:
    """The tool's one run on the repository (kept for the session: both tests of a tool read it)."""
    if tool not in _results:
        _results[tool] = launch(CHECKS[tool], timeout=600)
    return _results[tool]


def git_files(pattern: str) -> set[str]:
    """Tracked files matching ``pattern`` plus untracked ones git does not ignore, as paths relative to ROOT."""
    names = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        out = launch(["git", "ls-files", *extra, "--", pattern], check=True).stdout
        names.update(line for line in out.splitlines() if (ROOT / line).is_file())
    return names


def relative(path: str) -> str:
    path = path.strip()
    root = ROOT.as_posix() + "/"
    return path[len(root) :] if path.startswith(root) else path.removeprefix("./")


@pytest.mark.parametrize("tool", sorted(CHECKS))
def test_check_passes(tool):
    result = check(tool)
    assert result.returncode == 0, (
        f"{' '.join(CHECKS[tool][1:])} failed (exit {result.returncode}); `make format` fixes isort, black and "
        f"JSON layout, flake8 findings need a hand:\n{result.stdout[-20000:]}\n{result.stderr[-20000:]}"
    )


def seen_by(tool: str) -> set[str]:
    """The Python files ``tool`` looked at in its run on ``.`` with the repository's settings."""
    pattern, stream = SEEN[tool]
    found = re.findall(pattern, getattr(check(tool), stream), flags=re.M)
    return {relative(n if isinstance(n, str) else next(filter(None, n))) for n in found}


@pytest.mark.parametrize("tool", ["isort", "black", "flake8"])
def test_every_python_file_is_checked(tool):
    expected = git_files("*.py")
    assert "bundle/__init__.py" in expected and ".ci/format_json.py" in expected
    missed = sorted(expected - seen_by(tool))
    assert not missed, f"{tool} skips {missed}: its exclude settings drop files the model zoo would check"


def load_format_json():
    spec = importlib.util.spec_from_file_location("format_json", ROOT / ".ci" / "format_json.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_json_check_covers_every_json_file():
    assert set(load_format_json().json_files()) == git_files("*.json")


def test_json_layout_is_pretty_format_json():
    """Key order kept (--no-sort-keys), 4 spaces, ASCII escapes, ", "/": " separators, one final newline."""
    pretty = load_format_json().pretty_format('{"b": [1, {"x": null}], "a": {}, "é": "ü", "n": []}')
    assert pretty == (
        "{\n"
        '    "b": [\n'
        "        1,\n"
        "        {\n"
        '            "x": null\n'
        "        }\n"
        "    ],\n"
        '    "a": {},\n'
        '    "\\u00e9": "\\u00fc",\n'
        '    "n": []\n'
        "}\n"
    )
