"""Projection and prediction heads of the self-supervised methods."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    batch_norm: bool = True,
    last_bn: bool = False,
    last_bn_affine: bool = True,
) -> nn.Sequential:
    """Projection / prediction head: ``num_layers`` Linear layers, [BN] + ReLU between them, optional BN at the end."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
        last = i == num_layers - 1
        # a Linear followed by BN needs no bias (BN's shift replaces it)
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (batch_norm and not last) and not (last and last_bn)))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=last_bn_affine))
    return nn.Sequential(*layers)
