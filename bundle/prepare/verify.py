"""Checking every file once: content hash, decoding and, with a cache, the resized PNG."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.readers import CXRReadError, read_cxr, read_mask
from .cache import CacheSpec, cached_info, write_png
from .parallel import parallel_map

__all__ = ["FileCheck", "FileTask", "check_file", "check_files"]


@dataclass(frozen=True)
class FileTask:
    """One file to check: ``role`` is ``"image"`` or ``"mask"``; ``cache_path`` is None without a cache."""

    path: str
    role: str
    cache_path: str | None = None


@dataclass
class FileCheck:
    """The outcome for one file: its SHA-256, (rows, columns) when decoded, or the reason it is unusable."""

    path: str
    sha256: str | None = None
    shape: tuple[int, int] | None = None
    error: str | None = None
    cached: str | None = None  # "written" or "reused"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(task: FileTask, spec: CacheSpec | None = None, decode: bool = True) -> FileCheck:
    """Hash, decode (unless ``decode`` is False and there is no cache) and cache one file; never raises for a
    bad file, the reason is in ``FileCheck.error``."""
    result = FileCheck(task.path)
    try:
        result.sha256 = _sha256(task.path)
    except FileNotFoundError:
        result.error = "file not found"
        return result
    except OSError as e:
        result.error = f"cannot read file ({e.strerror})"
        return result
    if spec is not None and task.cache_path:
        shape = cached_info(task.cache_path, spec, result.sha256)
        if shape is not None:  # decoded and written by an earlier run from the same bytes
            result.shape, result.cached = shape, "reused"
            return result
    if not decode and spec is None:
        return result
    try:
        arr = read_mask(task.path) if task.role == "mask" else read_cxr(task.path)
    except CXRReadError as e:
        result.error = e.reason
        return result
    result.shape = (int(arr.shape[0]), int(arr.shape[1]))
    if spec is not None and task.cache_path:
        write_png(arr, task.cache_path, spec, result.sha256, is_mask=task.role == "mask")
        result.cached = "written"
    return result


def check_files(
    tasks: Sequence[FileTask], workers: int, spec: CacheSpec | None = None, decode: bool = True
) -> dict[str, FileCheck]:
    """``check_file`` for every task on ``workers`` processes; path -> result."""
    if decode or spec is not None:
        # Loaded once here so that forked workers inherit it instead of each importing MONAI's readers.
        import monai.data  # noqa: F401

    label = "checking files" + (" and writing the cache" if spec is not None else "")
    results = parallel_map(functools.partial(check_file, spec=spec, decode=decode), list(tasks), workers, label)
    return {r.path: r for r in results}
