"""Images kept in a compact integer precision in caches, and turned back into [0, 1] floats where they are used.

A cached 224 x 224 float32 image takes 200 KB; as uint8 it takes 50 KB, so 100,000 images fit in 5 GB. The
readers scale every image to [0, 1] (``bundle.data.readers.read_cxr``); ``compact`` stores ``round(x * max)``
in the chosen integer type and ``to_float`` divides by the same maximum, inferred from the dtype, so a
batch converts itself wherever it lands (a DataLoader worker, or the training device after the copy, which
then moves a quarter of the bytes).

* ``uint8`` (default): 8-bit sources (PNG, JPEG: CheXpert, NIH, MIMIC-CXR-JPG) lose nothing they had; the
  rounding error is at most 1/510.
* ``uint16``: 12- to 16-bit DICOM sources at their full depth (100 KB per 224 x 224 image).
* ``float32``: no conversion (the cache as before).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTrait

from ..values import Rule, choice, described

__all__ = [
    "CACHE_DTYPES",
    "max_value",
    "compact",
    "to_float",
    "pack_mask",
    "unpack_mask",
    "mask_to_float",
    "cached_bytes",
    "Compactd",
    "ToFloatd",
]

# name -> (torch dtype, the integer that stands for 1.0)
CACHE_DTYPES: dict[str, tuple[torch.dtype, float]] = {
    "uint8": (torch.uint8, 255.0),
    "uint16": (torch.uint16, 65535.0),
    "float32": (torch.float32, 1.0),
}
_MAX_BY_DTYPE = dict(CACHE_DTYPES.values())


def max_value(dtype: torch.dtype) -> float:
    """The stored value that stands for 1.0 in a tensor of ``dtype`` (1.0 for floating types)."""
    if dtype.is_floating_point:
        return 1.0
    try:
        return _MAX_BY_DTYPE[dtype]
    except KeyError:
        raise ValueError(f"no cache precision stores images as {dtype}; use one of {', '.join(CACHE_DTYPES)}") from None


def compact(image: torch.Tensor, cache_dtype: str = "uint8") -> torch.Tensor:
    """A [0, 1] float image (any shape) stored as ``cache_dtype`` (``uint8 | uint16 | float32``)."""
    try:
        dtype, top = CACHE_DTYPES[str(cache_dtype)]
    except KeyError:
        raise ValueError(f"cache_dtype must be one of {', '.join(CACHE_DTYPES)}, got {cache_dtype!r}") from None
    if dtype.is_floating_point:
        return torch.as_tensor(image, dtype=dtype)
    scaled = (torch.as_tensor(image, dtype=torch.float32).clamp(0.0, 1.0) * top).round_()
    # uint16 has few kernels on CPU: round in float32, then cast through int32
    return scaled.to(torch.int32).to(dtype) if dtype == torch.uint16 else scaled.to(dtype)


def to_float(image: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A compact image (or batch) back to [0, 1] floats of ``dtype``; floating inputs are only cast."""
    top = max_value(image.dtype)
    if image.dtype.is_floating_point:
        return image.to(dtype)
    source = image.to(torch.int32) if image.dtype == torch.uint16 else image
    return source.to(dtype).mul_(1.0 / top)


_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)  # np.packbits' order: first pixel, high bit


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask (..., H, W), W a multiple of 8, as uint8 bits (..., H, W / 8): 6 KB for 224 x 224, not 49 KB."""
    width = mask.shape[-1]
    if width % 8:
        raise ValueError(f"pack_mask needs a width that is a multiple of 8, got {width}")
    bits = (torch.as_tensor(mask) > 0.5).to(torch.uint8).reshape(*mask.shape[:-1], width // 8, 8)
    return (bits * _BITS.to(bits.device)).sum(-1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``pack_mask``'s bits (..., H, W / 8) back to a 0/1 mask (..., H, W) of ``dtype``."""
    bits = packed.unsqueeze(-1).bitwise_and(_BITS.to(packed.device)).ne(0)
    return bits.reshape(*packed.shape[:-1], packed.shape[-1] * 8).to(dtype)


