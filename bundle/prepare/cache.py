"""Resized PNG copies of the images and masks, so that training does not decode DICOM every epoch.

A cached file carries, in PNG text fields, the SHA-256 of its source file, the original (rows, columns) and
the cache settings; a later run reuses it only when all three still match, which makes the cache resumable
and safe to rerun with other settings. Files are written to a temporary name and renamed into place, so an
interrupted run never leaves a truncated PNG under the expected name.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write

__all__ = ["CacheSpec", "cached_info", "plan_cache_paths", "target_size", "write_png"]

_NIFTI_GZ = ".nii.gz"
_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".dic", ".nii"}


@dataclass(frozen=True)
class CacheSpec:
    """Where and how to cache: ``size`` pixels square (or longest side with ``keep_aspect``), 8 or 16 bits."""

    root: str
    size: int = 256
    keep_aspect: bool = False
    bits: int = 8

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"cache size must be at least 8 pixels, got {self.size}")
        if self.bits not in (8, 16):
            raise ValueError(f"cache bits must be 8 or 16, got {self.bits}")

    @property
    def tag(self) -> str:
        """The settings as text, stored in each PNG to detect a cache made with other settings."""
        return f"size={self.size};keep_aspect={int(self.keep_aspect)};bits={self.bits}"


def _strip_suffix(relpath: str) -> str:
    if relpath.lower().endswith(_NIFTI_GZ):
        return relpath[: -len(_NIFTI_GZ)]
    return str(Path(relpath).with_suffix("")) if Path(relpath).suffix.lower() in _SUFFIXES else relpath


def plan_cache_paths(paths: Sequence[str], src_root: str, spec: CacheSpec) -> dict[str, str]:
    """Source path -> cache path: the source's path under ``src_root`` with ``.png`` for its suffix.

    Two sources that would share a name (``a.dcm`` and ``a.png`` in one folder) keep their own suffix
    (``a.dcm.png``); files outside ``src_root`` go under ``external/``.
    """
    root = Path(src_root).resolve()

    def relative(p: str) -> str:
        try:
            return str(Path(p).resolve().relative_to(root))
        except ValueError:
            return os.path.join("external", Path(p).name)

    rels = {p: relative(p) for p in dict.fromkeys(paths)}
    names = {p: _strip_suffix(r) + ".png" for p, r in rels.items()}
    clashes = {n for n, c in Counter(names.values()).items() if c > 1}
    return {p: os.path.join(spec.root, rels[p] + ".png" if names[p] in clashes else names[p]) for p in rels}


def target_size(shape: tuple[int, int], spec: CacheSpec) -> tuple[int, int]:
    """(width, height) of the cached image for an image of ``shape`` (rows, columns)."""
    rows, cols = shape
    if not spec.keep_aspect:
        return spec.size, spec.size
    scale = spec.size / max(rows, cols)
    return max(1, round(cols * scale)), max(1, round(rows * scale))


def cached_info(path: str, spec: CacheSpec, sha256: str) -> tuple[int, int] | None:
    """The original (rows, columns) recorded in a valid cached PNG for this source and settings, else None."""
    from PIL import Image

    if not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as img:
            text = dict(getattr(img, "text", {}))
    except Exception:  # a damaged cache file is rewritten, not reported
        return None
    if text.get("source_sha256") != sha256 or text.get("cache") != spec.tag:
        return None
    try:
        rows, cols = (int(v) for v in text["orig_shape"].split(","))
    except (KeyError, ValueError):
        return None
    return rows, cols


def write_png(arr: np.ndarray, path: str, spec: CacheSpec, sha256: str, is_mask: bool) -> None:
    """Resize ``arr`` (an image in [0, 1], or a 0/1 mask) and write it to ``path`` atomically.

    Images are resized with Lanczos (anti-aliased when shrinking); masks with nearest neighbour so that they
    stay 0/1 and keep their edges aligned with the image.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    size = target_size(arr.shape, spec)
    if is_mask:
        out = Image.fromarray(arr.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)
    else:
        small = np.asarray(Image.fromarray(arr.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
        small = np.clip(small, 0.0, 1.0)  # Lanczos overshoots at sharp edges
        scale, dtype = (255, np.uint8) if spec.bits == 8 else (65535, np.uint16)
        out = Image.fromarray(np.round(small * scale).astype(dtype))
    info = PngInfo()
    info.add_text("source_sha256", sha256)
    info.add_text("orig_shape", f"{arr.shape[0]},{arr.shape[1]}")
    info.add_text("cache", spec.tag)
    with atomic_write(path) as f:
        out.save(f, format="PNG", pnginfo=info)
