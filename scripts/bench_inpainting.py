"""Inpainting pretraining throughput: configs/pretrain_inpainting.json against a plain PyTorch loop.

    python scripts/benchmark.py inpainting [--image_size 224 --batch_size 8 --iterations 5 --mask_mode blocks]
    python scripts/bench_inpainting.py ...                 (the same, on its own)

Both sides train the same method (``Inpainting`` on ``MultiTaskNet(seg_channels=1)``) with the same masking
(``ReconstructionMaskd``), loss, optimiser, batch and precision. The bundle side runs the config's trainer
(data loader workers, MONAI transforms, handlers); the plain side masks in-memory images in its own loop.
Only iterations after ``--warmup`` are timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runnable as a file from anywhere
    sys.path.insert(0, str(ROOT))

from bundle.networks import MultiTaskNet  # noqa: E402
from bundle.ssl.inpainting import Inpainting  # noqa: E402
from bundle.ssl.masking import ReconstructionMaskd  # noqa: E402
from scripts.bench_common import peak_memory_mb, report, reset_peak, sync  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="iterations run before timing starts")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--mask_mode", default="blocks", choices=["blocks", "group", "outpaint"])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--dataset_dir", default="data/sample")


class IterationTimer:
    """Ignite handler: wall time of the iterations after the first ``warmup`` (synchronised on CUDA)."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.start, self.end, self.images = 0.0, 0.0, 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._tick)

    def _tick(self, engine) -> None:
        sync(self.device)
        done = engine.state.iteration
        if done == self.warmup:
            self.start = time.perf_counter()
        elif done > self.warmup:
            self.end = time.perf_counter()
            self.images += len(engine.state.batch["image"])

    def throughput(self) -> float:
        return self.images / (self.end - self.start) if self.images else float("nan")


def bundle_workflow(args: argparse.Namespace, device: torch.device, out: str) -> IterationTimer:
    """Run pretrain_inpainting.json for warm-up + timed iterations (one short epoch) and time them."""
    from monai.bundle import ConfigWorkflow

    needed = (args.warmup + args.iterations) * args.batch_size
    wf = ConfigWorkflow(
        config_file="configs/pretrain_inpainting.json",
        workflow_type="train",
        logging_file="configs/logging.conf",
        dataset_dir=args.dataset_dir,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        backbone=args.backbone,
        mask_mode=args.mask_mode,  # the mask of ssl_method inpainting / outpainting / group_masked
        max_epochs=1,
        probe_interval=0,
        sample_interval=0,
        val_fraction=0.0,
        test_fraction=0.0,
        ckpt_dir=f"{out}/models",
        output_dir=f"{out}/eval",
        resume=False,
    )
    wf.initialize()
    data = wf.parser.get_parsed_content("train#dataset").data
    if len(data) < needed:
        raise SystemExit(f"{args.dataset_dir}: {len(data)} training images, {needed} needed for the timed iterations")
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.state.epoch_length = args.warmup + args.iterations  # one short epoch: only the timed iterations
    timer = IterationTimer(device, args.warmup)
    timer.attach(trainer)
    wf.run()
    wf.finalize()
    return timer


def plain_loop(args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of a hand-written loop: mask in-memory images, forward, masked L1, backward, step."""
    torch.manual_seed(0)
    net = MultiTaskNet(num_classes=1, backbone=args.backbone, seg_channels=1)
    method = Inpainting(net, replace_prob=0.3 if args.mask_mode == "group" else 0.0).to(device).train()
    opt = torch.optim.AdamW(method.parameters(), lr=5e-4, weight_decay=0.05)
    masking = ReconstructionMaskd(mode=args.mask_mode)
    masking.set_random_state(0)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    total = args.warmup + args.iterations
    images = torch.rand(total, args.batch_size, 1, args.image_size, args.image_size)
    start = 0.0
    for i in range(total):
        if i == args.warmup:
            sync(device)
            start = time.perf_counter()
        items = [masking({"image": img}) for img in images[i]]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in ("image", "target", "recon_mask")}
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = method(batch)["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync(device)
    return args.iterations * args.batch_size / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict:
    """Measure both loops in this process and report images/s, ratio and peak memory."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as out:
        reset_peak(device)
        timer = bundle_workflow(args, device, out)
        bundle_peak = peak_memory_mb(device)
    reset_peak(device)
    plain_ips = plain_loop(args, device)
    plain_peak = peak_memory_mb(device)
    return report(
        f"inpainting pretraining ({args.mask_mode}, {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
        f"{device.type}, {'AMP' if device.type == 'cuda' else 'fp32'}, {torch.get_num_threads()} threads)",
        "images/s",
        timer.throughput(),
        plain_ips,
        {
            "peak_memory_mb": f"bundle {bundle_peak:.0f}, plain {plain_peak:.0f}"
            + (" (process RSS per phase; DataLoader workers not included)" if device.type == "cpu" else ""),
            "timed_iterations": f"{args.iterations} after {args.warmup} warm-up",
            "num_workers": args.num_workers,
        },
    )


if __name__ == "__main__":
    os.chdir(ROOT)  # configs refer to each other relative to the bundle root
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    run(p.parse_args())
