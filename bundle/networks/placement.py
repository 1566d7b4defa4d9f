"""Where and how a network lives: its device and its memory format (one function for every config)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["place"]


def place(network: nn.Module, device: torch.device | str, channels_last: bool | str = False) -> nn.Module:
    """``network`` on ``device``, with its 4-D weights in ``torch.channels_last`` when ``channels_last`` is true.

    Channels-last weights let cuDNN pick its NHWC convolutions (faster with tensor cores, under mixed precision
    above all); the inputs need no conversion: a 1-channel image is contiguous in both formats. The values and
    the state dict's keys are unchanged, so checkpoints load either way. ``true``/``false`` strings are accepted.
    """
    from ..settings import as_bool

    network = network.to(device)
    if as_bool(channels_last, "channels_last"):
        network = network.to(memory_format=torch.channels_last)
    return network
