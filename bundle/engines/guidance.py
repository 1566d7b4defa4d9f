"""The warm-up of lung guidance: the loss's lung-guidance term waits until the lung segmentation has learnt.

Images without a given lung mask are guided by the network's own predicted lungs (``bundle.losses``); in the
first epochs that prediction is noise, and guiding the classifier towards it would teach it a wrong region.

Guidance trains the saliency maps themselves, so their lung attention is no evidence on its own: the handler says
so once when guidance starts (lung-guided maps of the 224 px recipe failed the sanity check, docs/README.md).
"""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

from ..losses import MultiTaskLoss

__all__ = ["LungGuidanceWarmup", "SANITY_ADVICE"]

logger = logging.getLogger(__name__)

SANITY_ADVICE = (
    "lung guidance trains the classifier's saliency maps to lie inside the lungs, so their lung attention ratio "
    "proves nothing on its own: run scripts/saliency_check.py --ckpt_file <this run's model.pt> and read the ratio "
    "only if the maps pass (lung-guided maps of the 224 px recipe failed it: docs/README.md, Lung-guided fine-tuning)"
)


class LungGuidanceWarmup:
    """Keeps ``loss``'s lung guidance off for the first ``warmup_epochs`` epochs of a trainer, on after them.

    Reads the epoch at every epoch start, so a resumed run is on the same schedule. Does nothing when the loss has
    no lung guidance (``w_lung_guidance`` 0). A run that ends within the warm-up says so: it trains without
    guidance, which is no mistake to refuse.
    """

    def __init__(self, loss: MultiTaskLoss, warmup_epochs: int = 0) -> None:
        self.loss, self.warmup_epochs = loss, int(warmup_epochs)
        self.announced: bool | None = None  # the state last logged: a resumed run logs its state once too

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.loss.w_lung_guidance:
            return
        active = engine.state.epoch > self.warmup_epochs
        if active != self.announced:
            state = "on" if active else f"off until epoch {self.warmup_epochs + 1} (warm-up)"
            if not active and engine.state.max_epochs <= self.warmup_epochs:
                state = (
                    f"off in this run: its {engine.state.max_epochs} epoch(s) end within the warm-up "
                    f"(lung_guidance_warmup {self.warmup_epochs}; lower it to guide)"
                )
            logger.info(f"lung guidance (w_lung_guidance {self.loss.w_lung_guidance:g}): {state}")
            if active:
                logger.warning(SANITY_ADVICE)
            self.announced = active
        self.loss.guidance_active = active
