"""``python -m benchmarks <suite> [flags]``, from the repository root: the suites ``benchmarks.cli`` lists."""

from __future__ import annotations

import functools

import benchmarks
from bundle.errors import run_main

from .cli import main

if __name__ == "__main__":
    run_main(functools.partial(main, description=benchmarks.__doc__))
