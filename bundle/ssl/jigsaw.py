"""Jigsaw puzzles (Noroozi & Favaro 2016; PIRL's jigsaw branch, Misra & van der Maaten 2020).

The image is cut into 3x3 cells, a tile is cropped from each cell at a random offset (the gap removes edge
continuity as a cue), each tile is normalised on its own and **encoded separately by the shared encoder**; the
nine tile features, concatenated in puzzle order, predict which of a fixed set of permutations was applied.
Per-tile encoding is chosen over encoding the shuffled image as a whole because a whole-image CNN can solve the
puzzle from the discontinuities at tile borders (a low-level shortcut), and because the tile features stay
comparable to features of whole images, which is what fine-tuning uses. The permutation set is chosen once by
maximal Hamming distance (greedy farthest-point selection over all 9! permutations) with a fixed seed.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .base import PretextMethod

__all__ = ["GRID", "hamming_permutations", "Jigsaw"]

GRID = 3  # 3x3 tiles


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


class Jigsaw(PretextMethod):
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
        # a ViT encoder takes sides that are multiples of its patch: tiles shrink to the nearest multiple
        patch = int(getattr(self.encoder, "patch_size", 1))
        if patch > 1:
            if cell_h < patch or cell_w < patch:
                raise ValueError(
                    f"images of {height}x{width} are too small for a 3x3 jigsaw of {patch} px patches "
                    f"(at least {GRID * patch} px a side)"
                )
            tile_h, tile_w = max(patch, tile_h // patch * patch), max(patch, tile_w // patch * patch)
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
        return self.result(logits, labels, features.mean(dim=1))
