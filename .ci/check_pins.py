"""Check that the pinned requirements resolve, as binary wheels, for every Python the bundle supports.

    python .ci/check_pins.py                      # Python 3.10 (the model zoo's CI) and 3.11
    python .ci/check_pins.py --python 3.10 -r requirements.txt

Runs ``pip install --dry-run --ignore-installed --only-binary=:all: --python-version X`` per version, so nothing is
installed; exits 1 naming the version and pip's error when a pin has no build for it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11")


def resolve(python: str, requirements: list[Path]) -> tuple[bool, str]:
    """Dry-run resolution of ``requirements`` for ``python``; returns (resolved, pip's last lines)."""
    with tempfile.TemporaryDirectory() as target:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:"]
        cmd += ["--python-version", python, "--target", target, "--quiet", "--report", "-"]
        for r in requirements:
            cmd += ["-r", str(r)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if "ERROR" in line] or proc.stderr.splitlines()[-5:]
        return False, "\n".join(lines)
    report = json.loads(proc.stdout)
    return True, f"{len(report['install'])} packages resolve"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", action="append", help="Python version (repeatable); default 3.10 and 3.11")
    parser.add_argument("-r", dest="requirements", action="append", type=Path, help="requirements file (repeatable)")
    args = parser.parse_args(argv)
    requirements = args.requirements or [ROOT / "requirements-dev.txt"]
    failed = 0
    for python in args.python or PYTHONS:
        ok, message = resolve(python, requirements)
        print(f"Python {python}: {'ok' if ok else 'FAILED'}: {message}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
