"""Rotation prediction (RotNet, Gidaris et al. 2018): predict which of 0/90/180/270 degrees turned each image.

Images are turned counter-clockwise as displayed (``torch.rot90`` on (H, W)) on the device, so the task needs
no extra data pipeline; the head sits on the pooled deepest encoder features and only ``encoder.*`` is exported.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .base import PretextMethod

__all__ = ["ROTATIONS", "rotate_batch", "Rotation"]

ROTATIONS = (0, 90, 180, 270)


def rotate_batch(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Turn image ``b`` by ``labels[b] * 90`` degrees (``torch.rot90`` over H, W); images must be square."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    out = torch.empty_like(images)
    for k in range(len(ROTATIONS)):
        chosen = labels == k
        if chosen.any():
            out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out


class Rotation(PretextMethod):
    """Predict the rotation (0/90/180/270 degrees) applied to each image.

    Args:
        encoder: the bundle's encoder (``bundle.networks.build_encoder``).
        feature_dim: channels of its deepest feature map.
        hidden_dim: width of the head's hidden layer.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden_dim: int = 256, image_key: str = "image") -> None:
        super().__init__(encoder, image_key)
        self.head = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 4))

    @staticmethod
    def make_task(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated images and their labels (index into ``ROTATIONS``), one random rotation per image."""
        labels = torch.randint(0, len(ROTATIONS), (images.shape[0],), device=images.device)
        return rotate_batch(images, labels), labels

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        rotated, labels = self.make_task(batch[self.image_key])
        embedding = self.pooled(rotated)
        return self.result(self.head(embedding), labels, embedding)
