"""Glue between CXR batches and MONAI's SupervisedTrainer / SupervisedEvaluator for the multi-task network.

The engines themselves are MONAI's; the network returns ``{"class", "seg"}`` and the targets travel as a dict,
so only how a batch is unpacked and how outputs are flattened for the metric handlers is specific here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.transforms import Transform
from torch.nn import functional as F

from ..data.precision import mask_to_float, to_float
from ..networks.multitask import class_probabilities
from ..values import as_bool

__all__ = ["MultiTaskPrepareBatch", "MultiTaskOutputs"]


def _plain(value: Any) -> torch.Tensor:
    """``value`` as a plain ``torch.Tensor`` (a ``MetaTensor`` without its metadata, sharing its data)."""
    return torch.as_tensor(value).as_subclass(torch.Tensor)


class MultiTaskPrepareBatch:
    """``prepare_batch`` for MONAI engines: ``(image, {"label", "mask", "has_mask"})`` on ``device``.

    Validation and evaluation batches come straight from the cache, with (B, 1, H, W) images in a compact
    integer precision (``cache_dtype``) and uint8 0/1 masks, 8 pixels a byte (B, 1, H, W / 8): they are copied as
    they are (a quarter of the bytes of float32 for uint8) and turned into [0, 1] float32 images (B, 1, H, W) and
    0/1 float32 masks (B, 1, H, W) on ``device``. Float batches (training, after the worker's ``ToFloatd``;
    inference) keep their values. Every tensor comes out a plain ``torch.Tensor``: a MONAI ``MetaTensor`` (what the
    random transforms give) would carry its metadata through every operation of the forward pass, which the
    engines never read, for more memory traffic per step.
    """

    target_keys = ("label", "mask", "has_mask")

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = _plain(batchdata["image"]).to(device=device, non_blocking=non_blocking, **kwargs)
        if not image.is_floating_point():
            image = to_float(image)
        targets = {
            k: _plain(batchdata[k]).to(device=device, non_blocking=non_blocking, **kwargs)
            for k in self.target_keys
            if k in batchdata
        }
        if "mask" in targets and not targets["mask"].is_floating_point():
            # 0/1 values kept (not scaled), unpacked to the image's width: the loss and Dice read float masks
            targets["mask"] = mask_to_float(targets["mask"], image.shape[-1])
        return image, targets


class MultiTaskOutputs(Transform):
    """Batch-level postprocessing (engines with ``decollate=False``): flatten outputs for metric handlers.

    Adds ``prob`` (B, C) class probabilities, ``pred_onehot`` (argmax or > 0.5 for multi-label), ``label_onehot``
    (B, C), ``seg_onehot`` / ``mask_onehot`` (B, 2, H, W). Images without a mask have an empty ground truth,
    which MONAI's DiceMetric (``ignore_empty=True``) scores as NaN and leaves out of the mean.
    """

    def __init__(self, num_classes: int, multi_label: bool = False) -> None:
        self.num_classes, self.multi_label = num_classes, as_bool(multi_label, "multi_label")

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        pred, target = d["pred"], d["label"]
        label = target["label"] if isinstance(target, Mapping) else target
        d["prob"] = class_probabilities(pred["class"], self.multi_label)
        if self.multi_label:
            d["pred_onehot"] = (d["prob"] > 0.5).float()
            d["label_onehot"] = label.float().clamp(min=0)
        else:
            d["pred_onehot"] = F.one_hot(d["prob"].argmax(1), self.num_classes).float()
            d["label_onehot"] = F.one_hot(label.long().clamp(min=0), self.num_classes).float()
        if "seg" in pred:
            seg = pred["seg"]
            d["seg_onehot"] = F.one_hot(seg.argmax(1), seg.shape[1]).permute(0, 3, 1, 2).float()
            if isinstance(target, Mapping) and "mask" in target:
                mask = target["mask"][:, 0].long()
                d["mask_onehot"] = F.one_hot(mask, seg.shape[1]).permute(0, 3, 1, 2).float()
                # an image without a ground-truth mask: empty lung channel -> NaN Dice, excluded from the mean
                d["mask_onehot"][target["has_mask"].reshape(-1) == 0] = 0
        return d
