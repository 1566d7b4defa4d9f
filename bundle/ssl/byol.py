"""BYOL (Grill et al., NeurIPS 2020): an online network regresses an EMA target network's projections."""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import TwoViewMethod
from .heads import mlp
from .losses import regression_loss
from .momentum import ema_update, frozen_copy

__all__ = ["BYOL"]


class BYOL(TwoViewMethod):
    """BYOL: an online network (encoder, projector, predictor) regresses an EMA target network's projections.

    Loss: symmetrised ``2 - 2 cos(p_online(view_a), z_target(view_b))``. The target has no trainable parameters
    and runs under ``no_grad``; after each step it becomes ``tau * target + (1 - tau) * online`` with
    ``tau = 1 - (1 - momentum) * (cos(pi k / K) + 1) / 2`` rising from ``momentum`` to ``momentum_end`` over the
    run's K steps. Heads: Linear-BN-ReLU-Linear, hidden 4096, output 256 (the paper's).

    Args:
        backbone, in_channels, vit_pool: see ``TwoViewMethod``.
        momentum: base EMA rate (paper: 0.996; 0.99 for small data sets).
        momentum_end: final EMA rate of the cosine schedule (1.0 in the paper).
        proj_dim, hidden_dim: projector output / hidden size.
        pred_hidden_dim: predictor hidden size (default ``hidden_dim``).
    """

    twins = (("target_encoder", "encoder"), ("target_projector", "projector"))

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        vit_pool: str = "mean",
        momentum: float = 0.99,
        momentum_end: float = 1.0,
        proj_dim: int = 256,
        hidden_dim: int | None = 4096,
        pred_hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, in_channels, vit_pool)
        if not 0 <= momentum <= momentum_end <= 1:
            raise ValueError(f"need 0 <= momentum <= momentum_end <= 1, got {momentum}, {momentum_end}")
        hidden_dim = hidden_dim or 4096
        self.base_momentum, self.momentum_end = momentum, momentum_end
        self.current_momentum = momentum
        self.projector = mlp(self.feature_dim, hidden_dim, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden_dim or hidden_dim, proj_dim)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)

    def online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(self.pooled(self.encoder, x))
        return z, self.predictor(z)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.pooled(self.target_encoder, x))

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        z1, p1 = self.online(v1)
        _, p2 = self.online(v2)
        t1, t2 = self.target(v1), self.target(v2)
        loss = regression_loss(p1, t2) + regression_loss(p2, t1)
        return {"loss": loss, "embedding": z1.detach()}

    def momentum_at(self, step: int, total: int | None) -> float:
        """EMA rate after ``step`` of ``total`` steps (cosine from ``momentum`` to ``momentum_end``)."""
        if not total:
            return self.base_momentum
        progress = min(max(step / total, 0.0), 1.0)
        return self.momentum_end - (self.momentum_end - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def on_step_end(self, engine: Any = None) -> None:
        super().on_step_end(engine)
        self.current_momentum = self.momentum_at(*self.progress(engine))
        ema_update(self.target_encoder, self.encoder, self.current_momentum)
        ema_update(self.target_projector, self.projector, self.current_momentum)
