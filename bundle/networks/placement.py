"""Where and how a network lives: its device, its memory format, and ``DistributedDataParallel`` around it
in a process group (``wrap``)."""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import is_distributed
from ..values import as_bool

__all__ = ["place", "wrap"]


def place(network: nn.Module, device: torch.device | str, channels_last: bool | str = False) -> nn.Module:
    """``network`` on ``device``, with its 4-D weights in ``torch.channels_last`` when ``channels_last`` is true.

    Channels-last weights let cuDNN pick its NHWC convolutions (faster with tensor cores, under mixed precision
    above all); the inputs need no conversion: a 1-channel image is contiguous in both formats. The values and
    the state dict's keys are unchanged, so checkpoints load either way. ``true``/``false`` strings are accepted.
    """
    network = network.to(device)
    if as_bool(channels_last, "channels_last"):
        network = network.to(memory_format=torch.channels_last)
    return network


def wrap(
    network: nn.Module, device: torch.device | str, sync_batch_norm: bool = False, channels_last: bool | str = False
) -> nn.Module:
    """``network`` on ``device``, in ``DistributedDataParallel`` inside a process group of two or more.

    With ``sync_batch_norm`` every BatchNorm computes its statistics over the global batch (SimCLR's global BN,
    BYOL's synchronised BN); PyTorch runs it on GPUs only. ``channels_last`` sets the weights' memory format
    before DDP registers them (``place``). Alone, the network is returned on ``device`` as is.
    """
    network = place(network, device, channels_last=channels_last)
    if not is_distributed():
        return network
    if as_bool(sync_batch_norm, "sync_batch_norm"):
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    device = torch.device(device)
    ids = [device] if device.type == "cuda" else None
    # DDP's default syncs buffers at every training forward: batch-norm statistics and MoCo's queue follow rank 0
    return nn.parallel.DistributedDataParallel(network, device_ids=ids)
