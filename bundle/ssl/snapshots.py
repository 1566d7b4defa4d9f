"""Pictures of reconstruction pretraining: masked input, reconstruction and original of fixed images per epoch."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from ignite.engine import Engine, Events

from ..distributed import unwrap
from ..plots import plot_reconstructions
from ..values import Rule, described, integer
from .masking import BatchMasks

__all__ = ["ReconstructionSnapshot"]

logger = logging.getLogger(__name__)


class ReconstructionSnapshot:
    """Every ``interval`` epochs (and after the last), save masked | reconstruction | original for a few images.

    The images are loaded once with ``transform`` and masked once by ``masks`` without its augmentations, on a
    stream of its own seeded by ``seed`` (``BatchMasks.without_views``): every picture shows the same holes, epochs
    can be compared, and the training masks' random stream never moves. Files:
    ``<output_dir>/<prefix>_epochNNNN.png``.

    Args:
        method: an ``Inpainting`` (anything with ``reconstruct``).
        data: datalist entries; the first ``num_images`` are shown.
        transform: the loading that produces a (1, H, W) ``image`` of each entry (as cached for training).
        masks: the training masks (a ``bundle.ssl.masking.BatchMasks``): mode, coverage and hole sizes.
        output_dir: folder of the PNGs.
        interval: epochs between pictures (0 = only after the last epoch).
        num_images: rows of the grid.
        seed: seed of the masks.
    """

    rank_zero_only = True  # under DDP rank 0 alone draws (bundle.distributed.for_this_rank)

    def __init__(
        self,
        method: torch.nn.Module,
        data: Sequence[Mapping],
        transform: Callable,
        masks: BatchMasks,
        output_dir: str,
        interval: int = 1,
        num_images: int = 4,
        seed: int = 0,
        prefix: str = "reconstruction",
    ) -> None:
        self.method, self.data, self.transform = unwrap(method), list(data)[:num_images], transform
        self.masks = masks.without_views(seed)
        self.output_dir, self.interval, self.seed, self.prefix = output_dir, interval, seed, prefix
        self._samples: dict[str, torch.Tensor] | None = None
        self.saved: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _prepare(self) -> dict[str, torch.Tensor]:
        if self._samples is None:
            if not self.data:
                raise ValueError("ReconstructionSnapshot: no images to show (empty data)")
            images = torch.stack([torch.as_tensor(self.transform(dict(e))["image"]) for e in self.data])
            masked = self.masks(images)
            self._samples = {k: masked[k] for k in ("image", "target", "recon_mask")}
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


# the settings this handler consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "sample_interval": described(integer(0), "epochs between reconstruction pictures, and after the last"),
    "sample_images": described(integer(0), "validation images in each reconstruction picture"),
}
