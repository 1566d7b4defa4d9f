"""Contrastive pretraining throughput: configs/pretrain_contrastive.json against a plain loop of the same method.

Both sides train the method the config's ``network_def`` builds for ``--method`` (SimCLR, MoCo v2, BYOL, SimSiam;
``--multi_instance`` for MICLe pairs) with the config's optimiser settings. The bundle side is the whole workflow
(cached images, two augmented views per image in DataLoader workers, MONAI's SupervisedTrainer and the pretraining
handlers); the plain side feeds random in-memory views. Throughput is in views/s (two views per image).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from monai.utils import set_determinism

from bundle.ssl.base import trainable_parameters

from .harness import (
    IterationTimer,
    OptimiserStep,
    add_common_arguments,
    add_data_arguments,
    choose_device,
    compare_training,
    dataset_size_needed,
    parse_ids,
    repeat_datalist,
    run_workflow,
    settings,
    time_loop,
    training_report,
    workflow_overrides,
)

CONFIG = "pretrain_contrastive.json"
METHODS = ("simclr", "moco", "byol", "simsiam")
POOL = 4  # distinct in-memory batches the plain loop cycles through


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags."""
    add_common_arguments(parser, warmup=2, iters=5, batch_size=16)
    add_data_arguments(parser)
    parser.add_argument("--method", default="simclr", choices=METHODS, help="ssl_method (default simclr)")
    parser.add_argument("--multi_instance", action="store_true", help="MICLe pairs (two images of one patient)")


def plain_loop(args: argparse.Namespace, device: torch.device, overrides: dict[str, Any]) -> IterationTimer:
    """A hand-written loop of the config's method and optimiser on random in-memory views."""
    set_determinism(seed=0)  # as the workflow's initialize: same seed and cuDNN settings on both sides
    method, lr, wd = parse_ids(CONFIG, overrides, "network_def", "learning_rate", "weight_decay")
    method = method.to(device).train()
    optimiser_step = OptimiserStep(torch.optim.AdamW(trainable_parameters(method), lr=lr, weight_decay=wd), device)
    b, s = args.batch_size, args.image_size
    views = torch.rand(POOL, 2, b, 1, s, s, device=device)
    method.on_epoch_start(0, 1)

    def step(i: int) -> float:
        loss = optimiser_step(lambda: method({"view1": views[i % POOL, 0], "view2": views[i % POOL, 1]})["loss"])
        method.on_step_end(None)
        return loss

    return time_loop(step, device, args.warmup, args.iters, 2 * b)


def count_views(batch: dict[str, Any]) -> int:
    """Views in a batch of the workflow: two per image (or image pair)."""
    return 2 * len(batch["view1"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the plain loop, the workflow and the plain loop again; return the report."""
    device = choose_device(args.device)
    setup = settings(args, device, num_workers=args.num_workers, method=args.method, multi_instance=args.multi_instance)
    with tempfile.TemporaryDirectory() as out:
        datalist, _ = repeat_datalist(args.dataset_dir, dataset_size_needed(args), out)
        overrides = workflow_overrides(args, device, out, datalist)
        overrides.update(ssl_method=args.method, multi_instance=args.multi_instance, probe_interval=0)
        measured = compare_training(
            lambda: run_workflow(CONFIG, overrides, IterationTimer(device, args.warmup, args.iters, count_views)),
            lambda: plain_loop(args, device, overrides),
            device,
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
