"""Saliency cost: ``SaliencyInferer`` with a saliency method against method ``none`` on the same network and batches.

"plain" is what ``configs/inference.json`` computes with ``--saliency none`` (class logits and the lung
segmentation from one encoder pass); "saliency" adds the map (default Grad-CAM++) exactly as the inference run does,
through ``bundle.saliency.SaliencyInferer`` under ``torch.no_grad()`` (and autocast on CUDA) like MONAI's evaluator.
Batches of the two modes are interleaved, in alternating order, and the median batch time is used, so that load
from other processes on a shared machine affects both alike. The figure is ``saliency_cost_ratio``: how many plain
passes one pass with saliency costs (lower is better). ``--channels_last`` and ``--amp_dtype`` set what
configs/inference.json sets on CUDA (channels-last weights, the autocast dtype); without them the network keeps
PyTorch's defaults (contiguous weights, float16 autocast).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from monai.utils import set_determinism

from bundle.checkpoints import load_weights
from bundle.errors import fail
from bundle.networks import MultiTaskClassifier
from bundle.saliency import SaliencyInferer
from bundle.settings import option
from bundle.values import as_bool, integer

from .memory import memory_note, peak_memory_mb, reset_peak
from .options import add_common_arguments, add_speed_arguments, choose_device, settings
from .report import make_report
from .timing import IterationTimer
from .workflows import SpeedUp

CONFIG = "inference"  # the config whose ids --channels_last and --amp_dtype are
TARGET_RATIO = 2.5  # saliency may cost at most 2.5x a plain pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags."""
    add_common_arguments(parser, warmup=1, iters=6, batch_size=8)
    parser.add_argument(
        "--saliency", default="gradcampp", choices=["gradcampp", "gradcam", "occlusion"], help="default gradcampp"
    )
    parser.add_argument("--num_classes", type=option(integer(1)), default=4, help="default 4")
    parser.add_argument("--ckpt", default=None, help="optional model.pt (speed does not depend on the weights)")
    add_speed_arguments(parser, ("channels_last", "amp_dtype"))  # inference.json has no compile id


def load_checkpoint(net: torch.nn.Module, path: str, args: argparse.Namespace) -> None:
    """Load ``--ckpt`` into ``net``, or stop with one message saying why it cannot be used."""
    try:
        state = load_weights(path)
    except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
        # bundle.checkpoints' own errors already name the file and the problem
        detail = str(e) if path in str(e) else f"{path}: not a weights file torch can read ({type(e).__name__}: {e})"
        fail(f"--ckpt: {detail}", e)
    target = net.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or mismatched:
        counts = ", ".join(
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched))
            if keys
        )
        fail(
            f"--ckpt {path}: does not fit {type(net).__name__}(num_classes={args.num_classes}, "
            f"backbone={args.backbone}): keys {counts}; set --num_classes and --backbone as the model was trained"
        )
    net.load_state_dict(state)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time both modes on interleaved batches; return the report."""
    device = choose_device(args.device)
    speed = SpeedUp(as_bool(args.channels_last or False, "channels_last"), amp_dtype=args.amp_dtype)
    setup = settings(args, device, saliency=args.saliency, **speed.as_settings())
    if args.ckpt and not os.path.isfile(args.ckpt):
        fail(f"--ckpt {args.ckpt}: file not found (it is optional: speed does not depend on the weights)")
    set_determinism(seed=0)
    net = MultiTaskClassifier(num_classes=args.num_classes, backbone=args.backbone)
    if args.ckpt:
        load_checkpoint(net, args.ckpt, args)
    net = speed.module(net.to(device).eval())
    # the batch stays contiguous: inference.json sets channels_last on the weights only (bundle.networks.place)
    x = torch.rand(args.batch_size, 1, args.image_size, args.image_size, device=device)
    modes = {"plain": SaliencyInferer("none"), "saliency": SaliencyInferer(args.saliency)}
    timers = {m: IterationTimer(device, args.warmup, args.iters) for m in modes}
    peak: dict[str, float] = {}
    reset_peak(device)
    # as SupervisedEvaluator: no_grad (the saliency inferer re-enables gradients itself), autocast when amp
    with torch.no_grad(), torch.autocast(device.type, dtype=speed.amp_dtype, enabled=device.type == "cuda"):
        for i in range(args.warmup + args.iters):
            # alternate which mode goes first: the second of a pair runs measurably faster on CPU (warm caches)
            for mode, inferer in list(modes.items())[:: 1 if i % 2 == 0 else -1]:
                timers[mode].start()
                out = inferer(x, net)
                timers[mode].tick(args.batch_size)
                del out
                if i == 0:  # the peak of each mode's first batch, reset in between
                    peak[mode] = peak_memory_mb(device)
                    reset_peak(device)
    plain_s, saliency_s = timers["plain"].median_seconds(), timers["saliency"].median_seconds()
    ratio = saliency_s / plain_s
    return make_report(
        "inference",
        f"SaliencyInferer {args.saliency} vs none, same network and batches (median of interleaved batches)",
        "images/s",
        {"plain": args.batch_size / plain_s, "saliency": args.batch_size / saliency_s},
        "saliency_cost_ratio",
        ratio,
        f"saliency costs {ratio:.2f} x a plain pass, lower is better (target <= {TARGET_RATIO})",
        {"plain": peak["plain"], "saliency": peak["saliency"]},
        setup,
        {
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio <= TARGET_RATIO,
            "num_classes": args.num_classes,
            "weights": args.ckpt or "random (speed does not depend on them)",
            "memory": memory_note(device),
        },
    )
