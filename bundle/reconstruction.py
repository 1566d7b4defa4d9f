"""Reconstruction pretraining: masked inpainting on the bundle's encoder-decoder, and its pictures.

Masks (``ReconstructionMaskd``, a MONAI dictionary transform run in the data loader):

- ``blocks``: context-encoder style holes, MONAI's ``RandCoarseDropout(dropout_holes=True)`` filled with noise;
- ``outpaint``: MONAI's ``RandCoarseDropout(dropout_holes=False)``: the holes are kept, everything else is noise;
- ``group``: GMML-style (SPCXR / SS-CXR): random rectangles of side <= ``max_side`` of the image are added until
  a coverage drawn from ``mask_ratio`` (default 50-75 %) is reached, filled with noise. MONAI has no such
  transform, hence the code here. Pasting patches from another image of the batch (``replace_prob``) needs the
  batch, so ``Inpainting`` does it on the device.

Every mask travels with the batch as ``recon_mask`` (1 = corrupted pixel), so that the loss counts only those
pixels. ``Inpainting`` trains ``MultiTaskNet(seg_channels=1)``: its ``encoder.*`` and ``decoder.*`` weights are
what fine-tuning loads (``configs/train.json --pretrained_ckpt``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.losses import ContrastiveLoss
from monai.transforms import MapTransform, RandCoarseDropout, Randomizable
from torch import nn

from .networks import encoder_channels
from .pretraining import PretrainingMethod

__all__ = [
    "MASK_MODES",
    "ReconstructionMaskd",
    "group_mask",
    "masked_reconstruction_loss",
    "paste_from_batch",
    "Inpainting",
    "ReconstructionSnapshot",
    "plot_reconstructions",
]

logger = logging.getLogger(__name__)

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


def group_mask(
    height: int, width: int, rng: np.random.RandomState, mask_ratio: tuple[float, float] = (0.5, 0.75),
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

    Args:
        mode: ``blocks`` | ``group`` | ``outpaint`` (see the module docstring).
        keys: the image key (one key).
        target_key: where the uncorrupted image is stored.
        mask_key: where the (1, H, W) float mask of corrupted pixels is stored.
        num_views: 2 adds an independently masked second view (``<key>_2`` and ``<mask_key>_2``) for the
            combined reconstruction + contrastive objective.
        mask_ratio: (min, max) share of the image corrupted by ``group`` masks.
        holes: (min, max) number of holes for ``blocks`` / ``outpaint``; None = the mode's default.
        hole_size: (min, max) hole side as a fraction of the image side (``group``: rectangle side); None = default.

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
    ) -> None:
        MapTransform.__init__(self, keys)
        if mode not in MASK_MODES:
            raise ValueError(f"mask_mode {mode!r} is not one of {MASK_MODES}")
        if len(self.keys) != 1:
            raise ValueError(f"ReconstructionMaskd masks one image key, got {self.keys}")
        if num_views not in (1, 2):
            raise ValueError(f"num_views must be 1 or 2, got {num_views}")
        self.mode, self.target_key, self.mask_key, self.num_views = mode, target_key, mask_key, num_views
        self.mask_ratio = _pair(mask_ratio, "mask_ratio")
        holes = _MODE_DEFAULTS[mode]["holes"] if holes is None else holes
        h_lo, h_hi = _pair(holes, "holes")
        self.holes = (int(h_lo), int(h_hi))
        self.hole_size = _pair(_MODE_DEFAULTS[mode]["hole_size"] if hole_size is None else hole_size, "hole_size")
        if not 0 < self.hole_size[0] <= self.hole_size[1] <= 1:
            raise ValueError(f"hole_size must be fractions of the image side in (0, 1], got {self.hole_size}")
        self._dropout = RandCoarseDropout(
            holes=self.holes[0], max_holes=self.holes[1], spatial_size=1, dropout_holes=(mode != "outpaint"),
            fill_value=None, prob=1.0,
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
            mask = group_mask(height, width, self.R, self.mask_ratio, self.hole_size)
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


def masked_reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """Mean L1 (or L2) error over the masked pixels only (``mask`` 1 = counted), over the whole batch."""
    diff = pred.float() - target.float()
    err = diff.abs() if kind == "l1" else diff.square()
    weight = mask.float().expand_as(err)
    return (err * weight).sum() / weight.sum().clamp(min=1.0)


def paste_from_batch(
    image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, prob: float
) -> torch.Tensor:
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


class Inpainting(PretrainingMethod):
    """Masked reconstruction with the bundle's encoder-decoder; optional contrastive term between two masked views.

    Args:
        network: a ``MultiTaskNet`` built with ``seg_channels`` equal to the image channels (1); its encoder,
            decoder and segmentation head are trained, the classifier is not used.
        recon_loss: ``l1`` or ``l2``, over the masked pixels only.
        replace_prob: share of images whose masked pixels are pasted from another image of the batch (GMML).
        contrastive_weight: weight of the NT-Xent term between the two views (0 = reconstruction only; needs
            ``num_views=2`` in ``ReconstructionMaskd``).
        temperature: NT-Xent temperature.
        projection_dim: output size of the projection head of the contrastive term.
        image_key, target_key, mask_key: batch keys written by ``ReconstructionMaskd``.

    The contrastive term compares projections of the pooled deepest encoder features of the two views (the
    SimCLR convention), whereas MONAI's 3D tutorial compares the flattened reconstructions: in a U-Net the skip
    connections carry the unmasked pixels straight to the output, so reconstructions of two views agree
    wherever both are unmasked, and that term would teach the encoder little.
    """

    def __init__(
        self,
        network: nn.Module,
        recon_loss: str = "l1",
        replace_prob: float = 0.0,
        contrastive_weight: float = 0.0,
        temperature: float = 0.1,
        projection_dim: int = 128,
        image_key: str = "image",
        target_key: str = "target",
        mask_key: str = "recon_mask",
    ) -> None:
        super().__init__()
        for part in ("encoder", "decoder", "segmentation_head", "skip_connect"):
            if not hasattr(network, part):
                raise TypeError(f"Inpainting needs a MultiTaskNet-like network (.{part}), got {type(network).__name__}")
        if recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2', got {recon_loss!r}")
        if not 0 <= replace_prob <= 1:
            raise ValueError(f"replace_prob must be in [0, 1], got {replace_prob}")
        self.encoder, self.decoder = network.encoder, network.decoder
        self.segmentation_head, self.skip_connect = network.segmentation_head, network.skip_connect
        self.recon_loss, self.replace_prob = recon_loss, float(replace_prob)
        self.contrastive_weight = float(contrastive_weight)
        self.image_key, self.target_key, self.mask_key = image_key, target_key, mask_key
        self.projector: nn.Module | None = None
        if self.contrastive_weight > 0:
            dim = encoder_channels(getattr(network, "backbone", "resnet18"))[-1]
            self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim))
            self.contrastive = ContrastiveLoss(temperature=temperature)

    def reconstruct(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Reconstruction (B, C, H, W) of ``image`` and the encoder's feature maps."""
        features = self.encoder(image)
        return self.segmentation_head(self.decoder(features, self.skip_connect)), features

    def _view(self, batch: Mapping[str, torch.Tensor], suffix: str) -> tuple[torch.Tensor, torch.Tensor]:
        image, target, mask = batch[self.image_key + suffix], batch[self.target_key], batch[self.mask_key + suffix]
        if self.training and self.replace_prob > 0:
            image = paste_from_batch(image, target, mask, self.replace_prob)
        recon, features = self.reconstruct(image)
        if recon.shape[1] != target.shape[1]:
            raise ValueError(
                f"reconstruction has {recon.shape[1]} channels, images have {target.shape[1]}: build the network "
                f"with seg_channels={target.shape[1]}"
            )
        return masked_reconstruction_loss(recon, target, mask, self.recon_loss), features[-1].mean(dim=(2, 3))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        for key in (self.image_key, self.target_key, self.mask_key):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}: put bundle.reconstruction.ReconstructionMaskd in the transforms")
        loss, embedding = self._view(batch, "")
        out = {"embedding": embedding, "recon_loss": loss.detach()}
        if self.projector is not None:
            if self.image_key + "_2" not in batch:
                raise KeyError(
                    f"contrastive_weight > 0 needs a second masked view {self.image_key + '_2'!r}: "
                    "set num_views 2 in ReconstructionMaskd"
                )
            loss_2, embedding_2 = self._view(batch, "_2")
            # float32 similarities: exp(sim / T) overflows half precision for small temperatures
            z1, z2 = self.projector(embedding.float()).float(), self.projector(embedding_2.float()).float()
            contrast = self.contrastive(z1, z2)
            loss = 0.5 * (loss + loss_2) + self.contrastive_weight * contrast
            out["contrastive_loss"] = contrast.detach()
        out["loss"] = loss
        return out


