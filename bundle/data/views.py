"""Random augmented views of a whole batch, made on the device that trains (CPU or CUDA): the one implementation
of pretraining's augmentations (contrastive views, and the augmentations of reconstruction and pretext pretraining).

They are MONAI's per-image transforms, with every parameter drawn from the same distribution, but computed with
batched torch ops, each sample of the batch drawing its own parameters. MONAI's chain (``RandScaleCrop``,
``Resize``, ``RandFlip``, ``RandAffine``, ``RandAdjustContrast``, ``RandHistogramShift``, ``RandGaussianSmooth``,
``RandGaussianNoise``) is the reference ``tests/data/test_views.py`` compares them with, in distribution.

Why batched on the device and not per image in the DataLoader workers: on a GPU the workers' CPU would feed the
model, and here the views cost one batched resampling. On the CPU neither way limits training; measured on a
2-core CPU (SimCLR, resnet18, 224 px, batch 16, the benchmark's data path without the model): 151 views/s batched
in the main process against 111 per image in one worker (239 and 277 with two workers), both over 30 times the
6.6 to 7.4 views/s the model trains at.

* ``RandScaleCrop`` (per axis a size ``randint(ceil(crop_min_scale * n), n + 1)`` and a corner
  ``randint(0, n - size + 1)``), ``Resize`` (bilinear) to ``image_size``, ``RandFlip`` of the width axis and
  ``RandAffine`` (rotation ``U(-rotate_range, rotate_range)``, scale ``1 + U(-scale_range, scale_range)``,
  translation ``U(-translate_range, translate_range)`` pixels) are ONE affine map per sample from output to input
  coordinates, so one ``affine_grid`` + ``grid_sample`` makes them all; a view that none of them moves (the whole
  image as crop, ``crop_min_scale`` 1.0, at its own size, neither flipped nor transformed) is copied as it is.
  As in MONAI, a single ``scale_range`` value scales the first spatial axis (height) only, and the pixels the
  rotation brings in from outside the resized crop are zeros (bilinear weights of zeros padding), while the crop
  itself reads its border pixels as ``Resize`` does.
* ``RandAdjustContrast``: ``((x - min) / (range + 1e-7)) ** gamma * range + min`` per image, ``gamma`` uniform in
  ``gamma_range`` (no inversion, no retained statistics: MONAI's defaults).
* ``RandHistogramShift``: ``randint(lo, hi + 1)`` control points, evenly spaced over each image's [min, max]; each
  inner point moves to ``U(previous moved point, next original point)``; piecewise linear mapping.
* ``RandGaussianSmooth``: a sigma per axis uniform in ``blur_sigma``; MONAI's ``erf`` kernel truncated at 4 sigma,
  zeros padding; a separable grouped convolution with one kernel per sample.
* ``RandGaussianNoise``: a standard deviation uniform in [0, ``noise_std``] per image (``sample_std``), zero mean.

The one composed resampling interpolates once instead of twice (crop-resize, then rotate), so a rotated view is
marginally sharper than MONAI's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..distributed import rank_seed
from ..values import Rule, described, integer, number, number_or_range
from .precision import to_float

__all__ = ["BatchViews", "RandomStream", "ViewParams"]

Range = float | Sequence[float]


@dataclass
class ViewParams:
    """The random parameters of ``B`` views (every tensor has ``B`` rows, on the views' device).

    ``crop`` is (B, 4) float: top, left, height, width of the crop in input pixels (integers, as MONAI's slices);
    ``angle`` (B,) radians; ``scale`` (B, 2) factors of (height, width); ``translate`` (B, 2) pixels of (height,
    width) of the resized crop; ``gamma`` (B,); ``points`` (B,) number of
    histogram control points and ``control`` (B, K) their moved positions in [0, 1] (1.0 past ``points``);
    ``sigma`` (B, 2) blur sigma of (height, width) in pixels; ``noise_std`` (B,). The boolean (B,) masks say which
    random transform each view applies; the other parameters of a view that does not apply it are meaningless.
    """

    crop: torch.Tensor
    flip: torch.Tensor
    affine: torch.Tensor
    angle: torch.Tensor
    scale: torch.Tensor
    contrast: torch.Tensor
    gamma: torch.Tensor
    shift: torch.Tensor
    points: torch.Tensor
    control: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    noise: torch.Tensor
    noise_std: torch.Tensor
    translate: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, index: torch.Tensor) -> ViewParams:
        """The parameters of the views ``index`` (b,) only."""
        return ViewParams(**{k: v[index] for k, v in self.as_dict().items()})


def _pair(value: Range, name: str) -> tuple[float, float]:
    """``[min, max]`` from one value (both ends) or a pair."""
    values = [float(v) for v in value] if isinstance(value, Sequence) else [float(value)]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] > values[1]:
        raise ValueError(f"{name} must be one value or [min, max], got {value!r}")
    return values[0], values[1]


def _symmetric(value: Range) -> tuple[float, float]:
    """MONAI's ``RandAffineGrid`` range of one axis: ``x`` means ``[-x, x]``, a pair is ``[min, max]``."""
    if isinstance(value, Sequence):
        lo, hi = (float(v) for v in value)
        return lo, hi
    return -float(value), float(value)


class RandomStream:
    """A seeded ``torch.Generator`` on the device of the data it draws for, with a resumable position.

    ``set_random_state(seed)`` restarts the stream from ``seed``; ``state_dict()`` / ``load_state_dict()`` save
    and restore its exact position (the generator's state and device). Under torch.distributed, process ``r``
    uses ``seed + r``.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._pending_state: dict[str, Any] | None = None

    def set_random_state(self, seed: int | None = None) -> RandomStream:
        """Restart the random stream from ``seed`` (default: the constructor's)."""
        if seed is not None:
            self.seed = int(seed)
        self._generator = None
        self._pending_state = None
        return self

    def state_dict(self) -> dict[str, Any]:
        """The seed and the generator's position (``None`` before the first call)."""
        gen = self._generator
        return {
            "seed": self.seed,
            "device": None if gen is None else str(gen.device),
            "generator": None if gen is None else gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream where ``state_dict()`` left it (restored at the next call, on its device)."""
        self.seed = int(state["seed"])
        self._generator = None
        self._pending_state = state if state.get("generator") is not None else None

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator on ``device``: made (seeded, or restored) at the first use, and again if the device changes."""
        device = torch.device(device)
        gen = self._generator
        if gen is not None and gen.device.type == device.type and (gen.device.index or 0) == (device.index or 0):
            return gen
        gen = torch.Generator(device=device)
        pending = self._pending_state
        if pending is not None and torch.device(pending["device"]).type == device.type:
            gen.set_state(pending["generator"])
        else:
            gen.manual_seed(rank_seed(self.seed))  # the processes of one run draw different views
        self._generator, self._pending_state = gen, None
        return gen


class BatchViews(RandomStream):
    """Random views of a batch: ``views(images)`` with ``images`` (B, 1, H, W) on any device -> (B, 1, S, S) float32.

    Args:
        image_size: output side ``S`` (the ``Resize`` of the crop).
        crop_min_scale: ``RandScaleCrop(roi_scale=crop_min_scale, max_roi_scale=1, random_size=True)``.
        hflip_prob: ``RandFlip(prob, spatial_axis=1)``.
        affine_prob, rotate_range, scale_range: ``RandAffine(prob, rotate_range, scale_range, padding_mode="zeros")``;
            as in MONAI, one ``scale_range`` value scales the height only; a sequence gives one range per axis
            (height, width), each ``x`` (for ``[-x, x]``) or ``[min, max]``.
        translate_range: ``RandAffine(translate_range)`` in pixels of the resized crop, the same per-axis convention
            as ``scale_range`` (one value moves along the height only); 0 (default) does not translate.
        contrast_prob, gamma_range: ``RandAdjustContrast(prob, gamma)`` (one number ``g`` means ``[0.5, g]``).
        hist_shift_prob, hist_shift_points: ``RandHistogramShift(num_control_points, prob)``.
        blur_prob, blur_sigma: ``RandGaussianSmooth(sigma_x=blur_sigma, sigma_y=blur_sigma, prob)``.
        noise_prob, noise_std: ``RandGaussianNoise(prob, std=noise_std)`` (the std itself uniform in [0, noise_std]).
        seed: seeds the random stream (a ``torch.Generator`` on the images' device, made at the first call; under
            torch.distributed, process ``r`` uses ``seed + r``).

    Seeding: ``set_random_state(seed)`` restarts the stream from ``seed``; ``state_dict()`` / ``load_state_dict()``
    save and restore its exact position (the generator's state and device). Equal seeds give equal views on one
    device; CPU and CUDA generators give different streams.
    """

    def __init__(
        self,
        image_size: int,
        crop_min_scale: float = 0.5,
        hflip_prob: float = 0.0,
        affine_prob: float = 0.5,
        rotate_range: Range = 0.17,
        scale_range: Range | Sequence[Range] = 0.1,
        translate_range: Range | Sequence[Range] = 0.0,
        contrast_prob: float = 0.8,
        gamma_range: Range = (0.7, 1.5),
        hist_shift_prob: float = 0.3,
        hist_shift_points: int | Sequence[int] = (5, 10),
        blur_prob: float = 0.3,
        blur_sigma: Range = (0.1, 1.0),
        noise_prob: float = 0.2,
        noise_std: float = 0.02,
        seed: int = 0,
    ) -> None:
        self.image_size = int(image_size)
        self.crop_min_scale = float(crop_min_scale)
        self.hflip_prob = float(hflip_prob)
        self.affine_prob = float(affine_prob)
        # only the first rotation range counts in 2D (MONAI's create_rotate)
        self.rotate_range = _symmetric(rotate_range[0] if isinstance(rotate_range, Sequence) else rotate_range)
        # one range per axis, the rest unscaled: a single value scales the height only, as in MONAI's RandAffineGrid
        self.scale_range = self._per_axis(scale_range)
        self.translate_range = self._per_axis(translate_range)
        self.contrast_prob = float(contrast_prob)
        gamma = (0.5, float(gamma_range)) if not isinstance(gamma_range, Sequence) else _pair(gamma_range, "gamma")
        self.gamma_range = (min(gamma), max(gamma))
        lo, hi = _pair(hist_shift_points, "hist_shift_points")
        if lo < 3:
            raise ValueError(f"hist_shift_points must be >= 3, got {hist_shift_points!r}")
        self.hist_shift_points = (int(lo), int(hi))
        self.hist_shift_prob = float(hist_shift_prob)
        self.blur_prob = float(blur_prob)
        self.blur_sigma = _pair(blur_sigma, "blur_sigma")
        self.noise_prob = float(noise_prob)
        self.noise_std = float(noise_std)
        RandomStream.__init__(self, seed)

    @staticmethod
    def _per_axis(value: Range | Sequence[Range]) -> list[tuple[float, float]]:
        """(height, width) ranges; a single value covers the height only, as in MONAI's RandAffineGrid."""
        per_axis = list(value)[:2] if isinstance(value, Sequence) else [value]
        return [_symmetric(v) for v in per_axis] + [(0.0, 0.0)] * (2 - len(per_axis))

    # -----------------------------------------------------------------------------------------------------------
    # parameters

    def sample(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> ViewParams:
        """Draw the parameters of ``n`` views of (height, width) inputs, each view its own."""
        gen = self.generator(device)

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, *shape, generator=gen, device=device)

        def coin(prob: float) -> torch.Tensor:
            return torch.rand(n, generator=gen, device=device) < prob

        def randint(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
            """Integers uniform in [lo, hi) (per element bounds), as float."""
            draw = torch.floor(lo + (hi - lo) * torch.rand(lo.shape, generator=gen, device=device))
            return torch.minimum(draw, hi - 1)

        sides = torch.tensor([height, width], dtype=torch.float32, device=device).expand(n, 2)
        smallest = torch.tensor([math.ceil(self.crop_min_scale * s) for s in (height, width)], device=device)
        size = randint(smallest.to(torch.float32).expand(n, 2), sides + 1)
        corner = randint(torch.zeros_like(sides), sides - size + 1)
        crop = torch.cat([corner, size], dim=1)

        flip = coin(self.hflip_prob)
        affine = coin(self.affine_prob)
        angle = uniform(*self.rotate_range)
        scale = torch.stack([1.0 + uniform(*r) for r in self.scale_range], dim=1)
        if any(r != (0.0, 0.0) for r in self.translate_range):
            translate = torch.stack([uniform(*r) for r in self.translate_range], dim=1)
        else:  # no draw: the stream (hence the views) of configs without translation stays as it was
            translate = torch.zeros(n, 2, device=device)

        contrast = coin(self.contrast_prob)
        gamma = uniform(*self.gamma_range)

        shift = coin(self.hist_shift_prob)
        lo, hi = self.hist_shift_points
        points = randint(torch.full((n,), float(lo), device=device), torch.full((n,), float(hi + 1), device=device))
        control = self._control_points(points, hi, gen)

        blur = coin(self.blur_prob)
        sigma = uniform(*self.blur_sigma, 2)
        noise = coin(self.noise_prob)
        noise_std = uniform(0.0, self.noise_std)
        geometry = dict(crop=crop, flip=flip, affine=affine, angle=angle, scale=scale, translate=translate)
        levels = dict(contrast=contrast, gamma=gamma, shift=shift, points=points.long(), control=control)
        return ViewParams(**geometry, **levels, blur=blur, sigma=sigma, noise=noise, noise_std=noise_std)

    @staticmethod
    def _control_points(points: torch.Tensor, most: int, gen: torch.Generator) -> torch.Tensor:
        """(B, most) moved control points: point ``i`` uniform between the moved point ``i - 1`` and the original
        point ``i + 1`` (``RandHistogramShift.randomize``), ends fixed at 0 and 1, 1.0 past each row's count."""
        n, device = len(points), points.device
        steps = (points - 1).unsqueeze(1)  # (B, 1) intervals
        index = torch.arange(most, device=device, dtype=torch.float32).unsqueeze(0)
        reference = (index / steps).clamp(max=1.0)  # (B, most): linspace(0, 1, points), then 1.0
        moved = reference.clone()
        draws = torch.rand(n, max(most - 2, 0), generator=gen, device=device)
        for i in range(1, most - 1):
            inner = i < steps[:, 0]  # an inner point of this row
            value = moved[:, i - 1] + draws[:, i - 1] * (reference[:, i + 1] - moved[:, i - 1])
            moved[:, i] = torch.where(inner, value, moved[:, i])
        return moved

    # -----------------------------------------------------------------------------------------------------------
    # views

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images (float in [0, 1], or uint8/uint16 compact) -> (B, 1, S, S) float32 random views."""
        if images.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        params = self.sample(images.shape[0], images.shape[-2], images.shape[-1], images.device)
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """The views of ``images`` (B, C, H, W) with given parameters -> (B, C, S, S) float32."""
        x = to_float(images)  # compact caches travel as integers and become [0, 1] floats here, on the device
        # the resampled batch is a new tensor: the intensity steps below write into it in place
        x = self._resample(x, params)
        x = self._adjust_contrast(x, params.contrast, params.gamma)
        x = self._histogram_shift(x, params.shift, params.points, params.control)
        x = self._smooth(x, params.blur, params.sigma)
        return self._add_noise(x, params.noise, params.noise_std)

    def _resample(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Crop, resize, flip and rotate/scale/translate: (B, C, H, W) -> a new (B, C, S, S) tensor."""
        n, _, height, width = x.shape
        if (height, width) != (self.image_size, self.image_size):
            return self._warp(x, p)
        full = torch.tensor([0, 0, height, width], dtype=p.crop.dtype, device=p.crop.device)
        moved = p.affine | p.flip | (p.crop != full).any(dim=1)
        index = self._select(moved)
        if index is not None and len(index) == n:
            return self._warp(x, p)
        # views that nothing moves are the image itself (an exact copy, not a resampling)
        out = x.clone()  # a new tensor: the intensity steps write into it in place
        if index is not None:
            out[index] = self._warp(x[index], p.select(index))
        return out

    def _warp(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Crop, resize, flip and rotate/scale/translate in one bilinear resampling. (B, C, H, W) -> (B, C, S, S).

        In normalised (align_corners=False) coordinates, ordered (height, width), an output point ``u`` comes from
        ``v = M u + R t`` of the flipped resized crop (``M = R(angle) diag(scale)``, ``t = 2 translate / S``:
        MONAI's backward mapping ``R T S``, the identity without the affine), ``v' = diag(1, -1) v`` with a flip,
        and input point ``w = diag(h / H, w / W) v' + (2 corner + size) / (H, W) - 1``.
        """
        n, c, height, width = x.shape
        size, dtype, device = self.image_size, x.dtype, x.device
        cos, sin = torch.cos(p.angle), torch.sin(p.angle)
        eye = torch.eye(2, dtype=dtype, device=device).expand(n, 2, 2)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2).to(dtype)
        m = torch.where(p.affine[:, None, None], rot @ torch.diag_embed(p.scale.to(dtype)), eye)
        shift = (rot @ (p.translate.to(dtype) * (2.0 / size)).unsqueeze(2)).squeeze(2)  # (B, 2): R t, normalised
        shift = shift * p.affine.to(dtype).unsqueeze(1)
        flip = torch.ones(n, 2, dtype=dtype, device=device)
        flip[:, 1] = 1.0 - 2.0 * p.flip.to(dtype)
        sides = torch.tensor([height, width], dtype=dtype, device=device)
        corner, extent = p.crop[:, :2].to(dtype), p.crop[:, 2:].to(dtype)
        linear = (extent / sides).unsqueeze(2) * flip.unsqueeze(2) * m  # diag(h/H, w/W) diag(flip) M
        offset = (2 * corner + extent) / sides - 1 + (extent / sides) * flip * shift
        # grid_sample orders coordinates (x = width, y = height): reverse both axes
        theta = torch.cat([linear.flip(1).flip(2), offset.flip(1).unsqueeze(2)], dim=2)  # (B, 2, 3)
        base = self._base_grid(size, dtype, device)  # (S * S, 3): x, y, 1
        # one batched matmul makes the grid (F.affine_grid does the same, several times slower on CPU)
        grid = torch.matmul(base, theta.transpose(1, 2)).view(n, size, size, 2)
        # border padding: the crop reads its edge pixels like Resize (interpolate clamps at the edges)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        index = self._select(p.affine)
        if index is not None:
            # RandAffine pads the resized crop with zeros; bilinear sampling at v = M u (pixel p = (S (v + 1) - 1) / 2)
            # keeps the share clamp(min(p + 1, S - p), 0, 1) = clamp((S + 1) / 2 - S |v| / 2, 0, 1) per axis
            v = torch.matmul(base[:, :2], m[index].flip(1).flip(2).transpose(1, 2))  # (b, S * S, 2), (x, y)
            v = v + shift[index].flip(1).unsqueeze(1)
            weight = v.abs_().mul_(-size / 2).add_((size + 1) / 2).clamp_(0, 1).prod(dim=-1)
            out[index] = out[index] * weight.view(-1, 1, size, size)
        return out

    @staticmethod
    def _base_grid(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(S * S, 3) homogeneous pixel centres (x, y, 1) of an S x S image, normalised as align_corners=False."""
        centres = (torch.arange(size, dtype=dtype, device=device) * 2 + 1) / size - 1
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(-1, 3)

    @staticmethod
    def _select(mask: torch.Tensor) -> torch.Tensor | None:
        """Indices of the views that apply a transform, or None when none do (skips the work)."""
        index = mask.nonzero().squeeze(1)
        return index if index.numel() else None

    def _adjust_contrast(self, x: torch.Tensor, mask: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Gamma on each image's own [min, max] range (``AdjustContrast``)."""
        index = self._select(mask)
        if index is None:
            return x
        sub = x[index]
        flat = sub.flatten(1)
        low = flat.amin(1).view(-1, 1, 1, 1)
        span = flat.amax(1).view(-1, 1, 1, 1) - low
        g = gamma[index].to(x.dtype).view(-1, 1, 1, 1)
        x[index] = ((sub - low) / (span + 1e-7)).pow(g) * span + low
        return x

    def _histogram_shift(
        self, x: torch.Tensor, mask: torch.Tensor, points: torch.Tensor, control: torch.Tensor
    ) -> torch.Tensor:
        """Piecewise linear intensity map through the moved control points (``RandHistogramShift``)."""
        index = self._select(mask)
        if index is None:
            return x
        sub = x[index]
        flat = sub.flatten(1)  # (b, N)
        low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        span = high - low
        steps = (points[index] - 1).to(x.dtype).unsqueeze(1)  # (b, 1) intervals between control points
        fp = control[index].to(x.dtype)  # (b, K)
        most = fp.shape[1]
        # the control points are evenly spaced, so the map is a linear interpolation in a K-entry table at position
        # steps * (x - min) / span: grid_sample does it (align_corners=True: -1 and 1 are the first and last entry)
        grid = torch.zeros(flat.shape[0], 1, flat.shape[1], 2, dtype=x.dtype, device=x.device)
        scale = steps * (2.0 / max(most - 1, 1)) / span.clamp_min(torch.finfo(x.dtype).tiny)
        grid[..., 0] = ((flat - low) * scale - 1).unsqueeze(1)
        table = F.grid_sample(fp.view(-1, 1, 1, most), grid, mode="bilinear", align_corners=True).view_as(flat)
        mapped = table * span + low
        # a constant image is left alone, as MONAI does
        mapped = torch.where(span > 0, mapped, flat)
        x[index] = mapped.view_as(sub)
        return x

    def _smooth(self, x: torch.Tensor, mask: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with one kernel per view (grouped convolution), zeros padding."""
        index = self._select(mask)
        if index is None:
            return x
        sub, s = x[index], sigma[index].to(x.dtype)  # (b, C, S, S), (b, 2)
        b, c = sub.shape[:2]
        # MONAI's gaussian_1d: tail = int(max(4 sigma, 0.5) + 0.5); one common width, zero weights past each tail
        tails = torch.floor(torch.clamp(4.0 * s, min=0.5) + 0.5)
        tail = int(tails.max().item())
        pos = torch.arange(-tail, tail + 1, dtype=x.dtype, device=x.device).view(1, 1, -1)
        t = 0.70710678 / s.abs().unsqueeze(2)  # (b, 2, 1)
        kernel = (0.5 * (torch.erf(t * (pos + 0.5)) - torch.erf(t * (pos - 0.5)))).clamp(min=0)
        kernel = kernel * (pos.abs() <= tails.unsqueeze(2))
        kernel = kernel / kernel.sum(dim=2, keepdim=True)  # (b, 2, K)
        k = 2 * tail + 1
        rows = kernel[:, 0].repeat_interleave(c, dim=0).view(b * c, 1, k, 1)
        cols = kernel[:, 1].repeat_interleave(c, dim=0).view(b * c, 1, 1, k)
        flat = sub.reshape(1, b * c, *sub.shape[2:])
        flat = F.conv2d(flat, rows, padding=(tail, 0), groups=b * c)
        flat = F.conv2d(flat, cols, padding=(0, tail), groups=b * c)
        x[index] = flat.view_as(sub)
        return x

    def _add_noise(self, x: torch.Tensor, mask: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Zero-mean Gaussian noise with each view's own standard deviation."""
        index = self._select(mask)
        if index is None:
            return x
        gen = self.generator(x.device)
        sub = x[index]
        noise = torch.randn(sub.shape, generator=gen, device=x.device, dtype=x.dtype)
        x[index] = sub + noise * std[index].to(x.dtype).view(-1, 1, 1, 1)
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, seed={self.seed})"


probability = number(0, 1)
non_negative = number(0)

# the settings of the views (bundle.settings gathers them)
RULES: dict[str, Rule] = {
    "crop_min_scale": described(number(0, 1, lo_open=True), "random resized crop: smallest share of each side kept"),
    "hflip_prob": described(
        probability, "horizontal flip probability (a flipped radiograph puts the heart on the right)"
    ),
    "affine_prob": described(probability, "``RandAffine`` probability"),
    "rotate_range": described(number(0, math.pi), "``RandAffine`` rotation range", "a number in [0, pi] (radians)"),
    "scale_range": described(number(0, 1, hi_open=True), "``RandAffine`` scale range (0.1: +-10 %)"),
    "contrast_prob": described(probability, "``RandAdjustContrast`` probability"),
    "gamma_range": described(number_or_range(number(0, lo_open=True)), "``RandAdjustContrast`` gamma"),
    "hist_shift_prob": described(probability, "``RandHistogramShift`` probability"),
    "hist_shift_points": described(number_or_range(integer(3)), "``RandHistogramShift`` control points"),
    "blur_prob": described(probability, "``RandGaussianSmooth`` probability"),
    "blur_sigma": described(number_or_range(non_negative), "``RandGaussianSmooth`` sigma, in pixels"),
    "noise_prob": described(probability, "``RandGaussianNoise`` probability"),
    "noise_std": described(non_negative, "``RandGaussianNoise`` standard deviation"),
}
