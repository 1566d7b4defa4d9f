"""Dictionary transforms that load CXRs and their targets for MONAI pipelines, and a 2D resize for outputs.

Everything else in the pipelines (resizing, augmentation, typing) is MONAI's own and is listed in the configs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping
from functools import partial

import numpy as np
import torch
from monai.transforms import MapTransform, Transform
from torch.nn import functional as F

from ..values import as_bool
from .readers import NIFTI_SUFFIXES, CXRReadError, read_array, read_cxr, read_mask

__all__ = ["LoadCXRd", "ClassLabeld", "STATUS_OK", "ON_ERROR", "PREPROCESSING", "file_stem", "resize_2d"]

logger = logging.getLogger(__name__)

STATUS_OK = "ok"
ON_ERROR = ("raise", "status")
# What every workflow does to an image before the network sees it (LoadCXRd, then the configs' Resized), as weights
# record it in their recipe (bundle.checkpoints.recipe): weights made with another preprocessing are told apart.
PREPROCESSING = {
    "intensity": "min-max per image to [0, 1] after the format's photometric steps",
    "channels": 1,
    "resize": "area, to image_size x image_size",
}


def file_stem(path: str) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one)."""
    name = os.path.basename(path)
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0] or name


class LoadCXRd(MapTransform):
    """Read ``image`` (any CXR format, see ``bundle.data.readers``) and its optional ``mask`` as (1, H, W) float32.

    ``image`` is a file's path, or a picture already in memory as a ``numpy.ndarray`` (rows, cols) in its own
    intensity units, read as a file's pixels are (``read_array``) and named by the entry's ``name``. Anything else
    (a tensor loaded upstream) passes unchanged.

    An entry without a mask gets an all-zero mask and ``has_mask`` = 0, so batches collate and the loss can
    skip those images. ``image_path`` keeps the source file for reports.

    Error policy (``on_error``):

    * ``"raise"`` (training, evaluation): an unreadable image or mask raises ``CXRReadError``; the datalist
      check (``bundle.data.datalist.check_entries``) has normally reported it before the run started.
    * ``"status"`` (inference): never raises, so one bad file can neither stop the run nor crash a DataLoader
      worker. Adds ``status`` (``"ok"`` or the reason), ``orig_shape`` (rows, cols; 0, 0 on failure) and
      ``name``. A failed image becomes a 2 x 2 zero placeholder so that the batch still collates; an
      unreadable or mis-sized mask is dropped with a warning (the predicted lung mask is used instead).

    MONAI's LoadImaged is not used: its readers disagree on orientation, DICOM photometry and channel layout
    for 2D radiographs (PNG is transposed, MONOCHROME1 is not inverted by PydicomReader).
    """

    def __init__(
        self, image_key: str = "image", mask_key: str = "mask", has_mask_key: str = "has_mask", on_error: str = "raise"
    ) -> None:
        super().__init__(keys=[image_key, mask_key], allow_missing_keys=True)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.image_key, self.mask_key, self.has_mask_key, self.on_error = image_key, mask_key, has_mask_key, on_error

    def _read_mask(self, path: str, image: np.ndarray) -> np.ndarray:
        mask = read_mask(path)
        if mask.shape != image.shape:
            raise CXRReadError(path, f"mask shape {mask.shape} differs from image shape {image.shape}")
        return mask

    def _load_with_status(
        self, path: str, read: Callable[[], np.ndarray], mask_path: object
    ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        try:
            image, status = read(), STATUS_OK
        except CXRReadError as e:
            return None, None, e.reason
        except Exception as e:  # a decoder bug must not stop the run: report it for this file
            return None, None, f"cannot read ({type(e).__name__}: {e})"
        mask = None
        if isinstance(mask_path, str):
            try:
                mask = self._read_mask(mask_path, image)
            except Exception as e:
                logger.warning("%s: ground-truth mask not used (%s); using the predicted lung mask", path, e)
        return image, mask, status

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        source = d[self.image_key]
        if isinstance(source, np.ndarray):  # a picture in memory: its entry's name stands for the path
            path = str(d.get("name", "array"))
            read: Callable[[], np.ndarray] = partial(read_array, source, path)
        elif isinstance(source, str):
            path, read = source, partial(read_cxr, source)
        else:  # already loaded upstream
            return d
        mask_path = d.get(self.mask_key)
        if self.on_error == "raise":
            image = read()
            mask = self._read_mask(mask_path, image) if isinstance(mask_path, str) else None
        else:
            image, mask, d["status"] = self._load_with_status(path, read, mask_path)
            d.setdefault("name", file_stem(path))
            shape = (0, 0) if image is None else image.shape
            d["orig_shape"] = torch.tensor(shape, dtype=torch.long)
            if image is None:
                image = np.zeros((2, 2), dtype=np.float32)
        d[self.has_mask_key] = torch.tensor(1.0 if mask is not None else 0.0)
        if mask is None:
            mask = np.zeros(image.shape, dtype=np.uint8)
        d["image_path"] = path
        d[self.image_key] = torch.from_numpy(image)[None]
        d[self.mask_key] = torch.from_numpy(mask.astype(np.float32))[None]
        return d


class ClassLabeld(Transform):
    """``label`` to a tensor: a long class index (-1 when absent) or, multi-label, a float 0/1 vector (-1 unknown)."""

    def __init__(self, num_classes: int, multi_label: bool = False, key: str = "label") -> None:
        self.num_classes, self.multi_label, self.key = num_classes, as_bool(multi_label, "multi_label"), key

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


def resize_2d(array: np.ndarray | torch.Tensor, shape: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a 2D array (rows, cols) to ``shape``; ``bilinear``/``area`` for maps, ``nearest`` for masks."""
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
    if tuple(t.shape[2:]) == tuple(shape):
        return t[0, 0].numpy()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, **kwargs)[0, 0].numpy()
