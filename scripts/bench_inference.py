"""Inference throughput with and without saliency, measured in one run on the same network and batches.

"plain" is what ``configs/inference.json`` computes with ``--saliency none`` (class logits and the lung
segmentation from one encoder pass); "saliency" adds the map (default Grad-CAM++) exactly as the inference run does,
through ``bundle.saliency.SaliencyInferer`` under ``torch.no_grad()`` like MONAI's evaluator. Batches of the two
modes are interleaved, in alternating order, and the median batch time is used, so that load from other processes on
a shared machine affects both alike.

    python scripts/bench_inference.py [--device cpu] [--image_size 224] [--batch_size 8] [--iters 6]
    python scripts/benchmark.py inference ...      (same arguments)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_RATIO = 2.5  # saliency may cost at most 2.5x a plain forward pass


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add this benchmark's options to ``parser`` (also used by ``scripts/benchmark.py inference``)."""
    parser.add_argument("--backbone", default="resnet18", help="FlexibleUNet backbone (default resnet18)")
    parser.add_argument("--num_classes", type=int, default=4)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=6, help="timed batches per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches per mode")
    parser.add_argument("--saliency", default="gradcampp", choices=["gradcampp", "gradcam", "occlusion"])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--ckpt", default=None, help="optional model.pt (speed does not depend on the weights)")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark; print and return images/s of both modes and their ratio."""
    import torch

    from bundle.checkpoints import load_weights
    from bundle.networks import MultiTaskClassifier
    from bundle.saliency import SaliencyInferer
    from scripts.bench_common import peak_memory_mb, reset_peak, sync

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = MultiTaskClassifier(num_classes=args.num_classes, backbone=args.backbone)
    if args.ckpt:
        net.load_state_dict(load_weights(args.ckpt))
    net = net.to(device).eval()
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 1, args.image_size, args.image_size, device=device)
    modes = {"plain": SaliencyInferer("none"), "saliency": SaliencyInferer(args.saliency)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    peak: dict[str, float] = {}
    with torch.no_grad():  # as in SupervisedEvaluator: the saliency inferer re-enables gradients itself
        for i in range(args.warmup + args.iters):
            # alternate which mode goes first: the second of a pair runs measurably faster on CPU (warm caches)
            for mode, inferer in list(modes.items())[:: 1 if i % 2 == 0 else -1]:
                sync(device)
                t0 = time.perf_counter()
                out = inferer(x, net)
                sync(device)
                if i >= args.warmup:
                    times[mode].append(time.perf_counter() - t0)
                del out
                if i == 0:  # per-mode peak (reset between modes)
                    peak[mode] = peak_memory_mb(device)
                    reset_peak(device)
    median = {m: statistics.median(t) for m, t in times.items()}
    result = {
        "benchmark": "inference",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "iters": args.iters,
        "saliency": args.saliency,
        "plain_images_per_s": args.batch_size / median["plain"],
        "saliency_images_per_s": args.batch_size / median["saliency"],
        "saliency_cost_ratio": median["saliency"] / median["plain"],
        "target_ratio": TARGET_RATIO,
        "peak_memory_mb": {m: round(v, 1) for m, v in peak.items()},
    }
    result["meets_target"] = result["saliency_cost_ratio"] <= TARGET_RATIO
    print(
        f"inference on {result['device']} ({result['threads']} threads), {args.backbone}, {args.image_size} px, "
        f"batch {args.batch_size}: plain {result['plain_images_per_s']:.2f} img/s, "
        f"+{args.saliency} {result['saliency_images_per_s']:.2f} img/s, "
        f"saliency costs {result['saliency_cost_ratio']:.2f}x a plain pass (target <= {TARGET_RATIO}x); "
        f"peak memory (MiB) {result['peak_memory_mb']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
