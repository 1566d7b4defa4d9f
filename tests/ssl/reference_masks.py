"""The per-image references of ``bundle.ssl.masking.BatchMasks``: MONAI's ``RandCoarseDropout`` for holes and
GMML's per-image rectangles for group masks, as a MONAI dictionary transform (``ReconstructionMaskd``). The tests
compare the batched masks with these in distribution.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandCoarseDropout, Randomizable

from bundle.ssl.masking import _MODE_DEFAULTS, MASK_MODES, on_cells


def _pair(value: Sequence[float] | float, name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if lo > hi:
        raise ValueError(f"{name}: minimum {lo} is larger than maximum {hi}")
    return float(lo), float(hi)


def group_mask(
    height: int,
    width: int,
    rng: np.random.RandomState,
    mask_ratio: tuple[float, float] = (0.5, 0.75),
    side: tuple[float, float] = (0.05, 0.3),
) -> np.ndarray:
    """GMML group mask: a bool (H, W) array covered by random rectangles to a coverage within ``mask_ratio``.

    The coverage target is drawn uniformly from ``mask_ratio``; rectangles (sides drawn from ``side`` times the
    image side) are added until it is reached. A rectangle that would push the coverage above the maximum is
    halved until it fits, so the final coverage always lies in ``mask_ratio`` (up to one pixel).
    """
    lo, hi = mask_ratio
    if not 0 < lo <= hi < 1:
        raise ValueError(f"mask_ratio must satisfy 0 < min <= max < 1, got {mask_ratio}")
    total = height * width
    target = rng.uniform(lo, hi) * total
    max_count = hi * total
    min_h, max_h = max(1, round(side[0] * height)), max(1, round(side[1] * height))
    min_w, max_w = max(1, round(side[0] * width)), max(1, round(side[1] * width))
    mask = np.zeros((height, width), dtype=bool)
    covered = 0
    for _ in range(100_000):  # a safety bound; coverage is normally reached after a few dozen rectangles
        if covered >= target:
            break
        h, w = rng.randint(min_h, max_h + 1), rng.randint(min_w, max_w + 1)
        r, c = rng.randint(0, height - h + 1), rng.randint(0, width - w + 1)
        while True:
            new = covered + int((~mask[r : r + h, c : c + w]).sum())
            if new <= max_count or (h == 1 and w == 1):
                break
            h, w = max(1, h // 2), max(1, w // 2)
        if new > max_count:
            continue
        mask[r : r + h, c : c + w] = True
        covered = new
    return mask


class ReconstructionMaskd(Randomizable, MapTransform):
    """Corrupt ``image`` for reconstruction; keep the original as ``target``, the corrupted pixels as ``recon_mask``.

    Args: ``keys`` (one image key) and those of ``bundle.ssl.masking.BatchMasks`` (the same meaning and defaults);
    the masks of ``group`` are ``group_mask``'s, the holes MONAI's ``RandCoarseDropout``'s.

    Corrupted pixels are filled with uniform noise between the image's minimum and maximum (MONAI's
    ``RandCoarseDropout`` with ``fill_value=None``), for every mode.
    """

    def __init__(
        self,
        mode: str = "blocks",
        keys: str | Sequence[str] = "image",
        target_key: str = "target",
        mask_key: str = "recon_mask",
        num_views: int = 1,
        mask_ratio: Sequence[float] = (0.5, 0.75),
        holes: Sequence[int] | int | None = None,
        hole_size: Sequence[float] | float | None = None,
        patch_size: int = 1,
    ) -> None:
        MapTransform.__init__(self, keys)
        if mode not in MASK_MODES:
            raise ValueError(f"mask_mode {mode!r} is not one of {MASK_MODES}")
        if len(self.keys) != 1:
            raise ValueError(f"ReconstructionMaskd masks one image key, got {self.keys}")
        if num_views not in (1, 2):
            raise ValueError(f"num_views must be 1 or 2, got {num_views}")
        self.mode, self.target_key, self.mask_key, self.num_views = mode, target_key, mask_key, num_views
        if int(patch_size) < 1:
            raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
        self.patch_size = int(patch_size)
        self.mask_ratio = _pair(mask_ratio, "mask_ratio")
        holes = _MODE_DEFAULTS[mode]["holes"] if holes is None else holes
        h_lo, h_hi = _pair(holes, "holes")
        self.holes = (int(h_lo), int(h_hi))
        self.hole_size = _pair(_MODE_DEFAULTS[mode]["hole_size"] if hole_size is None else hole_size, "hole_size")
        if not 0 < self.hole_size[0] <= self.hole_size[1] <= 1:
            raise ValueError(f"hole_size must be fractions of the image side in (0, 1], got {self.hole_size}")
        self._dropout = RandCoarseDropout(
            holes=self.holes[0],
            max_holes=self.holes[1],
            spatial_size=1,
            dropout_holes=(mode != "outpaint"),
            fill_value=None,
            prob=1.0,
        )
        self._dropout.set_random_state(state=self.R)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> ReconstructionMaskd:
        super().set_random_state(seed, state)
        self._dropout.set_random_state(state=self.R)  # one stream: reproducible under set_determinism
        return self

    def randomize(self, data: Any = None) -> None:
        """Randomness is drawn per view in ``corrupt``."""

    def corrupt(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(corrupted image, mask)`` for one (C, H, W) image; mask is (1, H, W) float, 1 = corrupted."""
        height, width = int(image.shape[-2]), int(image.shape[-1])
        if self.mode == "group":
            mask = on_cells(
                lambda h, w: group_mask(h, w, self.R, self.mask_ratio, self.hole_size), height, width, self.patch_size
            )
            # NumPy, like MONAI's coarse transforms: small tensor ops in torch cost more than the work here
            out = image.detach().cpu().numpy().copy()
            noise = self.R.uniform(out.min(), out.max(), size=(out.shape[0], int(mask.sum())))
            out[:, mask] = noise.astype(out.dtype)
            return torch.from_numpy(out), torch.from_numpy(mask.astype(np.float32))[None]
        sides = [(max(1, round(f * height)), max(1, round(f * width))) for f in self.hole_size]
        self._dropout.spatial_size, self._dropout.max_spatial_size = sides
        # MONAI fills in place on a NumPy view: give it a copy so the cached image stays intact
        out = torch.as_tensor(self._dropout(image.detach().cpu().numpy().copy()))
        holes = np.zeros((height, width), dtype=bool)
        for coords in self._dropout.hole_coords:
            holes[coords[1:]] = True
        mask = holes if self.mode == "blocks" else ~holes
        return out.as_subclass(torch.Tensor), torch.from_numpy(mask.astype(np.float32))[None]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        key = self.keys[0]
        image = torch.as_tensor(d[key]).as_subclass(torch.Tensor).float()
        d[self.target_key] = image
        d[key], d[self.mask_key] = self.corrupt(image)
        if self.num_views == 2:
            d[f"{key}_2"], d[f"{self.mask_key}_2"] = self.corrupt(image)
        return d
