"""SimCLR (Chen et al., ICML 2020): NT-Xent between two views, the other views of the batch as negatives."""

from __future__ import annotations

from typing import Any

import torch

from .base import TwoViewMethod
from .heads import mlp
from .losses import nt_xent_loss

__all__ = ["SimCLR"]


class SimCLR(TwoViewMethod):
    """SimCLR: NT-Xent between the projections of two views, other views of the batch as negatives.

    Both views go through the encoder as one batch, so BatchNorm sees all 2B views (SimCLR's global BN on
    one device). Projection head: Linear-BN-ReLU-Linear, hidden = encoder width, output ``proj_dim``.

    Args:
        backbone, in_channels, vit_pool: see ``TwoViewMethod``.
        temperature: NT-Xent temperature (SimCLR on medical images: about 0.1).
        proj_dim: projection output size.
        hidden_dim: projection hidden size (default: the encoder's feature width).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        vit_pool: str = "mean",
        temperature: float = 0.1,
        proj_dim: int = 128,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, in_channels, vit_pool)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.projector = mlp(self.feature_dim, hidden_dim or self.feature_dim, proj_dim)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch)
        z = self.projector(self.pooled(self.encoder, torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        return {"loss": nt_xent_loss(z1, z2, self.temperature), "embedding": z1.detach()}
