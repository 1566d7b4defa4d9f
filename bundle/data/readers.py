"""Readers that turn any chest X-ray file (PNG, JPEG, DICOM, NIfTI) into one 2D float image in [0, 1].

Every reader returns an array of shape (rows, columns), the orientation a person sees on screen, so that
the same picture stored in different formats yields the same array. Intensities are min-max scaled per
image after the format's own photometric steps (DICOM rescale, VOI LUT/window, MONOCHROME1 inversion),
which makes an 8-bit PNG and a 12/16-bit DICOM of one picture agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["CXRReadError", "detect_format", "read_cxr", "read_mask", "read_raw", "SUPPORTED_SUFFIXES"]

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUPPORTED_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


class CXRReadError(ValueError):
    """An image or mask file that cannot be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        # every argument goes to the base class, so pickle and copy can rebuild the error; __str__ gives the message
        super().__init__(self.path, reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def detect_format(path: str | os.PathLike) -> str:
    """Return ``"pil"``, ``"dicom"`` or ``"nifti"`` for ``path`` (by suffix, else by the DICOM preamble)."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    # Hospital exports often have DICOM files without a suffix: look for the "DICM" magic at byte 128.
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        raise CXRReadError(path, f"cannot open file ({e.strerror})") from None
    if head[128:132] == b"DICM":
        return "dicom"
    raise CXRReadError(path, f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)} or DICOM)")


def _read_pil(path: str) -> np.ndarray:
    # MONAI's PILReader, with reverse_indexing=False so that rows stay rows.
    from monai.data import PILReader

    reader = PILReader(reverse_indexing=False)
    img = reader.read(path)
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    arr = np.asarray(img)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        if mode == "LA":
            return arr[..., 0].astype(np.float32)
        if mode in ("CMYK", "YCbCr"):
            arr = np.asarray(img.convert("RGB"))
        rgb = arr[..., :3].astype(np.float32)  # alpha dropped: it carries no X-ray signal
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return arr.astype(np.float32)


def _pixel_ops():
    """pydicom's LUT and colour helpers: ``pydicom.pixels`` from pydicom 3, ``pixel_data_handlers.util`` before it.

    Both are supported because the MONAI Label environment needs pydicom 2 (docs/monailabel.md).
    """
    try:
        from pydicom import pixels as ops
    except ImportError:
        from pydicom.pixel_data_handlers import util as ops
    return ops


def _read_dicom(path: str) -> np.ndarray:
    # Not MONAI's PydicomReader: it neither inverts MONOCHROME1 nor applies the VOI LUT / window,
    # both of which decide what a radiograph looks like.
    import pydicom

    ops = _pixel_ops()
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise CXRReadError(path, "DICOM file has no pixel data")
    arr = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and photometric.startswith(("RGB", "YBR")):
        if photometric.startswith("YBR"):
            arr = ops.convert_color_space(arr, photometric, "RGB")
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return arr
    if arr.ndim != 2:
        raise CXRReadError(path, f"expected a single 2D frame, got pixel array of shape {tuple(arr.shape)}")
    arr = ops.apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        arr = ops.apply_voi_lut(arr, ds, prefer_lut=True)
    arr = np.asarray(arr, dtype=np.float32)
    if photometric == "MONOCHROME1":  # high values are dark: invert so that bone is bright as in MONOCHROME2
        arr = arr.max() + arr.min() - arr
    return arr


def _read_nifti(path: str) -> np.ndarray:
    from monai.data import NibabelReader

    reader = NibabelReader()
    img = reader.read(path)
    arr, _ = reader.get_data(img)
    arr = np.asarray(arr, dtype=np.float32)
    arr = arr.reshape([s for s in arr.shape if s != 1] or [1, 1]) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise CXRReadError(path, f"expected a 2D image, got a volume of shape {tuple(arr.shape)}")
    # NIfTI stores (x, y) = (column, row); MONAI writes 2D pictures the same way. Transpose back to rows.
    return np.ascontiguousarray(arr.T)


_READERS = {"pil": _read_pil, "dicom": _read_dicom, "nifti": _read_nifti}


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as a float32 array (rows, columns) in the file's own intensity units.

    Raises:
        CXRReadError: missing, unsupported or corrupt file.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CXRReadError(path, "file not found")
    fmt = detect_format(path)
    try:
        arr = _READERS[fmt](path)
    except CXRReadError:
        raise
    except Exception as e:  # decoders raise many types; the user needs the file and the reason
        raise CXRReadError(path, f"cannot decode {fmt} image ({type(e).__name__}: {e})") from None
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise CXRReadError(path, f"not a 2D image (shape {tuple(arr.shape)})")
    if not np.isfinite(arr).all():
        raise CXRReadError(path, "image has non-finite values")
    return arr


def read_cxr(path: str | os.PathLike) -> np.ndarray:
    """Read a chest X-ray as float32 (rows, columns), min-max scaled to [0, 1]."""
    arr = read_raw(path)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a lung mask as uint8 (rows, columns): 1 where the file is non-zero, else 0."""
    return (read_raw(path) > 0).astype(np.uint8)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a suffix this module reads (files without suffix may still be DICOM)."""
    return str(path).lower().endswith(SUPPORTED_SUFFIXES) or Path(path).suffix == ""
