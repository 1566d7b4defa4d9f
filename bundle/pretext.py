"""Classic pretext tasks on the bundle's encoder: rotation prediction and jigsaw puzzles.

Both classify a transformation applied to the batch on the device (no extra data pipeline), with a small head
on the global-average-pooled deepest encoder features, and export only ``encoder.*`` (``export_state``).

- ``Rotation`` (RotNet, Gidaris et al. 2018): each image is turned by 0, 90, 180 or 270 degrees
  (counter-clockwise as displayed, ``torch.rot90`` on (H, W)) and the head predicts which.
- ``Jigsaw`` (Noroozi & Favaro 2016; PIRL's jigsaw branch, Misra & van der Maaten 2020): the image is cut into
  3x3 cells, a tile is cropped from each cell at a random offset (the gap removes edge continuity as a cue),
  each tile is normalised on its own and **encoded separately by the shared encoder**; the nine tile features,
  concatenated in puzzle order, predict which of a fixed set of permutations was applied. Per-tile encoding is
  chosen over encoding the shuffled image as a whole because a whole-image CNN can solve the puzzle from the
  discontinuities at tile borders (a low-level shortcut), and because the tile features stay comparable to
  features of whole images, which is what fine-tuning uses. The permutation set is chosen once by maximal
  Hamming distance (greedy farthest-point selection over all 9! permutations) with a fixed seed.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .pretraining import PretrainingMethod

__all__ = [
    "ROTATIONS",
    "rotate_batch",
    "hamming_permutations",
    "Rotation",
    "Jigsaw",
    "pretext_method",
    "PRETEXT_TASKS",
]

ROTATIONS = (0, 90, 180, 270)
GRID = 3  # 3x3 tiles
PRETEXT_TASKS = ("rotation", "jigsaw")


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


@functools.lru_cache(maxsize=8)
def hamming_permutations(num_permutations: int = 100, seed: int = 0) -> np.ndarray:
    """A fixed set of 3x3 tile permutations, (N, 9) int64, spread by maximal Hamming distance.

    Greedy farthest-point selection: starting from a seeded random permutation, repeatedly add the permutation
    whose minimum Hamming distance to those already chosen is largest (ties broken by the seeded generator).
    The same ``(num_permutations, seed)`` always gives the same set; all rows are distinct.
    """
    tiles = GRID * GRID
    if not 2 <= num_permutations <= 1000:
        raise ValueError(f"num_permutations must be in [2, 1000], got {num_permutations}")
    everything = np.array(list(itertools.permutations(range(tiles))), dtype=np.int8)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(everything)))]
    min_dist = (everything != everything[chosen[0]]).sum(axis=1)
    for _ in range(num_permutations - 1):
        candidates = np.flatnonzero(min_dist == min_dist.max())
        nxt = int(rng.choice(candidates))
        chosen.append(nxt)
        np.minimum(min_dist, (everything != everything[nxt]).sum(axis=1), out=min_dist)
    return everything[chosen].astype(np.int64)


class _PooledHeadMethod(PretrainingMethod):
    """Shared parts: an encoder and a classification loss on its pooled deepest features."""

    def __init__(self, encoder: nn.Module, image_key: str = "image") -> None:
        super().__init__()
        self.encoder = encoder
        self.image_key = image_key

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) global-average-pooled deepest encoder features."""
        return self.encoder(images)[-1].mean(dim=(2, 3))

    @staticmethod
    def _result(logits: torch.Tensor, labels: torch.Tensor, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "embedding": embedding, "accuracy": accuracy}


class Rotation(_PooledHeadMethod):
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
        return self._result(self.head(embedding), labels, embedding)


