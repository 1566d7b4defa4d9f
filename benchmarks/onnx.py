"""ONNX Runtime against PyTorch on the CPU: one view of the network, exported as ``monai.bundle onnx_export`` exports
it (``bundle.networks.onnx``), on the same batches.

"pytorch" is the view (``network_def``: class logits, or ``network_def_seg``: lung logits) in float32 under
``torch.no_grad()``; "onnxruntime" is its ONNX file in an ``InferenceSession`` on the CPU provider with as many
threads as torch uses. Batches of the two sides are interleaved, in alternating order, and the median batch time is
used, so that load from other processes affects both alike. The figure is ``onnxruntime_speedup``: onnxruntime's
images/s over PyTorch's (higher is better; above 1, onnxruntime is faster). Random weights unless ``--ckpt``.
The CPU only: ``--device`` given to ``all`` does not reach this suite.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import, set_determinism

from bundle.errors import fail
from bundle.networks import MultiTaskClassifier, MultiTaskSegmenter
from bundle.networks.onnx import INPUT_NAME, to_onnx
from bundle.settings import option
from bundle.values import integer

from .inference import load_checkpoint
from .memory import memory_note, peak_memory_mb, reset_peak
from .options import add_common_arguments, choose_device, settings
from .report import make_report
from .timing import IterationTimer

ort, has_ort = optional_import("onnxruntime")
_, has_onnx = optional_import("onnx")

DEVICES = ("cpu",)  # the devices this suite measures on (``benchmarks.cli.all_runs`` passes no other)
VIEWS = {
    "classification": ("network_def", MultiTaskClassifier),
    "segmentation": ("network_def_seg", MultiTaskSegmenter),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags."""
    add_common_arguments(parser, warmup=2, iters=10, batch_size=8)
    parser.add_argument("--view", default="classification", choices=list(VIEWS), help="default classification")
    parser.add_argument("--num_classes", type=option(integer(1)), default=4, help="default 4")
    parser.add_argument("--ckpt", default=None, help="optional model.pt (speed does not depend on the weights)")


def onnx_session(path: str | Path, threads: int) -> Any:
    """An onnxruntime session of ``path`` on the CPU provider with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check(args: argparse.Namespace) -> torch.device:
    """The CPU device; stop with one message for another device, a missing ``--ckpt`` or a missing package."""
    if args.device not in (None, *DEVICES):
        fail(f"--device {args.device}: the onnx suite compares onnxruntime's CPU provider with PyTorch on the CPU")
    if args.ckpt and not os.path.isfile(args.ckpt):
        fail(f"--ckpt {args.ckpt}: file not found (it is optional: speed does not depend on the weights)")
    if not (has_ort and has_onnx):
        fail("the onnx suite needs onnx and onnxruntime, not installed here: pip install -r requirements-deploy.txt")
    return choose_device("cpu")


def _time_sides(sides: dict, x: torch.Tensor, args: argparse.Namespace) -> tuple[dict, dict]:
    """Median seconds per batch and first-batch peak memory (MiB) of each side, batches interleaved."""
    device = x.device
    timers = {side: IterationTimer(device, args.warmup, args.iters) for side in sides}
    peak: dict[str, float] = {}
    reset_peak(device)
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            # alternate which side goes first: the second of a pair runs measurably faster on CPU (warm caches)
            for side, infer in list(sides.items())[:: 1 if i % 2 == 0 else -1]:
                timers[side].start()
                infer(x)
                timers[side].tick(args.batch_size)
                if i == 0:
                    peak[side] = peak_memory_mb(device)
                    reset_peak(device)
    return {side: t.median_seconds() for side, t in timers.items()}, peak


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export the view, time both sides on interleaved batches; return the report."""
    device = _check(args)
    setup = settings(args, device, view=args.view)
    net_id, view = VIEWS[args.view]
    set_determinism(seed=0)
    net = view(num_classes=args.num_classes, backbone=args.backbone)
    if args.ckpt:
        load_checkpoint(net, args.ckpt, args)
    net = net.eval()
    x = torch.rand(args.batch_size, 1, args.image_size, args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        path, start = Path(folder) / f"{net_id}.onnx", time.perf_counter()
        to_onnx(net, net_id, path, args.image_size)
        export_s = time.perf_counter() - start
        sess = onnx_session(path, torch.get_num_threads())
    sides = {"pytorch": net, "onnxruntime": lambda t: sess.run(None, {INPUT_NAME: t.numpy()})}
    seconds, peak = _time_sides(sides, x, args)
    speedup = seconds["pytorch"] / seconds["onnxruntime"]
    return make_report(
        "onnx",
        f"onnxruntime (CPU provider) vs PyTorch, {net_id}, same batches (median of interleaved batches)",
        "images/s",
        {side: args.batch_size / s for side, s in seconds.items()},
        "onnxruntime_speedup",
        speedup,
        f"onnxruntime runs at {speedup:.2f} x PyTorch's images/s (higher is better; above 1, onnxruntime is faster)",
        peak,
        setup,
        {
            "onnxruntime_version": ort.__version__,
            "onnxruntime_threads": torch.get_num_threads(),
            "export_s": round(export_s, 1),
            "weights": args.ckpt or "random (speed does not depend on them)",
            "memory": memory_note(device),
        },
    )
