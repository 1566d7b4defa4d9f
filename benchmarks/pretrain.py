"""Contrastive pretraining throughput: configs/pretrain_contrastive.json against a plain loop of the same method.

Both sides train the method the config's ``network_def`` builds for ``--method`` (SimCLR, MoCo v2, BYOL, SimSiam;
``--multi_instance`` for MICLe pairs) with the config's optimiser settings. The bundle side is the whole workflow
(cached image pairs, two augmented views per pair made batched on the device, MONAI's SupervisedTrainer and the
pretraining handlers); the plain side feeds random in-memory views. Throughput is in views/s (two views per image).
The data path alone (the config's train DataLoader and ``SSLPrepareBatch``, which makes the views on the device,
no model) is measured first, with one worker and with ``--num_workers``, and the loader alone with one worker.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from monai.utils import set_determinism

from bundle import workflow
from bundle.ssl.base import trainable_parameters

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

CONFIG = "pretrain_contrastive"
METHODS = ("simclr", "moco", "byol", "simsiam")
POOL = 4  # distinct in-memory batches the plain loop cycles through


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags."""
    add_common_arguments(parser, warmup=2, iters=5, batch_size=16)
    add_data_arguments(parser)
    add_speed_arguments(parser)
    parser.add_argument("--method", default="simclr", choices=METHODS, help="ssl_method (default simclr)")
    parser.add_argument("--multi_instance", action="store_true", help="MICLe pairs (two images of one patient)")


def plain_loop(
    args: argparse.Namespace, device: torch.device, overrides: dict[str, Any], speed: SpeedUp
) -> IterationTimer:
    """A hand-written loop of the config's method and optimiser on random in-memory views."""
    set_determinism(seed=0)  # as the workflow's initialize: same seed and cuDNN settings on both sides
    method, lr, wd = workflow.parsed(CONFIG, overrides, "network_def", "learning_rate", "weight_decay")
    method = method.to(device).train()
    optimiser = torch.optim.AdamW(trainable_parameters(method), lr=lr, weight_decay=wd)
    optimiser_step = OptimiserStep(optimiser, device, speed.amp_dtype)
    forward = speed.module(method)
    b, s = args.batch_size, args.image_size
    views = torch.rand(POOL, 2, b, 1, s, s, device=device)
    pool = [(speed.tensor(views[k, 0]), speed.tensor(views[k, 1])) for k in range(POOL)]
    method.on_epoch_start(0, 1)

    def step(i: int) -> float:
        view1, view2 = pool[i % POOL]
        loss = optimiser_step(lambda: forward({"view1": view1, "view2": view2})["loss"])
        method.on_step_end(None)
        return loss

    return time_loop(step, device, args.warmup, args.iters, 2 * b)


def count_views(batch: dict[str, Any]) -> int:
    """Views in a batch of the workflow: two per image pair (the loader's ``image1`` / ``image2``, whose views
    ``SSLPrepareBatch`` makes on the device)."""
    return 2 * len(batch["image1"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the data path, the plain loop, the workflow and the plain loop again; return the report."""
    device = choose_device(args.device)
    given = speed_overrides(args, CONFIG)  # before any measuring: a flag the config cannot take stops here
    with tempfile.TemporaryDirectory() as out:
        datalist, _ = repeat_datalist(args.dataset_dir, dataset_size_needed(args), out)
        overrides = workflow_overrides(args, device, out, datalist)
        overrides.update(ssl_method=args.method, multi_instance=args.multi_instance, probe_interval=0, **given)
        speed = SpeedUp.from_config(CONFIG, overrides)
        setup = settings(
            args,
            device,
            num_workers=args.num_workers,
            method=args.method,
            multi_instance=args.multi_instance,
            **speed.as_settings(),
        )
        measured = measure_training(
            CONFIG, overrides, count_views, lambda: plain_loop(args, device, overrides, speed), device, args, True
        )
    micle = " + MICLe" if args.multi_instance else ""
    return training_report(
        "pretrain",
        f"configs/pretrain_contrastive.json ({args.method}{micle}) trainer vs a plain PyTorch loop",
        "views/s",
        measured,
        setup,
        device,
    )
