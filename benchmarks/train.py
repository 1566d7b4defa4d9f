"""Fine-tuning throughput: configs/train.json's trainer against a plain loop of MultiTaskNet + MultiTaskLoss + AdamW.

The bundle side is the whole workflow (cached images, random transforms in DataLoader workers, MONAI's
SupervisedTrainer and its handlers); the plain side trains the same network, loss, optimiser (the config's
hyperparameters), batch and precision on random in-memory tensors, with the same share of images carrying a mask.
The data path alone (the config's train DataLoader with its random transforms, and ``MultiTaskPrepareBatch``, no
model) is measured first, with one worker and with ``--num_workers``.

``--w_lung_guidance W`` trains both sides with lung guidance (from the first step) and also times the plain loop
without it, before and after, in the same run: the guidance's cost is the unguided plain loop's throughput over the
guided one's. Without it both sides train unguided (``w_lung_guidance 0``), whatever the configs' default.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import torch
from monai.utils import set_determinism

from bundle import workflow
from bundle.losses import MultiTaskLoss
from bundle.networks import MultiTaskNet
from bundle.settings import option

from .options import add_common_arguments, add_data_arguments, add_speed_arguments, choose_device, settings
from .report import training_report
from .timing import IterationTimer, OptimiserStep, time_loop
from .workflows import (
    SpeedUp,
    dataset_size_needed,
    measure_training,
    repeat_datalist,
    speed_overrides,
    workflow_overrides,
)

CONFIG = "train"
POOL = 4  # distinct in-memory batches the plain loop cycles through


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags."""
    add_common_arguments(parser, warmup=2, iters=5, batch_size=16)
    add_data_arguments(parser)
    add_speed_arguments(parser)
    parser.add_argument(
        "--w_lung_guidance",
        type=option("w_lung_guidance"),
        default=0.0,
        help="train both sides with lung guidance and time its cost against the unguided plain loop (default 0: off)",
    )


def plain_loop(
    args: argparse.Namespace,
    device: torch.device,
    hyper: dict[str, Any],
    mask_share: float,
    speed: SpeedUp,
    w_lung_guidance: float | None = None,
) -> IterationTimer:
    """A hand-written training loop of the same network, loss and optimiser on in-memory tensors (with lung
    guidance of weight ``w_lung_guidance``, by default ``args.w_lung_guidance``)."""
    set_determinism(seed=0)  # as the workflow's initialize: same seed and cuDNN settings on both sides
    w = args.w_lung_guidance if w_lung_guidance is None else w_lung_guidance
    net = MultiTaskNet(hyper["num_classes"], backbone=args.backbone, class_maps=w > 0).to(device).train()
    loss_fn = MultiTaskLoss(
        w_cls=hyper["w_cls"], w_seg=hyper["w_seg"], multi_label=hyper["multi_label"], w_lung_guidance=w
    )
    opt = torch.optim.AdamW(net.parameters(), lr=hyper["learning_rate"], weight_decay=hyper["weight_decay"])
    optimiser_step = OptimiserStep(opt, device, speed.amp_dtype)
    forward = speed.module(net)
    b, s = args.batch_size, args.image_size
    images = [speed.tensor(x) for x in torch.rand(POOL, b, 1, s, s, device=device)]
    targets = {
        "label": torch.randint(0, hyper["num_classes"], (POOL, b), device=device),
        "mask": (torch.rand(POOL, b, 1, s, s, device=device) > 0.5).float(),
        "has_mask": (torch.rand(POOL, b, device=device) < mask_share).float(),
    }

    def step(i: int) -> float:
        return optimiser_step(lambda: loss_fn(forward(images[i % POOL]), {k: v[i % POOL] for k, v in targets.items()}))

    return time_loop(step, device, args.warmup, args.iters, b)


def count_images(batch: dict[str, Any]) -> int:
    """Images in a batch of the workflow."""
    return len(batch["image"])


def guidance_cost(unguided: list[IterationTimer], measured: dict[str, Any], w: float) -> dict[str, Any]:
    """The report's ``lung_guidance`` entry: throughputs of the plain loop without and with lung guidance and the
    cost (unguided / guided: how many times longer a guided step takes), mean and median-iteration based."""
    plain = sum(t.throughput() for t in unguided) / len(unguided)
    median = statistics.median(s for t in unguided for s, _ in t.timed)
    return {
        "w_lung_guidance": w,
        "plain_unguided": round(plain, 2),
        "plain_guided": round(measured["plain"], 2),
        "cost": round(plain / measured["plain"], 3),
        "median_cost": round(measured["median_seconds"]["plain"] / median, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the data path, the plain loop, the workflow and the plain loop again (and the unguided plain loop
    before and after, with ``--w_lung_guidance``); return the report."""
    device = choose_device(args.device)
    given = speed_overrides(args, CONFIG)  # before any measuring: a flag the config cannot take stops here
    with tempfile.TemporaryDirectory() as out:
        datalist, entries = repeat_datalist(args.dataset_dir, dataset_size_needed(args), out)
        overrides = workflow_overrides(args, device, out, datalist)
        overrides["val_interval"] = 2  # beyond max_epochs: training throughput only, no validation
        overrides.update(given)
        # both sides at the same weight (the configs' default guides a CNN); guided from the first step
        overrides.update(w_lung_guidance=args.w_lung_guidance, lung_guidance_warmup=0)
        speed = SpeedUp.from_config(CONFIG, overrides)
        setup = settings(args, device, num_workers=args.num_workers, **speed.as_settings())
        names = ("class_names", "learning_rate", "weight_decay", "w_cls", "w_seg", "multi_label")
        hyper = dict(zip(names, workflow.parsed(CONFIG, overrides, *names)))
        hyper["num_classes"] = len(hyper.pop("class_names"))
        mask_share = sum(1 for e in entries if e.get("mask")) / len(entries)
        unguided = []
        if args.w_lung_guidance:
            unguided.append(plain_loop(args, device, hyper, mask_share, speed, w_lung_guidance=0.0))
        measured = measure_training(
            CONFIG, overrides, count_images, lambda: plain_loop(args, device, hyper, mask_share, speed), device, args
        )
        if args.w_lung_guidance:
            unguided.append(plain_loop(args, device, hyper, mask_share, speed, w_lung_guidance=0.0))
    report = training_report(
        "train", "configs/train.json trainer vs a plain PyTorch loop", "images/s", measured, setup, device
    )
    if unguided:
        report["details"]["lung_guidance"] = guidance_cost(unguided, measured, args.w_lung_guidance)
    return report
