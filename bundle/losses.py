"""Multi-task loss: ``w_cls`` x CE (BCE for multi-label) + ``w_seg`` x DiceCE on the images that have a mask, and
optionally ``w_lung_guidance`` x the share of the classifier's explanation that falls outside the lungs.

Lung guidance is "right for the right reasons" (Ross et al. 2017: penalise the explanation's mass where the
annotation says the evidence is not) with GAIN's differentiable Grad-CAM as the explanation (Li et al. 2018, whose
external supervision also trains the Grad-CAM map against a segmentation). Ross et al. explain with input
gradients, whose penalty needs a second backward pass through the whole network; for this head
Grad-CAM of the deepest stage is its class activation map (``MultiTaskNet.class_activation_maps``), one 1 x 1
convolution, and the penalty is the energy-based pointing game that the evaluation scores
(``bundle.evaluation.attention``), turned around.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import DiceCELoss
from torch import nn
from torch.nn import functional as F

from .networks.multitask import lung_mask
from .networks.vit import is_vit
from .values import Rule, as_bool, boolean, described, integer, is_number, number

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
        w_lung_guidance: weight of the lung-guidance term (``lung_guidance``); it needs the network's
            ``"class_map"`` output (``MultiTaskNet(class_maps=True)``). ``guidance_active`` switches it off during
            a warm-up (``bundle.engines.guidance.LungGuidanceWarmup``).
    """

    def __init__(
        self,
        w_cls: float = 1.0,
        w_seg: float = 1.0,
        multi_label: bool = False,
        label_smoothing: float = 0.0,
        w_lung_guidance: float = 0.0,
    ):
        super().__init__()
        self.w_cls, self.w_seg, self.label_smoothing = w_cls, w_seg, label_smoothing
        self.w_lung_guidance = float(w_lung_guidance)
        self.guidance_active = True
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

    def class_weights(self, label: torch.Tensor, num_classes: int) -> torch.Tensor:
        """(B, K) which classes' maps to guide: the labelled class (one-hot; none for -1), or every known positive
        finding (multi-label)."""
        if self.multi_label:
            return (label > 0).float()
        known = (label >= 0).float()[:, None]
        return F.one_hot(label.long().clamp(min=0), num_classes).float() * known

    def lung_guidance(
        self, class_map: torch.Tensor, seg: torch.Tensor, target: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Mean share of the explanation outside the lungs, over the images with a labelled class.

        ``class_map`` (B, K, h, w) class activation maps; the explanation of an image is the sum of its guided
        classes' maps after ReLU (Grad-CAM's), up-sampled bilinearly to the (B, 2, H, W) ``seg``'s size as the
        saliency maps are. The lungs are the given mask (``target["mask"]`` (B, 1, H, W)) where ``has_mask``
        says there is one, elsewhere the network's own predicted mask, without gradient (``lung_mask``). An image
        whose map is zero everywhere contributes zero.
        """
        weights = self.class_weights(target["label"], class_map.shape[1])
        guided = weights.sum(1) > 0
        if not guided.any():
            return class_map.sum() * 0.0
        cam = (F.relu(class_map[guided].float()) * weights[guided, :, None, None]).sum(1, keepdim=True)
        cam = F.interpolate(cam, size=seg.shape[-2:], mode="bilinear", align_corners=False)
        lungs = lung_mask(seg[guided])
        if "mask" in target and "has_mask" in target:
            given = target["has_mask"].reshape(-1)[guided] > 0
            lungs = torch.where(given[:, None, None, None], target["mask"][guided].float(), lungs)
        outside = (cam * (1 - lungs)).sum((1, 2, 3)) / cam.sum((1, 2, 3)).clamp(min=1e-6)
        return outside.mean()

    def forward(self, pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.w_cls * self.classification(pred["class"], target["label"])
        if self.w_seg:
            loss = loss + self.w_seg * self.segmentation(pred["seg"], target["mask"], target["has_mask"])
        if self.w_lung_guidance and self.guidance_active:
            if "class_map" not in pred:
                raise ValueError("w_lung_guidance needs the network's class maps: build it with class_maps=True")
            loss = loss + self.w_lung_guidance * self.lung_guidance(pred["class_map"], pred["seg"], target)
        return loss


# the settings the loss consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "w_cls": described(number(0), "weight of the classification loss"),
    "w_seg": described(number(0), "weight of the lung segmentation loss"),
    "w_lung_guidance": described(
        number(0), "weight of the penalty on the classifier's explanation outside the lungs (0, the default: off)"
    ),
    "lung_guidance_warmup": described(
        integer(0), "epochs before lung guidance starts, while the lung segmentation learns"
    ),
}


def weights_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """At least one task has a positive weight."""
    if is_number(s.get("w_cls")) and is_number(s.get("w_seg")) and s["w_cls"] == 0 and s["w_seg"] == 0:
        return ["w_cls and w_seg: both 0 leaves nothing to learn; give one of them a positive weight"]
    return []


def lung_guidance_check(s: Mapping[str, Any], workflow: str) -> list[str]:
    """Lung guidance needs a classifier that pools the full image's deepest map.

    A warm-up as long as the run is not refused: the warm-up handler says the run is unguided
    (``bundle.engines.guidance``)."""
    if workflow != "train" or not is_number(s.get("w_lung_guidance")) or s["w_lung_guidance"] == 0:
        return []
    problems = []
    lungs_only = s.get("lungs_only", False)
    if boolean(lungs_only) is None and as_bool(lungs_only, "lungs_only"):
        problems.append(
            "w_lung_guidance: lungs_only already hides everything outside the lungs from the classifier; "
            "use one of them (w_lung_guidance 0 or lungs_only false)"
        )
    if is_vit(str(s.get("backbone"))) and s.get("vit_pool") == "token":
        problems.append(
            "w_lung_guidance: a ViT classifier reading the class token has no map to guide; use vit_pool mean"
        )
    return problems


CHECKS = (weights_check, lung_guidance_check)
