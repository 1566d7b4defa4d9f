"""Batch postprocessing of inference: class probabilities, the lung mask and the lung attention of the saliency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Transform

from ..data.transforms import resize_2d
from ..evaluation.attention import attention_and_masks
from ..networks.multitask import class_probabilities
from ..values import as_bool

__all__ = ["InferenceOutputs", "lung_mask_at", "saliency_at", "predicted_class"]


class InferenceOutputs(Transform):
    """Batch postprocessing of the inference evaluator (``decollate=False``).

    Adds ``prob`` (B, K): softmax, or sigmoid for multi-label; plus ``attention_and_masks``' keys.
    """

    def __init__(self, multi_label: bool = False) -> None:
        self.multi_label = as_bool(multi_label, "multi_label")

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d["prob"] = class_probabilities(d["pred"]["class"], self.multi_label)
        d.update(attention_and_masks(d["pred"], d.get("label")))
        return d


def lung_mask_at(lung_prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The lung mask (rows, cols) uint8 0/1 at an image's own ``shape`` from a lung probability map (h, w).

    Probabilities are resized, then thresholded: a smoother border than resizing a binary mask.
    """
    return (resize_2d(lung_prob, shape) > 0.5).astype(np.uint8)


def saliency_at(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A saliency map (h, w) resized to an image's own ``shape`` (rows, cols), float32 in [0, 1]."""
    return np.clip(resize_2d(saliency, shape), 0, 1).astype(np.float32)


def predicted_class(prob: np.ndarray, class_names: Sequence[str], multi_label: bool = False) -> str:
    """The prediction of one image's probabilities (K,): the top class's name, or for a multi-label model the names
    of the classes over 0.5 joined by ``;`` (empty when none is)."""
    if multi_label:
        return ";".join(c for c, p in zip(class_names, prob) if p > 0.5)
    return class_names[int(np.argmax(prob))]
