"""Inpainting pretraining throughput: configs/pretrain_inpainting.json against a plain loop of the same method.

Both sides train ``Inpainting`` on ``MultiTaskNet(seg_channels=1)`` with the masks of ``--method`` (inpainting:
blocks, outpainting, group_masked: GMML, through ``bundle.ssl.methods.mask_mode_of`` as in the config), the
config's loss, paste share and optimiser settings, batch and precision. The bundle side runs the config's trainer
(DataLoader workers, MONAI transforms, handlers); the plain side masks in-memory images in its own loop. The data
path alone (the config's train DataLoader, transforms and masks included, and its ``prepare_batch``, no model) is
measured first, with one worker and with ``--num_workers``.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from monai.utils import set_determinism

from bundle import workflow
from bundle.networks import MultiTaskNet
from bundle.ssl.inpainting import Inpainting
from bundle.ssl.masking import BatchMasks
from bundle.ssl.methods import INPAINTING_METHODS, mask_mode_of

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

CONFIG = "pretrain_inpainting"
POOL = 4  # distinct in-memory batches the plain loop cycles through


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags."""
    add_common_arguments(parser, warmup=2, iters=5, batch_size=8)
    add_data_arguments(parser)
    add_speed_arguments(parser)
    parser.add_argument(
        "--method", default="inpainting", choices=list(INPAINTING_METHODS), help="ssl_method (default inpainting)"
    )


def plain_loop(
    args: argparse.Namespace, device: torch.device, overrides: dict[str, Any], speed: SpeedUp
) -> IterationTimer:
    """A hand-written loop: mask in-memory images, forward, masked reconstruction loss, backward, step."""
    set_determinism(seed=0)  # as the workflow's initialize: same seed and cuDNN settings on both sides
    names = ("learning_rate", "weight_decay", "recon_loss", "replace_prob", "mask_ratio")
    lr, wd, recon_loss, replace_prob, mask_ratio = workflow.parsed(CONFIG, overrides, *names)
    net = MultiTaskNet(num_classes=1, backbone=args.backbone, seg_channels=1)
    method = Inpainting(net, recon_loss=recon_loss, replace_prob=replace_prob).to(device).train()
    optimiser_step = OptimiserStep(
        torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=wd), device, speed.amp_dtype
    )
    forward = speed.module(method)
    masks = BatchMasks(mode=mask_mode_of(args.method), mask_ratio=mask_ratio, seed=0)
    images = torch.rand(POOL, args.batch_size, 1, args.image_size, args.image_size, device=device)

    def step(i: int) -> float:
        batch = {k: speed.tensor(v) for k, v in masks(images[i % POOL]).items()}
        return optimiser_step(lambda: forward(batch)["loss"])

    return time_loop(step, device, args.warmup, args.iters, args.batch_size)


def count_images(batch: dict[str, Any]) -> int:
    """Images in a batch of the workflow."""
    return len(batch["image"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the data path, the plain loop, the workflow and the plain loop again; return the report."""
    device = choose_device(args.device)
    mode = mask_mode_of(args.method)
    given = speed_overrides(args, CONFIG)  # before any measuring: a flag the config cannot take stops here
    with tempfile.TemporaryDirectory() as out:
        datalist, _ = repeat_datalist(args.dataset_dir, dataset_size_needed(args), out)
        overrides = workflow_overrides(args, device, out, datalist)
        overrides.update(ssl_method=args.method, probe_interval=0, sample_interval=0, **given)
        speed = SpeedUp.from_config(CONFIG, overrides)
        setup = settings(
            args, device, num_workers=args.num_workers, method=args.method, mask_mode=mode, **speed.as_settings()
        )
        measured = measure_training(
            CONFIG, overrides, count_images, lambda: plain_loop(args, device, overrides, speed), device, args, True
        )
    return training_report(
        "inpainting",
        f"configs/pretrain_inpainting.json ({args.method}, {mode} masks) trainer vs a plain PyTorch loop",
        "images/s",
        measured,
        setup,
        device,
    )
