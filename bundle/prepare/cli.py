"""Command line of ``scripts/prepare_dataset.py``: one subcommand per source layout."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ..data.datalist import RULES as DATALIST_RULES
from ..errors import debug_enabled
from ..values import integer, option, output_folder
from .cache import CacheSpec
from .layouts import LAYOUTS
from .pipeline import Options, prepare
from .records import PrepareError

__all__ = ["build_parser", "main"]

DESCRIPTION = """Turn a public chest X-ray dataset or a hospital DICOM folder into the bundle's datalist.

Writes OUT/datalist.json (patient-grouped, class-stratified, seeded training/validation/test sections) and
OUT/summary.json (counts per class and split, files left out and why, exact duplicates), and prints the
training command. See docs/prepare_dataset.md for each dataset."""


def _add_source(p: argparse.ArgumentParser) -> None:
    """Where the dataset is read from and the datalist written to."""
    p.add_argument("--src", required=True, help="the dataset folder, as downloaded and unpacked")
    p.add_argument("--out", required=True, help="output folder for datalist.json and summary.json")
    p.add_argument("--name", help="datalist name (default: layout and source folder name)")


def _add_split(p: argparse.ArgumentParser) -> None:
    """The shares of patients for validation and test, and the seed."""
    p.add_argument(
        "--val-fraction",
        type=option(DATALIST_RULES["val_fraction"], "val_fraction"),
        default=0.15,
        help="share of each class's patients for validation (default: %(default)s)",
    )
    p.add_argument(
        "--test-fraction",
        type=option(DATALIST_RULES["val_fraction"], "val_fraction"),
        default=0.15,
        help="share of each class's patients for test (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")


def _add_files(p: argparse.ArgumentParser) -> None:
    """How files are read, checked and cached, and how their paths are written."""
    p.add_argument(
        "--workers",
        type=option(integer(1)),
        default=min(8, os.cpu_count() or 1),
        help="processes that read files (default: %(default)s)",
    )
    p.add_argument("--cache-dir", help="write resized PNG copies here and point the datalist at them (resumable)")
    p.add_argument(
        "--cache-size", type=option(integer(8)), default=256, help="cached image side in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--cache-keep-aspect",
        action="store_true",
        help="cache with the longest side = --cache-size instead of squashing to a square",
    )
    p.add_argument("--cache-bits", type=int, choices=(8, 16), default=8, help="cached PNG bit depth (default: 8)")
    p.add_argument(
        "--no-decode",
        action="store_true",
        help="do not decode images to check them (faster; corrupt files then fail during training)",
    )
    p.add_argument(
        "--paths",
        choices=("auto", "relative", "absolute"),
        default="auto",
        help="image paths in the datalist: auto = relative when under --out, else absolute",
    )


def _add_classes(p: argparse.ArgumentParser, layout: ModuleType) -> None:
    """Class selection and the official test set, where the layout has them."""
    if layout.SINGLE_LABEL:
        p.add_argument(
            "--classes",
            nargs="+",
            metavar="CLASS",
            help="keep only these classes, in this order (default: all, negative class first)",
        )
        p.add_argument(
            "--class-map",
            nargs="+",
            metavar="OLD=NEW",
            default=[],
            help="rename or merge classes, e.g. 'lung_opacity=pneumonia'",
        )
    if layout.OFFICIAL_TEST:
        p.add_argument(
            "--official-test",
            action="store_true",
            help=f"use the dataset's own test set as the test section: {layout.OFFICIAL_TEST}; "
            "--val-fraction then splits the rest, --test-fraction is unused",
        )


def _add_common(p: argparse.ArgumentParser, layout: ModuleType) -> None:
    """The options every layout shares, in the order ``--help`` lists them."""
    _add_source(p)
    _add_split(p)
    _add_files(p)
    _add_classes(p, layout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per layout."""
    parser = argparse.ArgumentParser(
        prog="prepare_dataset.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="layout", required=True, metavar="layout")
    for name, layout in LAYOUTS.items():
        p = sub.add_parser(
            name, help=layout.HELP, description=layout.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _add_common(p, layout)
        layout.add_arguments(p)
    return parser


def _check_output_folder(option: str, path: str) -> None:
    """Stop early when ``path`` cannot become a folder we write to: it is a file, lies under a file, or the
    nearest existing folder above it is read-only. Nothing is created here."""
    problem = output_folder(path)
    if problem:
        raise PrepareError(f"{option} {path} {problem}")


def _check_paths(args: argparse.Namespace) -> None:
    """--src, --out and --cache-dir, before the (possibly long) scan."""
    if not os.path.isdir(args.src):
        kind = "a file" if os.path.exists(args.src) else "not found"
        raise PrepareError(f"--src {args.src} is not a folder ({kind}); give the unpacked dataset folder")
    _check_output_folder("--out", args.out)
    if args.cache_dir:
        _check_output_folder("--cache-dir", args.cache_dir)
        if os.path.realpath(args.cache_dir) == os.path.realpath(args.src):
            # the cached PNGs would be written over the source images of the same name
            raise PrepareError(
                f"--cache-dir {args.cache_dir} is the --src folder: the cache would overwrite the source images; "
                "give it a folder of its own (a folder inside --src is fine: it is not scanned)"
            )


def _options(args: argparse.Namespace) -> Options:
    if args.val_fraction + args.test_fraction >= 1:
        raise PrepareError(
            f"--val-fraction {args.val_fraction} plus --test-fraction {args.test_fraction} must be below 1 "
            "(the rest is the training section)"
        )
    cache = None
    if args.cache_dir:
        try:
            cache = CacheSpec(os.path.abspath(args.cache_dir), args.cache_size, args.cache_keep_aspect, args.cache_bits)
        except ValueError as e:
            raise PrepareError(f"--cache-size/--cache-bits: {e}") from None
    record = {k: v for k, v in sorted(vars(args).items()) if k not in ("src", "out", "exclude")}
    return Options(
        src=args.src,
        out=args.out,
        layout=args.layout,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        official_test=getattr(args, "official_test", False),
        cache=cache,
        workers=args.workers,
        decode=not args.no_decode,
        paths=args.paths,
        record=record,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 done, 2 the source cannot be prepared).

    A source that cannot be prepared (a missing label file, a wrong option value) ends in one ``error:`` line;
    in debug mode (``CXR_DEBUG=1``) the ``PrepareError`` propagates with its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        if not args.src.strip():  # Path("") is the working folder: never scan it by accident
            raise PrepareError("--src is empty; give the unpacked dataset folder")
        args.src = str(Path(args.src).absolute())
        args.exclude = [os.path.abspath(p) for p in (args.out, args.cache_dir) if p]  # never scan our own output
        _check_paths(args)
        options = _options(args)
        scan = LAYOUTS[args.layout].scan(args)
        prepare(scan, options)
    except PrepareError as e:
        if debug_enabled():
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
