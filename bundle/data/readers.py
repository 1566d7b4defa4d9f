"""Readers that turn any chest X-ray file (PNG, JPEG, DICOM, NIfTI) into one 2D float image in [0, 1].

Every reader returns an array of shape (rows, columns), the orientation a person sees on screen, so that
the same picture stored in different formats yields the same array. Intensities are min-max scaled per
image after the format's own photometric steps (DICOM rescale, VOI LUT/window, MONOCHROME1 inversion),
which makes an 8-bit PNG and a 12/16-bit DICOM of one picture agree.

Every failure, whatever the bytes, ends in ``CXRReadError`` naming the file. Each reader checks the image size its
file declares against ``MAX_PIXELS`` before decoding, so a decompression bomb (a tiny file declaring a huge
image) is refused before its memory is spent.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CXRReadError",
    "detect_format",
    "read_cxr",
    "read_array",
    "read_mask",
    "read_raw",
    "scale_min_max",
    "MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
]

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUPPORTED_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES

MAX_PIXELS = 64_000_000
"""Most pixels (width x height x frames) a file may declare; larger ones are refused before decoding.

The largest radiography detectors are 43 x 43 cm at 100 um (about 4,300 x 4,300 = 18.5 MP), and a 14 x 17 inch
film digitised at 50 um is 7,100 x 8,600 = 61 MP, so no radiograph comes near 64 MP. The limit is below PIL's own
decompression-bomb warning (89.5 MP, ``Image.MAX_IMAGE_PIXELS``), so every image PIL warns about is refused here
with the same message, and one accepted image costs at most 256 MB as float32 (1 GB with 4 samples per pixel,
the most a DICOM may have).
"""

# The formats PIL may decode behind a PIL suffix: a renamed file of another kind (EPS runs Ghostscript, for one)
# is refused instead of being handed to that plugin. JPEG and PNG are both allowed for either suffix, as exported
# collections often carry JPEGs named .png. ("JPEG" opens multi-picture JPEGs too.)
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF")
# Uncompressed DICOM transfer syntaxes (deflated ones are inflated while the file is read): their pixel data must
# hold every declared byte.
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian: one item of encapsulated pixel data
_MAX_REASON = 400  # decoder messages can quote whole byte strings


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


def _size_text(n: int) -> str:
    return f"{n / 1e9:.3g} GP" if n >= 1e9 else f"{n / 1e6:.3g} MP"


def _bomb_reason(what: str) -> str:
    limit = f"{MAX_PIXELS / 1e6:g} MP"
    return f"declares {what}, more than the {limit} a radiograph can have; refused before decoding"


def _check_size(path: str, dims: Sequence[int], frames: int = 1) -> None:
    """Refuse ``path`` when its declared ``dims`` (width, height[, depth...]) times ``frames`` exceed MAX_PIXELS."""
    dims = [int(d) for d in dims]
    n = math.prod(dims) * frames
    if n > MAX_PIXELS:
        while len(dims) > 2 and dims[-1] == 1:  # NIfTI pads 2D images with unit dimensions
            dims.pop()
        what = " x ".join(str(d) for d in dims) + (" pixels" if len(dims) <= 2 else " voxels")
        raise CXRReadError(
            path, _bomb_reason(what + (f" in {frames} frames" if frames != 1 else "") + f" ({_size_text(n)})")
        )


def _open_pil(path: str, source: Any = None) -> Any:
    """``PIL.Image.open`` of ``source`` (default: the file at ``path``), lazily: only the header is read.

    PIL's own decompression-bomb check runs inside ``open``; it becomes this module's message.
    """
    from PIL import Image

    with warnings.catch_warnings():
        # PIL warns from 89.5 MP: those images exceed MAX_PIXELS and _check_size refuses them right after
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if source is None:  # MONAI's PILReader for files, as everywhere else in the bundle
                from monai.data import PILReader

                return PILReader(reverse_indexing=False).read(path, formats=_PIL_FORMATS)
            return Image.open(source, formats=("JPEG", "JPEG2000"))
        except Image.DecompressionBombError as e:  # raised from 179 MP, before the size is returned
            count = re.search(r"\((\d+) pixels\)", str(e))
            pixels = int(count.group(1)) if count else 2 * MAX_PIXELS
            if pixels > MAX_PIXELS:
                raise CXRReadError(path, _bomb_reason(f"an image of {_size_text(pixels)}")) from None
            # only where PIL.Image.MAX_IMAGE_PIXELS was lowered below this module's limit
            reason = f"declares an image of {_size_text(pixels)}, more than PIL.Image.MAX_IMAGE_PIXELS allows"
            raise CXRReadError(path, reason + "; refused before decoding") from None


def _read_pil(path: str) -> np.ndarray:
    # reverse_indexing=False (in _open_pil) so that rows stay rows.
    img = opened = _open_pil(path)
    try:
        _check_size(path, img.size)
        mode = img.mode
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            mode = img.mode
        if mode in ("LA", "La"):
            return np.asarray(img)[..., 0].astype(np.float32)
        if len(img.getbands()) > 1:
            if mode not in ("RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, PA...: PIL knows their colours
                img = img.convert("RGB")
            rgb = np.asarray(img)[..., :3].astype(np.float32)  # alpha dropped: it carries no X-ray signal
            return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.asarray(img).astype(np.float32)
    finally:
        opened.close()  # an image refused before decoding still holds its file open


def _pixel_ops():
    """pydicom's LUT and colour helpers: ``pydicom.pixels`` from pydicom 3, ``pixel_data_handlers.util`` before it.

    Both are supported because the MONAI Label environment needs pydicom 2 (docs/monailabel.md).
    """
    try:
        from pydicom import pixels as ops
    except ImportError:
        from pydicom.pixel_data_handlers import util as ops
    return ops


def _undecodable(path: str, detail: str) -> CXRReadError:
    """A DICOM file whose header makes decoding impossible, worded like the decoders' own failures."""
    return CXRReadError(path, f"cannot decode dicom image ({detail})")


