"""Training on several processes with PyTorch's own distributed engine, started by ``torchrun``.

The multi-GPU overlays (``configs/multi_gpu_*.json``) call ``setup`` in ``initialize`` and ``cleanup`` in
``finalize``; everything else here works unchanged on one process (rank 0 of a world of 1), so the code that
uses it needs no distributed branch of its own:

* ``local_device``: ``cuda:<LOCAL_RANK>`` where there are GPUs, else the CPU (gloo);
* ``unwrap``: the module inside ``DistributedDataParallel`` (``bundle.networks.placement.wrap`` puts it there),
  for handlers that read a method's attributes or save plain state dicts;
* ``gather`` (differentiable) and ``gather_no_grad``: tensors of every rank concatenated in rank order, for the
  negatives of contrastive losses and MoCo's queue; ``gather_objects`` for per-image results of evaluation;
* ``for_this_rank``: handler lists without the writers (logs, TensorBoard, progress, probes, pictures) on
  ranks other than 0.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import fail
from .overrides import check_command_line

__all__ = [
    "TIMEOUT_MINUTES",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "setup",
    "cleanup",
    "local_device",
    "rank_seed",
    "unwrap",
    "gather",
    "gather_no_grad",
    "gather_objects",
    "broadcast_",
    "for_this_rank",
]

logger = logging.getLogger(__name__)

# Collective calls wait this long for the slowest rank: rank 0 alone runs the kNN probe and writes pictures
# while the others wait in the next step, which takes longer than PyTorch's default on large probe sets.
TIMEOUT_MINUTES = 60
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True inside an initialised process group of two or more processes."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0, the process that writes checkpoints, logs and pictures."""
    return rank() == 0


def setup(backend: str | None = None, timeout_minutes: float = TIMEOUT_MINUTES) -> str:
    """Join the process group ``torchrun`` describes (environment variables); returns the backend.

    ``nccl`` when CUDA is available, else ``gloo`` (CPU); the process's GPU is ``cuda:<LOCAL_RANK>``. Run
    without ``torchrun``, it stops with a message saying how to start the overlay. The overlays call it first in
    ``initialize``, so it checks the command line's ids first (``bundle.overrides``), before joining the group.
    """
    check_command_line()
    missing = [v for v in _TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        fail(
            f"the multi-GPU overlay runs under torchrun ({', '.join(missing)} not set): start it as "
            "torchrun --standalone --nnodes=1 --nproc_per_node=<N> -m monai.bundle run --config_file "
            "\"['configs/train.json','configs/multi_gpu_train.json']\""
        )
    if dist.is_initialized():
        return str(dist.get_backend())
    chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if chosen == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=chosen, timeout=datetime.timedelta(minutes=float(timeout_minutes)))
    if is_main_process():
        logger.info("distributed training: %d processes, backend %s", world_size(), chosen)
    else:  # one log of the run, rank 0's; the other ranks still report warnings and errors
        logging.getLogger().setLevel(logging.WARNING)
    return chosen


def cleanup() -> None:
    """Leave the process group (the overlays' ``finalize``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        fail(
            f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s): "
            "give torchrun --nproc_per_node at most the number of GPUs"
        )
    return torch.device("cuda", local)


def rank_seed(seed: int) -> int:
    """``seed + rank``: each process draws its own augmentations (the weights start equal: DDP copies rank 0's)."""
    return int(seed) + rank()


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (the network itself otherwise)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """(W * B, ...) the ``tensor`` (B, ...) of every rank in rank order, with gradients flowing back to each rank.

    Every rank must pass the same shape. Backward sums the gradients the whole world computed for this rank's
    part, so with DDP's averaging the gradient equals that of one process holding the global batch.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGradient.apply(tensor)


class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward returns each rank the gradient of the whole world's losses for its part.

    Written here because ``torch.distributed.nn.functional.all_gather`` is deprecated in favour of a private
    module; the backward sums with ``all_reduce`` (gloo has no ``reduce_scatter``) and keeps this rank's rows.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = slice(rank() * tensor.shape[0], (rank() + 1) * tensor.shape[0])
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.rows]


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(W * B, ...) the ``tensor`` (B, ...) of every rank in rank order, without gradients (same shape on all)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` (picklable values); ``[value]`` on one process."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s (in place; a no-op on one process)."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def _writer_types() -> tuple[type, ...]:
    from monai.handlers import StatsHandler, TensorBoardStatsHandler

    return (StatsHandler, TensorBoardStatsHandler)


def for_this_rank(handlers: Sequence[Any] | None) -> list[Any] | None:
    """``handlers`` on rank 0; on the other ranks the same list without the writers.

    Writers are MONAI's StatsHandler and TensorBoardStatsHandler and the bundle's handlers marked
    ``rank_zero_only`` (progress bar, pretraining monitor, pictures). Handlers that take part in collective
    calls or keep the ranks in step (validation, metrics, checkpoints, schedules, momentum updates) stay.
    """
    if handlers is None or is_main_process():
        return None if handlers is None else list(handlers)
    writers = _writer_types()
    return [h for h in handlers if not (isinstance(h, writers) or getattr(h, "rank_zero_only", False))]
