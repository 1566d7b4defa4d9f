"""Training throughput: configs/train.json's trainer against a plain PyTorch loop of the same network."""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bundle.losses import MultiTaskLoss
from bundle.networks import MultiTaskNet
from scripts.bench_common import EpochTimer, peak_memory_mb, report, reset_peak, sync


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="the first epoch is warm-up and not counted")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--dataset_dir", default="data/sample")


def plain_loop(
    args: argparse.Namespace, device: torch.device, n_batches: int, num_classes: int, mask_share: float
) -> float:
    """Images/s of a hand-written loop on in-memory tensors: same network, loss, optimiser, batch and precision."""
    torch.manual_seed(0)
    net = MultiTaskNet(num_classes, backbone=args.backbone).to(device).train()
    loss_fn = MultiTaskLoss()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    b, s = args.batch_size, args.image_size
    images = torch.rand(n_batches, b, 1, s, s, device=device)
    targets = {
        "label": torch.randint(0, num_classes, (n_batches, b), device=device),
        "mask": (torch.rand(n_batches, b, 1, s, s, device=device) > 0.5).float(),
        "has_mask": (torch.rand(n_batches, b, device=device) < mask_share).float(),
    }
    times = []
    for _ in range(args.epochs):
        sync(device)
        start = time.perf_counter()
        for i in range(n_batches):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                loss = loss_fn(net(images[i]), {k: v[i] for k, v in targets.items()})
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sync(device)
        times.append(time.perf_counter() - start)
    kept = times[1:] or times
    return n_batches * b * len(kept) / sum(kept)


def bundle_workflow(args: argparse.Namespace, device: torch.device, out: str):
    """Run train.json for ``epochs`` epochs (no validation) and time its trainer's epochs."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file="configs/train.json",
        workflow_type="train",
        logging_file="configs/logging.conf",
        dataset_dir=args.dataset_dir,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        backbone=args.backbone,
        max_epochs=args.epochs,
        val_interval=args.epochs + 1,  # training throughput only
        val_fraction=0.0,
        test_fraction=0.0,
        ckpt_dir=f"{out}/models",
        output_dir=f"{out}/eval",
        resume=False,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    timer = EpochTimer(device, lambda batch: len(batch["image"]))
    timer.attach(trainer)
    wf.run()
    data = wf.parser.get_parsed_content("train#dataset").data
    wf.finalize()
    return timer, data


def run(args: argparse.Namespace) -> dict:
    """Measure both loops in this process and report images/s, ratio and peak memory."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as out:
        reset_peak(device)
        timer, data = bundle_workflow(args, device, out)
        bundle_peak = peak_memory_mb(device)
        bundle_ips = timer.throughput(skip=1)
        n_batches = len(data) // args.batch_size
        mask_share = sum(1 for e in data if e.get("mask")) / max(len(data), 1)
        reset_peak(device)
        plain_ips = plain_loop(args, device, n_batches, 4, mask_share)
        plain_peak = peak_memory_mb(device)
    return report(
        f"train ({args.backbone}, {args.image_size} px, batch {args.batch_size}, {device.type}, "
        f"{'AMP' if device.type == 'cuda' else 'fp32'}, {torch.get_num_threads()} threads)",
        "images/s",
        bundle_ips,
        plain_ips,
        {
            "peak_memory_mb": f"bundle {bundle_peak:.0f}, plain {plain_peak:.0f}"
            + (" (process RSS per phase; DataLoader workers not included)" if device.type == "cpu" else ""),
            "images_per_epoch": n_batches * args.batch_size,
            "num_workers": args.num_workers,
        },
    )


if __name__ == "__main__":
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.chdir(Path(__file__).resolve().parents[1])
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    run(p.parse_args())
