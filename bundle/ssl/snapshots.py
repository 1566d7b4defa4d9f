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

__all__ = ["ReconstructionSnapshot"]

logger = logging.getLogger(__name__)


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

    rank_zero_only = True  # under DDP rank 0 alone draws (bundle.distributed.for_this_rank)

    def __init__(
        self,
        method: torch.nn.Module,
        data: Sequence[Mapping],
        transform: Callable,
        output_dir: str,
        interval: int = 1,
        num_images: int = 4,
        seed: int = 0,
        prefix: str = "reconstruction",
    ) -> None:
        self.method, self.data, self.transform = unwrap(method), list(data)[:num_images], transform
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


# the settings this handler consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "sample_interval": described(integer(0), "epochs between reconstruction pictures, and after the last"),
    "sample_images": described(integer(0), "validation images in each reconstruction picture"),
}
