"""Multi-task loss: ``w_cls`` x CE (BCE for multi-label) + ``w_seg`` x DiceCE on the images that have a mask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import DiceCELoss
from torch import nn
from torch.nn import functional as F

from .values import Rule, as_bool, described, is_number, number

__all__ = ["MultiTaskLoss"]


class MultiTaskLoss(nn.Module):
    """Weighted sum of the classification and segmentation losses.

    Targets come as ``{"label", "mask", "has_mask"}``: ``label`` is a class index (-1 = unlabelled) or, for
    multi-label, a 0/1 vector (-1 = unknown finding); ``has_mask`` says which images carry a lung mask. Terms
    without any target in the batch contribute zero instead of NaN, so mixed batches train.

    Args:
        w_cls: weight of the classification term.
        w_seg: weight of the segmentation term.
        multi_label: BCE on independent findings instead of softmax CE.
        label_smoothing: CE label smoothing (single-label only).
    """

    def __init__(self, w_cls: float = 1.0, w_seg: float = 1.0, multi_label: bool = False, label_smoothing: float = 0.0):
        super().__init__()
        self.w_cls, self.w_seg, self.label_smoothing = w_cls, w_seg, label_smoothing
        self.multi_label = as_bool(multi_label, "multi_label")
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def classification(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """CE over labelled images, or BCE over known findings (multi-label)."""
        if self.multi_label:
            known = label >= 0
            if not known.any():
                return logits.sum() * 0.0
            return F.binary_cross_entropy_with_logits(logits[known], label[known].float())
        known = label >= 0
        if not known.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[known], label[known].long(), label_smoothing=self.label_smoothing)

    def segmentation(self, logits: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
        """DiceCE over the images that have a mask."""
        keep = has_mask.reshape(-1) > 0
        if not keep.any():
            return logits.sum() * 0.0
        return self.dice_ce(logits[keep], mask[keep])

    def forward(self, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.w_cls * self.classification(pred["class"], target["label"])
        if self.w_seg:
            loss = loss + self.w_seg * self.segmentation(pred["seg"], target["mask"], target["has_mask"])
        return loss


# the settings the loss consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "w_cls": described(number(0), "weight of the classification loss"),
    "w_seg": described(number(0), "weight of the lung segmentation loss"),
}


def weights_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """At least one task has a positive weight."""
    if is_number(s.get("w_cls")) and is_number(s.get("w_seg")) and s["w_cls"] == 0 and s["w_seg"] == 0:
        return ["w_cls and w_seg: both 0 leaves nothing to learn; give one of them a positive weight"]
    return []


CHECKS = (weights_check,)