def mask_to_float(mask: torch.Tensor, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A cached 0/1 mask back to ``dtype`` at the image's ``width``: unpacked when ``Compactd`` packed its bits.

    A packed mask is the one whose last dimension is ``width / 8`` (an unpacked one has ``width``); floating and
    unpacked integer masks are only cast, their 0/1 values kept (never divided by 255).
    """
    if mask.dtype == torch.uint8 and mask.shape[-1] * 8 == width and width:
        return unpack_mask(mask, dtype)
    return mask.to(dtype)


def _keys(keys: KeysCollection | None) -> tuple[Hashable, ...]:
    if keys is None:
        return ()
    return (keys,) if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence) else tuple(keys)


def cached_bytes(item: Any) -> int:
    """Bytes held by the tensors and arrays of one cached item (nested dicts, lists and tuples included)."""
    if isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    if hasattr(item, "nbytes") and hasattr(item, "dtype"):  # numpy arrays
        return int(item.nbytes)
    if isinstance(item, Mapping):
        return sum(cached_bytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(cached_bytes(v) for v in item)
    return 0


class Compactd(MapTransform):
    """The last loading transform: ``keys`` images (C, H, W) in [0, 1] stored as ``cache_dtype``, 0/1 masks as uint8.

    Args:
        keys: the image keys, stored with ``compact`` (``round(x * max)``).
        cache_dtype: ``uint8`` (default, 50 KB per 224 x 224 image) | ``uint16`` (100 KB) | ``float32`` (200 KB).
        mask_keys: 0/1 mask keys (1, H, W), stored as uint8 whatever the ``cache_dtype`` (a mask holds two
            values): 8 pixels a byte (``pack_mask``, (1, H, W / 8)) when W is a multiple of 8 (``image_size`` is a
            multiple of 32), else one a byte; ``ToFloatd`` and ``mask_to_float`` turn them back into 0/1 floats.
        allow_missing_keys: skip keys an item lacks (a mask is optional in some pipelines).

    ``compact_heap`` is true for the integer precisions: a memory cache of them fills inside
    ``bundle.data.cache.compact_heap``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        cache_dtype: str = "uint8",
        mask_keys: KeysCollection | None = None,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.cache_dtype = str(cache_dtype).lower()
        if self.cache_dtype not in CACHE_DTYPES:  # fail when the pipeline is built, not in a caching worker
            raise ValueError(f"cache_dtype must be one of {', '.join(CACHE_DTYPES)}, got {cache_dtype!r}")
        self.mask_keys = _keys(mask_keys)
        # else freed float intermediates of loading stay resident around the small cached tensors
        self.compact_heap = self.cache_dtype != "float32"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            # as_subclass: a plain tensor, so the cache keeps no MetaTensor bookkeeping
            d[key] = compact(torch.as_tensor(d[key]).as_subclass(torch.Tensor), self.cache_dtype)
        for key in self.mask_keys:
            if key in d:
                mask = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
                # packed bits: most entries of a large set have no mask and cache an all-zero one
                d[key] = pack_mask(mask) if mask.shape[-1] % 8 == 0 else mask.to(torch.uint8)
            elif not self.allow_missing_keys:
                raise KeyError(f"key {key!r} is not in the data")
        return d


class ToFloatd(RandomizableTrait, MapTransform):
    """Compact ``keys`` images back to [0, 1] float32 with ``to_float``; ``mask_keys`` to 0/1 float32 masks at the
    width of the first image key (``mask_to_float``: unpacked when ``Compactd`` packed them).

    Put it first where a pipeline's random transforms start. It is marked ``RandomizableTrait`` (it draws no
    random numbers) so that MONAI's ``CacheDataset`` / ``PersistentDataset`` stop caching before it and the
    cache keeps the compact images; the conversion then runs in the DataLoader worker on every access.
    Floating inputs are only cast, so it also passes through a ``float32`` cache.
    """

    def __init__(
        self, keys: KeysCollection = "image", mask_keys: KeysCollection | None = None, allow_missing_keys: bool = True
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.mask_keys = _keys(mask_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        width = 0
        for key in self.key_iterator(d):
            d[key] = to_float(torch.as_tensor(d[key]))
            width = width or int(d[key].shape[-1])
        for key in self.mask_keys:
            if key in d:
                d[key] = mask_to_float(torch.as_tensor(d[key]), width)
        return d


RULES: dict[str, Rule] = {
    "cache_dtype": described(choice(list(CACHE_DTYPES)), "precision of cached images (``uint16``: DICOM at full depth)")
}  # the setting this module consumes
