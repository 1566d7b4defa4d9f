"""The command line of ``python -m benchmarks``: each suite measures a bundle workflow (or inference mode) against a
plain reference.

``SUITES`` maps a suite's name to its module; every module has ``add_arguments(parser)`` and ``run(args) -> report``
(a dict with ``benchmarks.report.REPORT_KEYS``). ``ALL_RUNS`` is what ``all`` runs: every suite, the contrastive
suite once per method (SimCLR, MoCo, BYOL, SimSiam, MICLe); ``scale`` runs only on its own. ``gpu`` is the GPU
check (``benchmarks.gpu``): several suites and more, each part in a process of its own, within a time budget.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from bundle.settings import option
from bundle.values import integer

from . import cache, gpu, inference, inpainting, onnx, pretrain, scale, train
from .options import add_speed_arguments, check_output_file
from .report import REPORT_KEYS, print_report, write_json
from .workflows import speed_overrides

__all__ = ["SUITES", "ALL_RUNS", "REPORT_KEYS", "all_runs", "build_parser", "run_suite", "main"]

PROG = "python -m benchmarks"
SUITES: dict[str, ModuleType] = {
    "train": train,
    "pretrain": pretrain,
    "inpainting": inpainting,
    "inference": inference,
    "cache": cache,
    "onnx": onnx,
    "scale": scale,
}


# what `all` runs, in order: (result key, suite, the suite's own flags); not scale, which builds a 100,000-entry
# datalist and takes many minutes: it runs on its own
ALL_RUNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("train", "train", ()),
    *((f"pretrain:{m}", "pretrain", ("--method", m)) for m in pretrain.METHODS),
    ("pretrain:micle", "pretrain", ("--method", "simclr", "--multi_instance")),
    ("inpainting", "inpainting", ()),
    ("inference", "inference", ()),
    ("cache", "cache", ()),
    ("onnx", "onnx", ()),
)
# flags of `all` that reach every suite that has them, only when given (otherwise each suite keeps its default)
PASSED_ON = (
    "device",
    "threads",
    "warmup",
    "iters",
    "image_size",
    "batch_size",
    "backbone",
    "dataset_dir",
    "num_workers",
    "channels_last",
    "compile",
    "amp_dtype",
)


def _suite_names(text: str) -> list[str]:
    """``train,pretrain`` -> ["train", "pretrain"] (each a suite name)."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    unknown = [n for n in names if n not in SUITES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"give suite names among {', '.join(SUITES)}, got {text!r}")
    return names


def suite_parser(name: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The parser of one suite's flags (a new one, or ``parser`` filled in)."""
    parser = parser or argparse.ArgumentParser(prog=f"{PROG} {name}")
    SUITES[name].add_arguments(parser)
    return parser


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """``<suite> [flags]`` for each suite, and ``all`` (every suite with its defaults)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, module in SUITES.items():
        suite_parser(name, sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    every = sub.add_parser(
        "all",
        help="every suite, the contrastive one for each method (simclr, moco, byol, simsiam, MICLe); "
        "a flag given here reaches every suite that has it, the rest keep each suite's defaults",
    )
    every.add_argument(
        "--suites",
        type=_suite_names,
        default=list(SUITES),
        help=f"comma-separated suites to run (default all: {','.join(SUITES)})",
    )
    every.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    every.add_argument(
        "--threads", type=option(integer(0)), default=None, help="torch CPU threads (default: torch's default)"
    )
    every.add_argument("--warmup", type=option(integer(0)), default=None, help="default: each suite's")
    every.add_argument("--iters", type=option(integer(1)), default=None, help="default: each suite's")
    every.add_argument("--image_size", type=option("image_size"), default=None, help="default: each suite's (224)")
    every.add_argument("--batch_size", type=option(integer(1)), default=None, help="default: each suite's")
    every.add_argument("--backbone", type=option("backbone"), default=None, help="default: each suite's (resnet18)")
    every.add_argument("--dataset_dir", default=None, help="default: the bundle's data/sample")
    every.add_argument("--num_workers", type=option(integer(0)), default=None, help="default: each suite's (2)")
    add_speed_arguments(every)
    every.add_argument("--json", default=None, help="also write the results to this JSON file")
    gpu.add_arguments(
        sub.add_parser(
            "gpu",
            help="the GPU check: every GPU figure in one run of at most 8 minutes (--dry: on the CPU, toy sizes)",
            description=(gpu.__doc__ or "").split("\n\n")[0],
        )
    )
    return parser


def all_runs(args: argparse.Namespace) -> list[tuple[str, str, argparse.Namespace]]:
    """The runs of ``all`` for its parsed ``args``: (result key, suite, that suite's parsed flags).

    Each suite starts from its own defaults; a flag of ``all`` that was given replaces the default of every suite
    that has the flag (``--num_workers`` and the speed flags reach the training suites only; ``--device`` does not
    reach a suite whose ``DEVICES`` lack it: onnx measures the CPU). A speed flag whose
    config id a training config lacks stops here, before any measuring.
    """
    runs = []
    for key, name, flags in ALL_RUNS:
        if name not in args.suites:
            continue
        suite_args = suite_parser(name).parse_args(list(flags))
        for dest in PASSED_ON:
            value = getattr(args, dest, None)
            if dest == "device" and value not in getattr(SUITES[name], "DEVICES", (value,)):
                continue  # a suite that measures on one device only (onnx: the CPU) keeps it
            if value is not None and hasattr(suite_args, dest):
                setattr(suite_args, dest, value)
        if hasattr(suite_args, "channels_last"):
            speed_overrides(suite_args, SUITES[name].CONFIG)
        runs.append((key, name, suite_args))
    return runs


def run_suite(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one suite with parsed ``args``; print and return its report."""
    report = SUITES[name].run(args)
    print_report(report)
    return report


def main(argv: Sequence[str] | None = None, description: str | None = None) -> dict[str, dict[str, Any]]:
    """Parse the command line, run the chosen suite(s), print each report; returns ``{suite: report}`` (``gpu``:
    the check's results, ``benchmarks.gpu.run``).

    A bad flag stops at parsing (argparse, exit 2); a missing dataset, weights file or device, or an
    unwritable ``--json``, stops before any measuring with one message (exit 1).
    """
    args = build_parser(description).parse_args(argv)
    if args.suite == "gpu":
        return gpu.run(args)
    check_output_file("--json", args.json)  # before measuring, not after
    results: dict[str, dict[str, Any]] = {}
    runs = all_runs(args) if args.suite == "all" else [(args.suite, args.suite, args)]  # flags checked up front
    for key, name, suite_args in runs:
        results[key] = run_suite(name, suite_args)
        if args.json:  # after every suite: a long `all` that stops half-way keeps what it measured
            write_json(args.json, results)
    if args.json:
        print(f"results written to {args.json}", flush=True)
    return results
