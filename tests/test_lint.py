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

from tests.conftest import ROOT

# The same commands as the Makefile's lint target, run on the whole repository.
CHECKS = {
    "isort": [sys.executable, "-m", "isort", "--check-only", "--diff", "."],
    "black": [sys.executable, "-m", "black", "--check", "."],
    "flake8": [sys.executable, "-m", "flake8", "."],
    "json": [sys.executable, ".ci/format_json.py", "--check"],
}


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def git_files(pattern: str) -> set[str]:
    """Tracked files matching ``pattern`` plus untracked ones git does not ignore, as paths relative to ROOT."""
    names = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        out = subprocess.run(
            ["git", "ls-files", *extra, "--", pattern], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        names.update(line for line in out.splitlines() if (ROOT / line).is_file())
    return names


def relative(path: str) -> str:
    path = path.strip()
    root = ROOT.as_posix() + "/"
    return path[len(root) :] if path.startswith(root) else path.removeprefix("./")


@pytest.mark.parametrize("tool", sorted(CHECKS))
def test_check_passes(tool):
    result = run(CHECKS[tool])
    assert result.returncode == 0, (
        f"{' '.join(CHECKS[tool][1:])} failed (exit {result.returncode}); `make format` fixes isort, black and "
        f"JSON layout, flake8 findings need a hand:\n{result.stdout}\n{result.stderr}"
    )


def seen_by(tool: str) -> set[str]:
    """The Python files ``tool`` looks at when run on ``.`` with the repository's settings."""
    if tool == "isort":
        result = run([sys.executable, "-m", "isort", "--show-files", "."])
        names = result.stdout.splitlines()
    elif tool == "black":
        result = run([sys.executable, "-m", "black", "--check", "--verbose", "."])
        pattern = r"^(?:would reformat (.+\.pyi?)|(.+\.pyi?) (?:already well formatted|wasn't modified on disk))"
        names = [a or b for a, b in re.findall(pattern, result.stderr, flags=re.M)]
    else:  # flake8 logs every file its discovery keeps
        result = run([sys.executable, "-m", "flake8", "-vv", "--exit-zero", "."])
        names = re.findall(r'"(.+\.py)" has not been excluded', result.stderr)
    return {relative(n) for n in names}


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
