"""Momentum (EMA) networks: frozen copies of online modules, updated by exponential moving average."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_update", "frozen_copy"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter.

    Buffers (BatchNorm running statistics) are not averaged: the target runs in training mode and keeps its own,
    as in the MoCo and BYOL reference code.
    """
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks differ in structure")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters get no gradient (a momentum / EMA target network)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
