"""Reading a few DICOM header fields of many files, without their pixel data."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .parallel import parallel_map

__all__ = ["read_header", "read_headers"]


def read_header(path: str, tags: Sequence[str]) -> dict[str, str] | str:
    """``{keyword: value as text ("" when absent)}`` for ``tags`` of the DICOM file ``path``, or the reason
    it cannot be read as DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(tags))
    except Exception as e:  # pydicom raises many types on broken files; the user needs the reason
        return f"not a readable DICOM file ({type(e).__name__}: {e})"
    out = {}
    for tag in tags:
        value = ds.get(tag)
        value = getattr(value, "value", value)
        out[tag] = "" if value is None else str(value).strip()
    return out


def read_headers(paths: Sequence[str], tags: Sequence[str], workers: int) -> list[dict[str, str] | str]:
    """``read_header`` for every path, in order, on ``workers`` processes."""
    return parallel_map(functools.partial(read_header, tags=tuple(tags)), list(paths), workers, "DICOM headers")
