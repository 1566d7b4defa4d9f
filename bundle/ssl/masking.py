"""Reconstruction masks of a whole batch, made on the device that trains (CPU or CUDA).

``BatchMasks`` corrupts each image of a batch for reconstruction pretraining (and keeps the uncorrupted image as
the target and the corrupted pixels as ``recon_mask``, 1 = corrupted, so that the loss counts only those pixels):

* ``blocks``: context-encoder style holes, MONAI's ``RandCoarseDropout(holes, max_holes, spatial_size,
  max_spatial_size, dropout_holes=True)``: a hole count ``randint(holes[0], holes[1] + 1)``; per hole and axis a
  side ``randint(low, max_side + 1)`` whose ``low`` is the side of the image's previous hole (MONAI reuses it: the
  sides never shrink within an image), the first hole's ``low`` being the smallest side; a corner
  ``randint(0, n - side + 1)``. Holes may overlap.
* ``outpaint``: the same holes (``dropout_holes=False``), and the complement is corrupted.
* ``group``: GMML-style (SPCXR / SS-CXR): a coverage target uniform in ``mask_ratio`` (default 50-75 %), then random
  rectangles of side <= ``hole_size`` of the image (halved while they would pass the maximum coverage) until it is
  reached; one rectangle per image and round, every image of the batch at once, the images already covered idle.
  With ``patch_size`` p > 1 the rectangles are drawn on the grid of p x p cells (16: a ViT's patch grid, as SPCXR
  masks whole patches). MONAI has no such transform, hence the code here.

Corrupted pixels are uniform noise between each image's minimum and maximum (``fill_value=None``), as MONAI fills.
Pasting patches from another image of the batch (``paste_from_batch``) is done by ``bundle.ssl.inpainting``.
The per-image references the tests compare these distributions with (MONAI's ``RandCoarseDropout`` and GMML's
per-image rectangles) are in ``tests/ssl/reference_masks.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.precision import to_float
from ..data.views import RandomStream
from ..values import Rule, described, integer, number, number_or_range, optional

__all__ = ["MASK_MODES", "BatchMasks", "on_cells", "paste_from_batch"]

MASK_MODES = ("blocks", "group", "outpaint")
# Per-mode defaults: (holes min, max) and hole side (min, max) as fractions of the image side.
_MODE_DEFAULTS = {
    "blocks": {"holes": (6, 12), "hole_size": (0.05, 0.25)},
    "outpaint": {"holes": (3, 6), "hole_size": (0.15, 0.4)},
    "group": {"holes": (1, 1), "hole_size": (0.05, 0.3)},  # group adds rectangles until the coverage is reached
}


def _pair(value: Sequence[float] | float, name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if lo > hi:
        raise ValueError(f"{name}: minimum {lo} is larger than maximum {hi}")
    return float(lo), float(hi)


def on_cells(mask_fn: Callable[[int, int], Any], height: int, width: int, patch_size: int = 1) -> Any:
    """A mask drawn on the grid of ``patch_size`` x ``patch_size`` cells, blown up to (..., H, W) pixels.

    ``mask_fn(h, w)`` draws a (..., h, w) mask (NumPy or torch) on ceil(H / p) x ceil(W / p) cells; each cell then
    covers p x p pixels (the last row and column cropped when p does not divide the side).
    """
    if patch_size <= 1:
        return mask_fn(height, width)
    cells = mask_fn(-(-height // patch_size), -(-width // patch_size))
    if isinstance(cells, torch.Tensor):
        pixels = cells.repeat_interleave(patch_size, -2).repeat_interleave(patch_size, -1)
    else:
        pixels = cells.repeat(patch_size, -2).repeat(patch_size, -1)
    return pixels[..., :height, :width]


# rounds of group rectangles between two checks that every image reached its coverage (a check syncs the device)
_CHECK_EVERY = 8
_MAX_ROUNDS = 100_000  # a safety bound; the coverage is normally reached after a few dozen rounds


class BatchMasks(RandomStream):
    """Masked reconstruction inputs of a batch: ``masks(images)`` with ``images`` (B, C, H, W) -> a dict of (B, ...).

    Returns ``{image_key: corrupted (B, C, H, W), target_key: the uncorrupted images (B, C, H, W),
    mask_key: (B, 1, H, W) float, 1 = corrupted}``, and with ``num_views`` 2 a second, independently masked view of
    the same images (``<image_key>_2``, ``<mask_key>_2``). All float32, on the images' device.

    Args:
        mode: ``blocks`` | ``group`` | ``outpaint`` (see the module docstring).
        num_views: 2 adds an independently masked second view (``<image_key>_2`` and ``<mask_key>_2``) for the
            combined reconstruction + contrastive objective.
        mask_ratio: (min, max) share of the image corrupted by ``group`` masks.
        holes: (min, max) number of holes for ``blocks`` / ``outpaint``; None = the mode's default.
        hole_size: (min, max) hole side as a fraction of the image side (``group``: rectangle side); None = default.
        patch_size: ``group`` masks cover whole cells of this many pixels a side (16 for a ViT: whole patches);
            1 = pixels. The other modes ignore it.
        views: random augmentations applied first (a ``bundle.data.views.BatchViews``, (B, C, H, W) ->
            (B, C, S, S) float): the target is the augmented image; without them the
            images are only made float (compact uint8 / uint16 caches become [0, 1]).
        seed: seeds the masks' random stream (``RandomStream``) when there are no views; with ``BatchViews`` the
            masks draw from the views' stream (one stream: two generators seeded alike would repeat each
            other's draws), which its seed sets.
        image_key, target_key, mask_key: the batch keys written (those ``bundle.ssl.inpainting.Inpainting`` reads).
    """

    def __init__(
        self,
        mode: str = "blocks",
        num_views: int = 1,
        mask_ratio: Sequence[float] = (0.5, 0.75),
        holes: Sequence[int] | int | None = None,
        hole_size: Sequence[float] | float | None = None,
        patch_size: int = 1,
        views: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        image_key: str = "image",
        target_key: str = "target",
        mask_key: str = "recon_mask",
    ) -> None:
        super().__init__(seed)
        if mode not in MASK_MODES:
            raise ValueError(f"mask_mode {mode!r} is not one of {MASK_MODES}")
        if num_views not in (1, 2):
            raise ValueError(f"num_views must be 1 or 2, got {num_views}")
        self.mode, self.num_views, self.views = mode, int(num_views), views
        self.mask_ratio = _pair(mask_ratio, "mask_ratio")
        if mode == "group" and not 0 < self.mask_ratio[0] <= self.mask_ratio[1] < 1:
            raise ValueError(f"mask_ratio must satisfy 0 < min <= max < 1, got {self.mask_ratio}")
        h_lo, h_hi = _pair(_MODE_DEFAULTS[mode]["holes"] if holes is None else holes, "holes")
        self.holes = (int(h_lo), int(h_hi))
        self.hole_size = _pair(_MODE_DEFAULTS[mode]["hole_size"] if hole_size is None else hole_size, "hole_size")
        if not 0 < self.hole_size[0] <= self.hole_size[1] <= 1:
            raise ValueError(f"hole_size must be fractions of the image side in (0, 1], got {self.hole_size}")
        if int(patch_size) < 1:
            raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
        self.patch_size = int(patch_size)
        self.image_key, self.target_key, self.mask_key = image_key, target_key, mask_key

    def without_views(self, seed: int) -> BatchMasks:
        """The same masks without the augmentations, on a random stream of their own seeded by ``seed``: what the
        reconstruction pictures draw never moves the training stream."""
        masks = copy.copy(self)
        masks.views = None
        RandomStream.__init__(masks, seed)
        return masks

    def _shared(self) -> RandomStream | None:
        return self.views if isinstance(self.views, RandomStream) else None

    def generator(self, device: torch.device | str) -> torch.Generator:
        shared = self._shared()
        return shared.generator(device) if shared is not None else super().generator(device)

    def set_random_state(self, seed: int | None = None) -> RandomStream:
        shared = self._shared()
        if shared is not None:
            shared.set_random_state(seed)
        return super().set_random_state(seed)

    def state_dict(self) -> dict[str, Any]:
        shared = self._shared()
        return shared.state_dict() if shared is not None else super().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shared = self._shared()
        (shared if shared is not None else super()).load_state_dict(state)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, H, W) images (float, or compact integers) -> the masked batch (see the class docstring)."""
        if images.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        target = self.views(images) if self.views is not None else to_float(images)
        out = {self.target_key: target}
        for suffix in [""] + (["_2"] if self.num_views == 2 else []):
            mask = self.mask(target.shape[0], target.shape[-2], target.shape[-1], target.device)
            out[self.image_key + suffix] = self.fill(target, mask)
            out[self.mask_key + suffix] = mask.unsqueeze(1).to(target.dtype)
        return out

    # -----------------------------------------------------------------------------------------------------------
    # masks

    def mask(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, H, W) bool masks of corrupted pixels, each image its own."""
        if self.mode == "group":
            # one implementation on every device: on a 2-core CPU at 224 px these rounds take about 6 ms an image
            # (a per-image NumPy loop 0.8 ms), about 2 % of an inpainting step of batch 8 there
            return on_cells(lambda h, w: self._group(n, h, w, torch.device(device)), height, width, self.patch_size)
        holes = self.holes_mask(n, height, width, device)
        return holes if self.mode == "blocks" else ~holes

    def _randint(
        self, lo: torch.Tensor | float, hi: torch.Tensor | float, shape: tuple[int, ...], device
    ) -> torch.Tensor:
        """Integers uniform in [lo, hi) (per element bounds, broadcast to ``shape``), as int64."""
        gen = self.generator(device)
        lo_t = torch.as_tensor(lo, dtype=torch.float64, device=device).expand(shape)
        hi_t = torch.as_tensor(hi, dtype=torch.float64, device=device).expand(shape)
        draw = torch.floor(lo_t + (hi_t - lo_t) * torch.rand(shape, generator=gen, device=device, dtype=torch.float64))
        return torch.minimum(draw, hi_t - 1).long()

    def _sides(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(smallest, largest) hole side of each axis in pixels, rounded as MONAI's coarse dropout is given them."""
        low, high = ((max(1, round(f * height)), max(1, round(f * width))) for f in self.hole_size)
        return (low[0], high[0]), (low[1], high[1])

    def hole_params(
        self, n: int, height: int, width: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each image's coarse-dropout holes (``RandCoarseDropout.randomize``): ``count`` (n,), ``start`` and
        ``size`` (n, K, 2) int64 pixels of (height, width), K = the most holes; holes past ``count`` are unused."""
        device = torch.device(device)
        most = self.holes[1]
        count = self._randint(self.holes[0], self.holes[1] + 1, (n,), device)
        starts, sizes = [], []
        for axis, side in enumerate(self._sides(height, width)):
            extent = (height, width)[axis]
            # MONAI draws each hole's side from [previous hole's side, largest]: a short loop over the holes
            size = torch.full((n,), side[0], dtype=torch.long, device=device)
            per_hole = []
            for _ in range(most):
                size = self._randint(size, side[1] + 1, (n,), device)
                per_hole.append(size)
            s = torch.stack(per_hole, dim=1).clamp(max=extent)  # (n, K); get_valid_patch_size
            starts.append(self._randint(0, extent - s + 1, (n, most), device))
            sizes.append(s)
        return count, torch.stack(starts, dim=2), torch.stack(sizes, dim=2)

    def holes_mask(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, H, W) bool union of each image's holes."""
        count, start, size = self.hole_params(n, height, width, device)
        rows = self._span(start[..., 0], size[..., 0], height)  # (n, K, H)
        cols = self._span(start[..., 1], size[..., 1], width)  # (n, K, W)
        rows = rows & (torch.arange(rows.shape[1], device=rows.device) < count.unsqueeze(1)).unsqueeze(2)
        # pixel (r, c) is in a hole when a hole spans row r and column c: a batched product counts them
        return torch.bmm(rows.transpose(1, 2).float(), cols.float()) > 0

    @staticmethod
    def _span(start: torch.Tensor, size: torch.Tensor, extent: int) -> torch.Tensor:
        """(..., extent) bool: which of ``extent`` positions lie in [start, start + size)."""
        pos = torch.arange(extent, device=start.device)
        return (pos >= start.unsqueeze(-1)) & (pos < (start + size).unsqueeze(-1))

    def _group(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(n, H, W) bool GMML masks, one rectangle per image and round.

        Each round reads and writes only the pixels of the rectangles: a (n, max_h, max_w) block of indices into the
        flat masks (the unused part of the block points at one spare element that stays 0), so a round costs the
        rectangles, not the images.
        """
        gen = self.generator(device)
        total = height * width
        lo, hi = self.mask_ratio
        target = (lo + (hi - lo) * torch.rand(n, generator=gen, device=device, dtype=torch.float64)) * total
        max_count = hi * total
        (min_h, max_h), (min_w, max_w) = self._sides(height, width)
        # a rectangle halved k times (floor, at least 1) for every k until both sides are 1: the candidates
        divisor = 2 ** torch.arange(max(max_h, max_w).bit_length(), device=device)  # (L,)
        free = torch.ones(n * total + 1, device=device)  # 1 = not yet covered; the last element is the spare
        spare = n * total
        free[spare] = 0
        ii = torch.arange(max_h, device=device).view(1, -1, 1)
        jj = torch.arange(max_w, device=device).view(1, 1, -1)
        first = (torch.arange(n, device=device) * total).view(-1, 1, 1)
        covered = torch.zeros(n, dtype=torch.float64, device=device)
        for step in range(_MAX_ROUNDS):
            # within a pixel of the maximum no uncovered pixel fits any more: the rounds would only spin to their
            # safety bound without changing the mask, so such an image is done (the batch must not wait for it)
            active = (covered < target) & (covered + 1 <= max_count)  # (n,)
            if step % _CHECK_EVERY == 0 and not bool(active.any()):
                break
            h = self._randint(min_h, max_h + 1, (n,), device)
            w = self._randint(min_w, max_w + 1, (n,), device)
            r = self._randint(0, height - h + 1, (n,), device)
            c = self._randint(0, width - w + 1, (n,), device)
            inside = (ii < h.view(-1, 1, 1)) & (jj < w.view(-1, 1, 1))  # (n, max_h, max_w)
            index = torch.where(inside, first + (r.view(-1, 1, 1) + ii) * width + c.view(-1, 1, 1) + jj, spare)
            block = torch.take(free, index)  # (n, max_h, max_w): 1 where the rectangle is still uncovered
            chosen = covered + block.sum(dim=(1, 2)).double()
            fits = (chosen <= max_count) | ((h == 1) & (w == 1))
            if not bool((fits | ~active).all()):
                # some rectangle passes the maximum: halve it until it fits (rare, so only then every candidate:
                # same corner, floor-halved sides, their uncovered pixels read off a 2D running sum)
                running = block.cumsum(1).cumsum(2).flatten(1)  # (n, max_h * max_w)
                hk, wk = (h.unsqueeze(1) // divisor).clamp(min=1), (w.unsqueeze(1) // divisor).clamp(min=1)  # (n, L)
                new = covered.unsqueeze(1) + running.gather(1, (hk - 1) * max_w + wk - 1).double()
                ends = (new <= max_count) | ((hk == 1) & (wk == 1))  # the 1 x 1 candidate always ends the halving
                k = ends.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first candidate that ends it
                chosen, h, w = new.gather(1, k).squeeze(1), hk.gather(1, k).squeeze(1), wk.gather(1, k).squeeze(1)
            accept = active & (chosen <= max_count)
            h = h * accept  # a rejected rectangle paints nothing
            paint = (ii < h.view(-1, 1, 1)) & (jj < w.view(-1, 1, 1))  # within `inside`: the sides only shrink
            free.index_fill_(0, index[paint], 0)  # the accepted rectangles are covered
            covered = torch.where(accept, chosen, covered)
        return free[:spare].view(n, height, width) == 0

    # -----------------------------------------------------------------------------------------------------------
    # fill

    def fill(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``images`` (B, C, H, W) with the ``mask`` (B, H, W) pixels replaced by uniform noise in each image's range."""
        flat = images.flatten(1)
        low = flat.amin(dim=1).view(-1, 1, 1, 1)
        high = flat.amax(dim=1).view(-1, 1, 1, 1)
        noise = torch.rand(images.shape, generator=self.generator(images.device), device=images.device)
        noise = low + (high - low) * noise.to(images.dtype)
        return torch.where(mask.unsqueeze(1), noise, images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, num_views={self.num_views}, seed={self.seed})"


def paste_from_batch(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, prob: float) -> torch.Tensor:
    """GMML's replacement: with probability ``prob`` per image, fill its masked pixels from another image.

    The donor is the uncorrupted ``target`` of a different image of the batch (never the image itself).
    """
    batch = image.shape[0]
    if prob <= 0 or batch < 2:
        return image
    device = image.device
    chosen = torch.rand(batch, device=device) < prob
    donor = (torch.arange(batch, device=device) + torch.randint(1, batch, (batch,), device=device)) % batch
    region = (mask > 0) & chosen.view(-1, 1, 1, 1)
    return torch.where(region, target[donor].to(image.dtype), image)


# the settings of the masks (bundle.settings gathers them)
RULES: dict[str, Rule] = {
    "mask_ratio": described(
        number_or_range(number(0, 1, lo_open=True, hi_open=True)),
        "``group_masked``: share of the image the masks cover",
    ),
    "holes": described(
        optional(number_or_range(integer(1))),
        "``inpainting``, ``outpainting``: number of holes; null keeps the method's own",
    ),
    "hole_size": described(
        optional(number_or_range(number(0, 1, lo_open=True))),
        "hole side as a share of the image side; null keeps the method's own",
    ),
    "mask_patch_size": described(integer(1), "``group_masked``: side in pixels of the cells the masks cover"),
    "replace_prob": described(
        number(0, 1), "share of images whose masked pixels come from another image of the batch instead of noise"
    ),
}
