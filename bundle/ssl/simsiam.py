"""SimSiam (Chen & He, CVPR 2021): a predictor and a stop-gradient, no negatives and no momentum network."""

from __future__ import annotations

from typing import Any

import torch

from .base import TwoViewMethod
from .heads import mlp
from .losses import negative_cosine

__all__ = ["SimSiam"]


class SimSiam(TwoViewMethod):
    """SimSiam: a predictor maps one view's projection to the other's, whose branch is cut by a stop-gradient.

    Loss: ``-(cos(p1, stopgrad(z2)) + cos(p2, stopgrad(z1))) / 2``. No negatives and no momentum network; the
    stop-gradient is what prevents collapse. Heads as in the paper: projector 3 x (Linear-BN), ReLU between,
    output BN without affine; predictor Linear-BN-ReLU-Linear with a bottleneck (``pred_hidden_dim``).

    Args:
        backbone, in_channels, vit_pool: see ``TwoViewMethod``.
        proj_dim, hidden_dim: projector output / hidden size (paper: 2048 both).
        pred_hidden_dim: predictor bottleneck (paper: 512).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        vit_pool: str = "mean",
        proj_dim: int = 2048,
        hidden_dim: int | None = 2048,
        pred_hidden_dim: int | None = 512,
    ) -> None:
        super().__init__(backbone, in_channels, vit_pool)
        hidden_dim = hidden_dim or 2048
        self.projector = mlp(self.feature_dim, hidden_dim, proj_dim, num_layers=3, last_bn=True, last_bn_affine=False)
        self.predictor = mlp(proj_dim, pred_hidden_dim or 512, proj_dim)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        z1 = self.projector(self.pooled(self.encoder, v1))
        z2 = self.projector(self.pooled(self.encoder, v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return {"loss": loss, "embedding": z1.detach()}
