"""Cache memory: bytes of tensors and peak RSS growth per cached image, for each cache precision and set size.

Each (``--cache_dtype``, ``--sizes``) pair builds a memory cache (``bundle.data.cache.cached_dataset``, MONAI's
``CacheDataset``) of synthetic radiographs in a subprocess of its own, so that the peaks of different runs never
mix. The images go through configs/train.json's own loading transforms (resize, labels, ``Compactd``) with a
synthetic reader in place of ``LoadCXRd``: a (1, image_size, image_size) image in [0, 1] and a 0/1 mask per entry,
made from its index, so no file is read and the figures do not depend on a disk. Reported per image: the bytes of
the cached tensors (from the cache's contents) and the growth of the process's peak resident set size (VmHWM, after
the transforms are built) while the cache is built; ``value`` is the peak RSS growth per image with uint8 at the
largest size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

from bundle import workflow
from bundle.errors import fail
from bundle.settings import option
from bundle.values import integer

from .memory import reset_peak, status_kb
from .options import add_common_arguments, settings
from .report import make_report

CONFIG = "train"
RESULT = "CACHE_RESULT "  # the line a child prints its measurements on


def _sizes(text: str) -> list[int]:
    """``1000,10000`` -> [1000, 10000] (each an integer >= 1)."""
    values = [option(integer(1))(part.strip()) for part in str(text).split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give one or more set sizes, e.g. 1000,10000")
    return values


def _dtypes(text: str) -> list[str]:
    """``uint8,float32`` -> ["uint8", "float32"] (each a ``cache_dtype``)."""
    values = [option("cache_dtype")(part.strip().lower()) for part in str(text).split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give one or more of uint8, uint16, float32")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags (``--warmup``, ``--iters``, ``--batch_size`` and ``--backbone`` are taken and unused)."""
    add_common_arguments(parser, warmup=0, iters=1, batch_size=16)
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=[1000, 10000],
        help="cached images per run, comma-separated (default 1000,10000)",
    )
    parser.add_argument(
        "--cache_dtype",
        type=_dtypes,
        default=["uint8", "float32"],
        help="cache precisions, comma-separated (default uint8,float32)",
    )


class SyntheticCXRd(MapTransform):
    """In place of ``LoadCXRd``: entry ``{"index", "label"}`` -> a (1, S, S) [0, 1] image, its 0/1 mask, has_mask.

    A MONAI transform, so that ``CacheDataset`` caches from the first step on, as it does after ``LoadCXRd``.
    """

    def __init__(self, image_size: int) -> None:
        super().__init__(keys="index")
        self.image_size = image_size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        generator = torch.Generator().manual_seed(int(d["index"]))
        image = torch.rand(1, self.image_size, self.image_size, generator=generator)
        d.update(
            image=image, mask=(image > 0.5).float(), has_mask=torch.tensor(1.0), image_path=f"synthetic_{d['index']}"
        )
        return d


def measure(size: int, cache_dtype: str, image_size: int) -> dict[str, Any]:
    """Build one memory cache of ``size`` synthetic images in this process; the figures per image (run in a child)."""
    from monai.transforms import Compose

    from bundle.data.cache import cached_dataset
    from bundle.data.precision import cached_bytes

    (loading,) = workflow.parsed(CONFIG, {"image_size": image_size, "cache_dtype": cache_dtype}, "load_transforms")
    transform = Compose([SyntheticCXRd(image_size), *loading[1:]])  # the config's steps after its reader
    entries = [{"index": i, "label": i % 4} for i in range(size)]
    transform(dict(entries[0]))  # first-call allocations (kernels, caches) before the baseline
    gc.collect()
    exact_peak = reset_peak(torch.device("cpu"))
    baseline_kb = status_kb("VmRSS") or 0
    start = time.perf_counter()
    dataset = cached_dataset(entries, transform, cache="memory", num_workers=0)
    seconds = time.perf_counter() - start
    peak_kb, rss_kb = status_kb("VmHWM") or 0, status_kb("VmRSS") or 0
    tensor_bytes = sum(cached_bytes(item) for item in dataset._cache)
    if not tensor_bytes:  # nothing cached: the figures would measure nothing
        raise RuntimeError("the cache holds no tensors: its transforms did not run at caching time")
    return {
        "size": size,
        "cache_dtype": cache_dtype,
        "tensor_bytes_per_image": tensor_bytes / size,
        "peak_rss_growth_per_image": (peak_kb - baseline_kb) * 1024 / size,
        "rss_growth_per_image": (rss_kb - baseline_kb) * 1024 / size,
        "peak_rss_mb": peak_kb / 1024,
        "baseline_rss_mb": baseline_kb / 1024,
        "build_images_per_s": size / seconds if seconds > 0 else float("inf"),
        "exact_peak": exact_peak,
    }


def _child(size: int, cache_dtype: str, image_size: int, threads: int) -> dict[str, Any]:
    """``measure`` in a fresh interpreter: its peak RSS is this run's alone."""
    code = (
        "import json, sys, torch; from benchmarks.cache import RESULT, measure; "
        f"torch.set_num_threads({threads}) if {threads} else None; "
        f"print(RESULT + json.dumps(measure({size}, {cache_dtype!r}, {image_size})), flush=True)"
    )
    # the child imports this package whatever the working folder: the repository root goes first on its path
    root = str(workflow.ROOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        fail(f"cache benchmark ({size} images, {cache_dtype}) failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every (precision, size) run in its own subprocess; return the report."""
    device = torch.device("cpu")  # a host-memory measurement, whatever --device says
    setup = settings(args, device, sizes=list(args.sizes), cache_dtype=list(args.cache_dtype), cache="memory")
    runs = [_child(n, name, args.image_size, args.threads) for name in args.cache_dtype for n in args.sizes]
    label = {id(r): f"{r['cache_dtype']} x {r['size']}" for r in runs}
    largest = max(args.sizes)
    headline = next(
        (r for r in runs if r["cache_dtype"] == "uint8" and r["size"] == largest),
        next(r for r in runs if r["size"] == largest),
    )
    kb = headline["peak_rss_growth_per_image"] / 1024
    others = "; ".join(
        f"{r['cache_dtype']}: {r['peak_rss_growth_per_image'] / 1024:.1f} KB"
        for r in runs
        if r["size"] == largest and r is not headline
    )
    details = {
        label[id(r)]: (
            f"tensors {r['tensor_bytes_per_image'] / 1024:.1f} KB/image, peak RSS growth "
            f"{r['peak_rss_growth_per_image'] / 1024:.1f} KB/image (resident after {r['rss_growth_per_image'] / 1024:.1f}"
            f" KB/image), peak RSS {r['peak_rss_mb']:.0f} MiB from {r['baseline_rss_mb']:.0f} MiB"
        )
        for r in runs
    }
    details["memory"] = "peak resident set size (VmHWM) of a fresh process per run, growth from after the set-up" + (
        "" if all(r["exact_peak"] for r in runs) else " (VmHWM could not be reset: the peaks include the set-up)"
    )
    return make_report(
        "cache",
        f"memory cache of synthetic {args.image_size} x {args.image_size} images (configs/train.json loading "
        "transforms), one subprocess per run",
        "images/s",
        {label[id(r)]: r["build_images_per_s"] for r in runs},
        "peak_rss_kb_per_image",
        kb,
        f"a cached image costs {kb:.1f} KB of peak RSS with {headline['cache_dtype']} at {largest} images"
        + (f" ({others})" if others else "")
        + "; lower is better",
        {label[id(r)]: r["peak_rss_mb"] for r in runs},
        setup,
        details,
    )
