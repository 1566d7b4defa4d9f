"""Batch postprocessing of inference: class probabilities, the lung mask and the lung attention of the saliency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.transforms import Transform

from ..networks.multitask import class_probabilities
from ..saliency import attention_and_masks
from ..settings import as_bool

__all__ = ["InferenceOutputs"]


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
