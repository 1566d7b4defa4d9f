"""Glue between pretraining methods and MONAI's SupervisedTrainer.

A method computes its loss from the batch's views in ``forward``; the trainer runs it with ``SSLPrepareBatch``
as ``prepare_batch``, ``SimpleInferer`` (it calls ``network(batch)``) and ``ssl_loss`` as ``loss_function``;
``MethodHooks`` calls the method's epoch and step hooks (momentum encoders, queues, schedules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..distributed import unwrap
from ..ssl.base import PretrainingMethod

__all__ = ["SSLPrepareBatch", "ssl_loss", "MethodHooks"]


class SSLPrepareBatch:
    """``prepare_batch`` for pretraining: every tensor of the batch to ``device``; returns ``(batch, None)``.

    With ``views`` (a ``bundle.data.views.BatchViews``) and a batch of image pairs (``image1``, ``image2``:
    (B, 1, H, W), as ``bundle.data.pairs.TwoViewDataset`` gives them), the images go to the device as they are
    (compact integers stay compact for the copy) and ``view1``, ``view2`` (B, 1, S, S) are made there, every image
    its own random view. A batch that already holds views passes through unchanged.

    A batch of single images (``image``: (B, 1, H, W), as cached, for reconstruction and pretext pretraining)
    goes to the device the same way and ``views(image)`` replaces it there: a tensor is the new ``image`` (the
    augmentations, ``BatchViews``), a mapping adds its keys (``bundle.ssl.masking.BatchMasks``: ``image``,
    ``target``, ``recon_mask``...).
    """

    # view key <- image key it is made from
    VIEW_OF = {"view1": "image1", "view2": "image2"}
    IMAGE = "image"

    def __init__(
        self, keys: Sequence[str] | None = None, views: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.keys = keys
        self.views = views

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[dict[str, Any], None]:
        if self.views is not None and all(k in batchdata for k in self.VIEW_OF.values()):
            batchdata = self._make_views(batchdata, device, non_blocking)
        elif self.views is not None and self.IMAGE in batchdata and not any(k in batchdata for k in self.VIEW_OF):
            batchdata = self._transform_image(batchdata, device, non_blocking)
        keys = self.keys or [k for k, v in batchdata.items() if isinstance(v, torch.Tensor)]
        batch = {k: torch.as_tensor(batchdata[k]).to(device=device, non_blocking=non_blocking, **kwargs) for k in keys}
        return batch, None

    def _make_views(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None, non_blocking: bool
    ) -> dict[str, Any]:
        """The batch with its images replaced by their views, made on ``device``."""
        data = dict(batchdata)
        images = [torch.as_tensor(data.pop(k)) for k in self.VIEW_OF.values()]
        # a copy from pinned memory may overlap with the work already queued on the device
        moved = [im.to(device=device, non_blocking=non_blocking or im.is_pinned()) for im in images]
        views = self.views(torch.cat(moved))  # both views in one call: one resampling of 2B images
        data.update(zip(self.VIEW_OF, views.split([len(m) for m in moved])))
        return data

    def _transform_image(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None, non_blocking: bool
    ) -> dict[str, Any]:
        """The batch with ``image`` replaced by ``views(image)`` (a tensor, or a mapping of keys), made on ``device``."""
        data = dict(batchdata)
        image = torch.as_tensor(data.pop(self.IMAGE))
        out = self.views(image.to(device=device, non_blocking=non_blocking or image.is_pinned()))
        data.update(out if isinstance(out, Mapping) else {self.IMAGE: out})
        return data


def ssl_loss(pred: Mapping[str, torch.Tensor], target: Any = None) -> torch.Tensor:
    """``loss_function`` for SupervisedTrainer: the method computed its loss in ``forward``."""
    return pred["loss"]


class MethodHooks:
    """Call the method's ``on_epoch_start`` / ``on_step_end`` from the trainer's events."""

    def __init__(self, method: PretrainingMethod) -> None:
        self.method = unwrap(method)  # under DDP the hooks belong to the method inside the wrapper

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)

    def _epoch(self, engine: Engine) -> None:
        self.method.on_epoch_start(engine.state.epoch - 1, engine.state.max_epochs)

    def _step(self, engine: Engine) -> None:
        self.method.on_step_end(engine)