def _whole(path: str, ds: Any, keyword: str, default: int | None = None) -> int:
    """The DICOM attribute ``keyword`` as an int; refuses a missing (without ``default``) or non-integer value."""
    from pydicom.multival import MultiValue

    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise _undecodable(path, f"no {keyword}")
        return default
    if isinstance(value, (list, tuple, MultiValue)):
        raise _undecodable(path, f"{keyword} has {len(value)} values, expected one")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not number.is_integer():
        raise _undecodable(path, f"{keyword} is {str(value)[:40]!r}, not a whole number")
    return int(number)


def _first_fragment(data: bytes) -> bytes:
    """The first fragment of encapsulated pixel data (after the basic offset table), or b"" if there is none."""
    pos, fragment = 0, b""
    for _ in range(2):  # item 1 is the basic offset table, item 2 the first fragment of frame 1
        if data[pos : pos + 4] != _ITEM_TAG or len(data) < pos + 8:
            return b""
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        fragment, pos = data[pos + 8 : pos + 8 + length], pos + 8 + length
    return fragment


def _check_dicom_geometry(path: str, ds: Any) -> int:
    """Refuse absurd or oversized pixel geometry, several frames, and pixel data too short for the geometry, before
    anything is decoded; returns the samples per pixel."""
    rows, cols = _whole(path, ds, "Rows"), _whole(path, ds, "Columns")
    samples, bits = _whole(path, ds, "SamplesPerPixel", 1), _whole(path, ds, "BitsAllocated")
    frames = _whole(path, ds, "NumberOfFrames", 1) or 1  # 0 means 1, as pydicom reads it
    if rows < 1 or cols < 1:
        raise _undecodable(path, f"Columns x Rows is {cols} x {rows}")
    if frames < 1:
        raise _undecodable(path, f"NumberOfFrames is {frames}")
    if samples not in (1, 3, 4):
        raise _undecodable(path, f"SamplesPerPixel is {samples}, expected 1 or 3")
    if bits not in (1, 8, 16, 32, 64):
        raise _undecodable(path, f"BitsAllocated is {bits}, expected 1, 8, 16, 32 or 64")
    _check_size(path, (cols, rows), frames)
    if frames > 1:  # refused before all frames are decoded
        raise CXRReadError(path, f"expected a single 2D frame, got {frames} frames")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    data = ds.PixelData
    if syntax in _NATIVE_SYNTAXES:
        values = rows * cols * samples
        if samples == 3 and str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
            values = values // 3 * 2  # two chroma samples are shared by each pair of pixels
        expected = math.ceil(values * bits / 8)
        if len(data) < expected:
            raise _undecodable(
                path,
                f"pixel data holds {len(data)} bytes, fewer than the {expected} its header declares "
                f"for {cols} x {rows} pixels of {samples} x {bits} bits",
            )
    elif data[:4] == _ITEM_TAG:
        # A compressed frame carries its own header (JPEG, JPEG 2000), which decoders follow instead of Rows/Columns.
        try:
            frame = _open_pil(path, io.BytesIO(_first_fragment(data)))
        except CXRReadError:
            raise
        except Exception:  # not a codestream PIL knows (RLE, JPEG-LS...): the decoder judges it against Rows/Columns
            return samples
        with frame:
            _check_size(path, frame.size)
    return samples


