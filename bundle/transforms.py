"""Dictionary transforms that load CXRs and their targets for MONAI pipelines.

Everything else in the pipelines (resizing, augmentation, typing) is MONAI's own and is listed in the configs.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

from .readers import CXRReadError, read_cxr, read_mask

__all__ = ["LoadCXRd", "ClassLabeld", "TARGET_KEYS"]

TARGET_KEYS = ("image", "mask", "has_mask", "label", "image_path")


class LoadCXRd(MapTransform):
    """Read ``image`` (any CXR format, see ``bundle.readers``) and its optional ``mask`` as (1, H, W) float32.

    An entry without a mask gets an all-zero mask and ``has_mask`` = 0, so batches collate and the loss can
    skip those images. ``image_path`` keeps the source file for reports.

    MONAI's LoadImaged is not used: its readers disagree on orientation, DICOM photometry and channel layout
    for 2D radiographs (PNG is transposed, MONOCHROME1 is not inverted by PydicomReader).
    """

    def __init__(self, image_key: str = "image", mask_key: str = "mask", has_mask_key: str = "has_mask") -> None:
        super().__init__(keys=[image_key, mask_key], allow_missing_keys=True)
        self.image_key, self.mask_key, self.has_mask_key = image_key, mask_key, has_mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        path = d[self.image_key]
        if not isinstance(path, str):  # already loaded upstream
            return d
        image = read_cxr(path)
        mask_path = d.get(self.mask_key)
        if isinstance(mask_path, str):
            mask = read_mask(mask_path)
            if mask.shape != image.shape:
                raise CXRReadError(mask_path, f"mask shape {mask.shape} differs from image shape {image.shape}")
            d[self.has_mask_key] = torch.tensor(1.0)
        else:
            mask = np.zeros(image.shape, dtype=np.uint8)
            d[self.has_mask_key] = torch.tensor(0.0)
        d["image_path"] = path
        d[self.image_key] = torch.from_numpy(image)[None]
        d[self.mask_key] = torch.from_numpy(mask.astype(np.float32))[None]
        return d


class ClassLabeld(Transform):
    """``label`` to a tensor: a long class index (-1 when absent) or, multi-label, a float 0/1 vector (-1 unknown)."""

    def __init__(self, num_classes: int, multi_label: bool = False, key: str = "label") -> None:
        self.num_classes, self.multi_label, self.key = num_classes, multi_label, key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        label = d.get(self.key)
        if self.multi_label:
            d[self.key] = (
                torch.full((self.num_classes,), -1.0)
                if label is None
                else torch.as_tensor(np.asarray(label, dtype=np.float32).reshape(-1))
            )
        else:
            d[self.key] = torch.tensor(-1 if label is None else int(label), dtype=torch.long)
        return d


def select_keys(keys: Sequence[str] = TARGET_KEYS) -> Transform:
    """Keep only ``keys``: datalist extras (null fields, nested lists) would break batch collation."""
    from monai.transforms import SelectItemsd

    return SelectItemsd(keys=list(keys), allow_missing_keys=True)
