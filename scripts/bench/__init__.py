"""Benchmark suites of the bundle: each measures a bundle workflow (or inference mode) against a plain reference.

``SUITES`` maps a suite's name to its module; every module has ``add_arguments(parser)`` and ``run(args) -> report``
(a dict with ``harness.REPORT_KEYS``). ``main`` is the command line of ``scripts/benchmark.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from bundle.settings import integer, option

from . import inference, inpainting, pretrain, train
from .harness import REPORT_KEYS, check_output_file, print_report, write_json

__all__ = ["SUITES", "REPORT_KEYS", "build_parser", "run_suite", "main"]

SUITES: dict[str, ModuleType] = {"train": train, "pretrain": pretrain, "inpainting": inpainting, "inference": inference}


def suite_parser(name: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The parser of one suite's flags (a new one, or ``parser`` filled in)."""
    parser = parser or argparse.ArgumentParser(prog=f"benchmark.py {name}")
    SUITES[name].add_arguments(parser)
    return parser


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """``<suite> [flags]`` for each suite, and ``all`` (every suite with its defaults)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, module in SUITES.items():
        suite_parser(name, sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    every = sub.add_parser("all", help="every suite with its defaults (--device and --threads apply to all)")
    every.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    every.add_argument(
        "--threads", type=option(integer(0)), default=0, help="torch CPU threads (default 0: torch's default)"
    )
    every.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser


def run_suite(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one suite with parsed ``args``; print and return its report."""
    report = SUITES[name].run(args)
    print_report(report)
    return report


def main(argv: Sequence[str] | None = None, description: str | None = None) -> dict[str, dict[str, Any]]:
    """Parse the command line, run the chosen suite(s), print each report; returns ``{suite: report}``.

    A bad flag stops at parsing (argparse, exit 2); a missing dataset, weights file or device, or an
    unwritable ``--json``, stops before any measuring with one message (exit 1).
    """
    args = build_parser(description).parse_args(argv)
    check_output_file("--json", args.json)  # before measuring, not after
    if args.suite == "all":
        results = {}
        for name in SUITES:
            suite_args = suite_parser(name).parse_args([])
            suite_args.device, suite_args.threads = args.device, args.threads
            results[name] = run_suite(name, suite_args)
    else:
        results = {args.suite: run_suite(args.suite, args)}
    if args.json:
        write_json(args.json, results)
        print(f"results written to {args.json}", flush=True)
    return results
