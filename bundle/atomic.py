"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Used for every file a killed run could leave half-written: checkpoints, curriculum state, prepared datalists,
cached PNGs and the split files of the study scripts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json", "atomic_save"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it is flushed, synced and renamed onto ``path``.

    Readers never see a partial file, and a failure leaves the previous file and no temporary behind.
    ``kwargs`` go to ``open`` (e.g. ``newline=""`` for CSV).
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int | None = 2, **kwargs: Any) -> None:
    """``json.dump`` through ``atomic_write``; ``kwargs`` go to ``json.dump`` (e.g. ``default=str``)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, **kwargs)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through ``atomic_write``."""
    import torch

    with atomic_write(path) as f:
        torch.save(obj, f)
