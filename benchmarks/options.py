"""The flags every suite shares, the device it measures on, and what a result was measured with (``settings``).

Each value is checked at parsing (``bundle.settings.option``), so that a wrong flag stops before any measuring.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from bundle import workflow
from bundle.errors import fail
from bundle.settings import option
from bundle.values import integer, output_folder

__all__ = [
    "add_common_arguments",
    "add_data_arguments",
    "add_speed_arguments",
    "check_output_file",
    "choose_device",
    "settings",
]


def add_common_arguments(
    parser: argparse.ArgumentParser, *, warmup: int, iters: int, batch_size: int, image_size: int = 224
) -> None:
    """The flags every suite takes (each suite chooses its defaults); values out of range stop at parsing."""
    parser.add_argument(
        "--warmup", type=option(integer(0)), default=warmup, help=f"untimed iterations first (default {warmup})"
    )
    parser.add_argument("--iters", type=option(integer(1)), default=iters, help=f"timed iterations (default {iters})")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu"
    )
    parser.add_argument(
        "--threads", type=option(integer(0)), default=0, help="torch CPU threads (default 0: torch's default)"
    )
    parser.add_argument(
        "--image_size", type=option("image_size"), default=image_size, help=f"a multiple of 32 (default {image_size})"
    )
    parser.add_argument("--batch_size", type=option(integer(1)), default=batch_size, help=f"default {batch_size}")
    parser.add_argument(
        "--backbone", type=option("backbone"), default="resnet18", help="FlexibleUNet encoder (default resnet18)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def add_data_arguments(parser: argparse.ArgumentParser, num_workers: int = 2) -> None:
    """The flags of the suites that run a bundle workflow on a dataset."""
    parser.add_argument(
        "--dataset_dir",
        default=str(workflow.ROOT / "data" / "sample"),
        help="a folder with datalist.json; its images are repeated as needed (default: the bundle's data/sample)",
    )
    parser.add_argument(
        "--num_workers",
        type=option(integer(0)),
        default=num_workers,
        help=f"workflow DataLoader workers (default {num_workers})",
    )


SPEED_HELP = {
    "channels_last": "true/false: channels_last memory format (config id channels_last; default: the config's)",
    "compile": "true/false: torch.compile the network (config id compile; default: the config's)",
    "amp_dtype": "bfloat16 | float16: the autocast dtype under AMP, i.e. on CUDA (config id amp_dtype; default: the "
    "config's)",
}


def add_speed_arguments(parser: argparse.ArgumentParser, ids: tuple[str, ...] = tuple(SPEED_HELP)) -> None:
    """``--channels_last``, ``--compile``, ``--amp_dtype`` (or those of ``ids``): config ids set on both sides, only
    when given."""
    for name in ids:
        parser.add_argument(f"--{name}", type=option(name), default=None, help=SPEED_HELP[name])


def check_output_file(option: str, path: str | os.PathLike | None) -> None:
    """Stop before any measuring when ``path`` cannot be written: a folder, under a file, or read-only."""
    if not path:
        return
    target = Path(path).absolute()
    if target.is_dir():
        fail(f"{option} {path} is a folder; give a file name such as {Path(path) / 'benchmark.json'}")
    problem = output_folder(target.parent)
    if problem:
        fail(f"{option} {path}: its folder {target.parent} {problem}")


def choose_device(name: str | None) -> torch.device:
    """``cpu`` / ``cuda``, or cuda when available for ``None``."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: CUDA is not available on this machine (torch sees no GPU); use --device cpu")
    return torch.device(name)


def settings(args: argparse.Namespace, device: torch.device, **extra: Any) -> dict[str, Any]:
    """What a result was measured with (the ``settings`` of a report); sets the thread count from ``--threads``."""
    # the command line checks these at parsing; a Namespace built in code is checked here
    problems = [
        f"--{name} must be an integer >= {lo}, got {getattr(args, name)!r}"
        for name, lo in (("iters", 1), ("warmup", 0), ("threads", 0), ("batch_size", 1), ("image_size", 32))
        if not isinstance(getattr(args, name), int) or getattr(args, name) < lo
    ]
    if problems:
        fail("; ".join(problems))
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = extra.pop("amp_dtype", None)  # a suite's SpeedUp.as_settings(): the autocast dtype belongs to precision
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": f"AMP {dtype or 'float16'}" if device.type == "cuda" else "fp32",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "iters": args.iters,
        **extra,
    }