def _read_dicom(path: str) -> np.ndarray:
    # Not MONAI's PydicomReader: it neither inverts MONOCHROME1 nor applies the VOI LUT / window,
    # both of which decide what a radiograph looks like.
    import pydicom

    ops = _pixel_ops()
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise CXRReadError(path, "DICOM file has no pixel data")
    samples = _check_dicom_geometry(path, ds)
    arr = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and samples > 1:
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
    img = reader.read(path)  # the header only: the voxels stay on disk until get_data
    shape = tuple(int(s) for s in img.shape)
    _check_size(path, shape)
    if sum(s != 1 for s in shape) > 2:  # refused before the voxels are read
        raise CXRReadError(path, f"expected a 2D image, got a volume of shape {shape}")
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
        CXRReadError: missing, unsupported or corrupt file, or one declaring more than ``MAX_PIXELS`` pixels
            (refused from its header, before decoding).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CXRReadError(path, "file not found")
    fmt = detect_format(path)
    try:
        # overflow to inf or NaN from absurd header values (rescale, window) is refused below, not warned about
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(_READERS[fmt](path), dtype=np.float32)
    except CXRReadError:
        raise
    except Exception as e:  # decoders raise many types; the user needs the file and the reason
        try:
            message = f"{type(e).__name__}: {e}"
        except Exception:  # an exception whose own message fails to format
            message = type(e).__name__
        if len(message) > _MAX_REASON:
            message = message[:_MAX_REASON] + "..."
        raise CXRReadError(path, f"cannot decode {fmt} image ({message})") from None
    return _checked_image(arr, path)


def _checked_image(arr: np.ndarray, source: str) -> np.ndarray:
    """``arr`` when it is a finite 2D image of at least 2 x 2 pixels; else ``CXRReadError`` naming ``source``."""
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise CXRReadError(source, f"not a 2D image (shape {tuple(arr.shape)})")
    if not np.isfinite(arr).all():
        raise CXRReadError(source, "image has non-finite values")
    return arr


def scale_min_max(arr: np.ndarray) -> np.ndarray:
    """A float32 image (rows, columns) min-max scaled to [0, 1] per image; all zero for a constant image.

    ``(arr - min) / (max - min)`` in float32, with min and max as Python floats; in float64 only where
    ``max - min`` exceeds float32's range (absurd DICOM rescale values).
    """
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    if hi - lo > float(np.finfo(np.float32).max):  # arr - lo would overflow float32
        arr = arr.astype(np.float64)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def read_cxr(path: str | os.PathLike) -> np.ndarray:
    """Read a chest X-ray as float32 (rows, columns), min-max scaled to [0, 1]."""
    return scale_min_max(read_raw(path))


def read_array(pixels: Any, source: str = "array") -> np.ndarray:
    """A picture already in memory, (rows, columns) in its own intensity units (uint8, uint16, float), read as
    ``read_cxr`` reads a file: float32, checked, min-max scaled to [0, 1].

    Raises:
        CXRReadError: naming ``source``: not a 2D array of numbers, or non-finite values.
    """
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf: refused below
            arr = np.asarray(pixels, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise CXRReadError(source, f"not an array of numbers ({e})") from None
    return scale_min_max(_checked_image(arr, source))


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a lung mask as uint8 (rows, columns): 1 where the file is non-zero, else 0."""
    return (read_raw(path) > 0).astype(np.uint8)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a suffix this module reads (files without suffix may still be DICOM)."""
    return str(path).lower().endswith(SUPPORTED_SUFFIXES) or Path(path).suffix == ""