class Jigsaw(_PooledHeadMethod):
    """Solve 3x3 jigsaw puzzles: classify which of ``num_permutations`` fixed permutations shuffled the tiles.

    Args:
        encoder: the bundle's encoder, shared by the nine tiles.
        feature_dim: channels of its deepest feature map.
        num_permutations: size of the permutation set (``hamming_permutations``).
        tile_fraction: tile side as a fraction of the cell side (< 1 leaves a random gap between tiles).
        tile_dim: per-tile embedding size before concatenation.
        hidden_dim: hidden width of the permutation classifier.
        normalize_tiles: standardise each tile on its own (removes brightness as a cue to its position).
        seed: seed of the permutation set.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_permutations: int = 100,
        tile_fraction: float = 0.85,
        tile_dim: int = 256,
        hidden_dim: int = 512,
        normalize_tiles: bool = True,
        seed: int = 0,
        image_key: str = "image",
    ) -> None:
        super().__init__(encoder, image_key)
        if not 0 < tile_fraction <= 1:
            raise ValueError(f"tile_fraction must be in (0, 1], got {tile_fraction}")
        self.tile_fraction, self.normalize_tiles = float(tile_fraction), normalize_tiles
        # not persistent: the set is rebuilt from (num_permutations, seed); checkpoints stay plain state_dicts
        self.register_buffer(
            "permutations", torch.from_numpy(hamming_permutations(num_permutations, seed)), persistent=False
        )
        tiles = GRID * GRID
        self.tile_fc = nn.Sequential(nn.Linear(feature_dim, tile_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(
            nn.Linear(tiles * tile_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, num_permutations)
        )

    def tiles(self, images: torch.Tensor, random_offset: bool = True) -> torch.Tensor:
        """Cut (B, C, H, W) images into (B, 9, C, t, t') tiles in reading order, one per 3x3 cell."""
        batch, _, height, width = images.shape
        cell_h, cell_w = height // GRID, width // GRID
        if cell_h < 1 or cell_w < 1:
            raise ValueError(f"images of {height}x{width} are too small for a 3x3 jigsaw")
        tile_h, tile_w = max(1, int(cell_h * self.tile_fraction)), max(1, int(cell_w * self.tile_fraction))
        device = images.device
        cells = torch.arange(GRID * GRID, device=device)
        shape = (batch, GRID * GRID, 1)
        if random_offset:
            off_r = torch.randint(0, cell_h - tile_h + 1, shape, device=device)
            off_c = torch.randint(0, cell_w - tile_w + 1, shape, device=device)
        else:
            off_r = torch.full(shape, (cell_h - tile_h) // 2, device=device)
            off_c = torch.full(shape, (cell_w - tile_w) // 2, device=device)
        rows = (cells // GRID * cell_h).view(1, -1, 1) + off_r + torch.arange(tile_h, device=device)  # (B, 9, th)
        cols = (cells % GRID * cell_w).view(1, -1, 1) + off_c + torch.arange(tile_w, device=device)  # (B, 9, tw)
        b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
        # advanced indices around the channel slice: result (B, 9, th, tw, C)
        out = images[b, :, rows[:, :, :, None], cols[:, :, None, :]]
        return out.permute(0, 1, 4, 2, 3)

    def shuffle(self, tiles: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Position ``j`` of puzzle ``b`` shows tile ``permutations[labels[b], j]``."""
        order = self.permutations[labels]  # (B, 9)
        index = order.view(*order.shape, 1, 1, 1).expand_as(tiles)
        return tiles.gather(1, index)

    def make_task(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Puzzles (B, 9, C, t, t') and their labels (index into ``permutations``), one per image."""
        labels = torch.randint(0, len(self.permutations), (images.shape[0],), device=images.device)
        return self.shuffle(self.tiles(images, random_offset=self.training), labels), labels

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        puzzle, labels = self.make_task(batch[self.image_key])
        if self.normalize_tiles:
            mean = puzzle.mean(dim=(2, 3, 4), keepdim=True)
            std = puzzle.std(dim=(2, 3, 4), keepdim=True)
            puzzle = (puzzle - mean) / (std + 1e-5)
        b, n = puzzle.shape[:2]
        features = self.pooled(puzzle.flatten(0, 1)).view(b, n, -1)  # each tile through the shared encoder
        logits = self.head(self.tile_fc(features).flatten(1))
        return self._result(logits, labels, features.mean(dim=1))


def pretext_method(
    name: str, encoder: nn.Module, feature_dim: int, options: Mapping[str, Any] | None = None
) -> PretrainingMethod:
    """Build ``rotation`` or ``jigsaw``; ``options`` are keyword arguments of that class (unknown ones raise)."""
    options = dict(options or {})
    if name == "rotation":
        return Rotation(encoder, feature_dim, **options)
    if name == "jigsaw":
        return Jigsaw(encoder, feature_dim, **options)
    raise ValueError(f"pretext {name!r} is not one of {PRETEXT_TASKS}")