def plot_reconstructions(
    masked: torch.Tensor, recon: torch.Tensor, original: torch.Tensor, path: str, title: str = ""
) -> str:
    """PNG grid, one row per image: masked input | reconstruction | original (first channel, [0, 1] scale)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    rows = masked.shape[0]
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), dpi=100, squeeze=False)
    for i in range(rows):
        columns = (("masked input", masked), ("reconstruction", recon), ("original", original))
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(images[i, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


class ReconstructionSnapshot:
    """Every ``interval`` epochs (and after the last), save masked | reconstruction | original for a few images.

    The images are prepared once with ``transform`` (loading + ``ReconstructionMaskd``) under a fixed seed, so
    every picture shows the same holes and epochs can be compared. Files: ``<output_dir>/<prefix>_epochNNNN.png``.

    Args:
        method: an ``Inpainting`` (anything with ``reconstruct``).
        data: datalist entries; the first ``num_images`` are shown.
        transform: the preprocessing that produces ``image``, ``target`` and ``recon_mask``.
        output_dir: folder of the PNGs.
        interval: epochs between pictures (0 = only after the last epoch).
        num_images: rows of the grid.
        seed: seed of the masks.
    """

    def __init__(
        self,
        method: Inpainting,
        data: Sequence[Mapping],
        transform: Callable,
        output_dir: str,
        interval: int = 1,
        num_images: int = 4,
        seed: int = 0,
        prefix: str = "reconstruction",
    ) -> None:
        self.method, self.data, self.transform = method, list(data)[:num_images], transform
        self.output_dir, self.interval, self.seed, self.prefix = output_dir, interval, seed, prefix
        self._samples: dict[str, torch.Tensor] | None = None
        self.saved: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _prepare(self) -> dict[str, torch.Tensor]:
        if self._samples is None:
            if not self.data:
                raise ValueError("ReconstructionSnapshot: no images to show (empty data)")
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=self.seed)
            items = [self.transform(dict(e)) for e in self.data]
            keys = ("image", "target", "recon_mask")
            self._samples = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys}
        return self._samples

    def __call__(self, engine: Engine) -> None:
        epoch, last = engine.state.epoch, engine.state.max_epochs
        if not ((self.interval and epoch % self.interval == 0) or epoch == last):
            return
        samples = self._prepare()
        device = next(self.method.parameters()).device
        was_training = self.method.training
        self.method.eval()
        try:
            with torch.no_grad():
                recon, _ = self.method.reconstruct(samples["image"].to(device))
        finally:
            self.method.train(was_training)
        path = os.path.join(self.output_dir, f"{self.prefix}_epoch{epoch:04d}.png")
        plot_reconstructions(samples["image"], recon.clamp(0, 1), samples["target"], path, title=f"epoch {epoch}")
        self.saved.append(path)
        logger.info("epoch %d: reconstructions written to %s", epoch, path)
