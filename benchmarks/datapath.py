"""The data path of a training config alone: its train DataLoader and ``prepare_batch``, with no model.

``measure_data_path`` builds them from the config with the workflow's overrides (so the same dataset, cache,
transforms, batch and loader settings) and times them like a workflow, with one DataLoader worker and with the
configured workers: what the data side can supply, next to the model step (the plain loop) and the workflow.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from bundle import workflow

from .timing import IterationTimer

__all__ = ["loader_with_workers", "time_data_path", "measure_data_path"]


def loader_with_workers(loader: Any, num_workers: int) -> Any:
    """A copy of a DataLoader with ``num_workers`` workers and every other setting of ``loader``.

    Same dataset (and its cache), batch size, sampler kind, collate, pinning, drop_last, worker seeding and
    prefetching; ``persistent_workers`` is kept where workers exist.
    """
    from torch.utils.data import RandomSampler

    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "shuffle": isinstance(loader.sampler, RandomSampler),
        "num_workers": num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "timeout": loader.timeout,
    }
    if num_workers > 0:
        kwargs["persistent_workers"] = loader.persistent_workers or loader.num_workers == 0
        kwargs["prefetch_factor"] = loader.prefetch_factor or 2
        kwargs["multiprocessing_context"] = loader.multiprocessing_context
    return type(loader)(loader.dataset, **kwargs)


def time_data_path(
    loader: Iterable[Any],
    prepare: Callable[..., Any] | None,
    device: torch.device,
    warmup: int,
    iters: int,
    items: Callable[[Any], int],
) -> IterationTimer:
    """Iterate ``loader`` with no model: each batch through ``prepare(batch, device, non_blocking)`` (the trainer's
    ``prepare_batch``: to the device, views made there), timed like a workflow; epochs repeat as needed."""
    timer = IterationTimer(device, warmup, iters)
    timer.start()  # as the workflow's timer: worker start-up falls in the warm-up
    while not timer.finished:
        fetched = 0
        for batch in loader:
            fetched += 1
            n = items(batch)  # the raw batch, as the workflow's timer counts engine.state.batch
            if prepare is not None:
                prepare(batch, device, False)
            if timer.tick(n):
                break
        if not fetched:
            raise RuntimeError("the data loader gave no batch")
    return timer


def measure_data_path(
    config: str | os.PathLike | Sequence[str | os.PathLike],
    overrides: Mapping[str, Any],
    items: Callable[[Any], int],
    device: torch.device,
    warmup: int,
    iters: int,
    loader_alone: bool = False,
) -> dict[str, Any]:
    """The data path of ``config`` (a name such as ``"train"``, or a path) alone: ``train#dataloader`` +
    ``train#trainer#prepare_batch``, no model.

    Built from the config with the workflow's ``overrides`` (so the same dataset, cache, transforms, batch and
    loader settings), measured with one DataLoader worker (``per_worker``) and with the configured workers
    (``all_workers``), in the unit of ``items``. With ``loader_alone`` (``prepare_batch`` makes the views
    or masks, as in pretraining) also ``loader_per_worker``: the loader alone with one worker, without the views, i.e.
    what one worker can supply to a device that makes the views itself.
    """
    loader, prepare = workflow.parsed(config, overrides, "train#dataloader", "train#trainer#prepare_batch")
    configured = loader.num_workers
    result: dict[str, Any] = {"num_workers": configured}

    def measure(n: int, with_prepare: bool = True) -> float:
        copy = loader if n == configured else loader_with_workers(loader, n)
        try:
            return time_data_path(copy, prepare if with_prepare else None, device, warmup, iters, items).throughput()
        finally:
            del copy
            gc.collect()  # shut the copy's persistent workers down before the next measurement

    result["per_worker"] = measure(1)
    result["all_workers"] = result["per_worker"] if configured == 1 else measure(configured)
    if loader_alone:
        result["loader_per_worker"] = measure(1, with_prepare=False)
    return result  # the caller collects the loader (and its persistent workers) once this frame is gone
