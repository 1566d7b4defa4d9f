"""One id chooses where the loaded images are kept between epochs: in memory, on disk, or nowhere.

Every config builds its datasets with ``cached_dataset`` (``"cache": "memory" | "disk" | "none"``):

* ``memory`` (default): MONAI's ``CacheDataset``; the deterministic transforms run once, before training, and
  their results stay in RAM (50 KB per 224 x 224 image with ``cache_dtype`` uint8, 200 KB with float32).
* ``disk``: MONAI's ``PersistentDataset`` under ``cache_dir``: one ``.pt`` file per image, written on first use and
  read back on every later access, in this run and the next; for data sets larger than RAM. The file names hash
  the datalist entry and the loading transforms with their settings (image size, precision), so runs with other
  settings sharing the folder never read each other's files.
* ``none``: MONAI's ``Dataset``; every access reads and resizes the image file again (no memory, no disk).

In every case the random transforms run after the cache, on every access.

Filling a memory cache of 100,000 images takes minutes: on a terminal (``progress``, the configs' ``show_progress``)
MONAI's tqdm bar shows it; elsewhere (a log file, a cluster job) ``LoggedCacheDataset`` logs a line every
``LOG_EVERY_PERCENT`` percent with the rate and the time left, at most one per ``LOG_SECONDS``, instead of nothing:
a cache filled in a few seconds logs its start and its end only.

A memory cache of compact images keeps small tensors (50 KB) among the freed float32 intermediates of loading
(200 KB each). glibc's malloc raises its mmap threshold each time such a block is freed, after which the
intermediates come from the heap and the small survivors pin it: measured, 260 KB of RSS per cached uint8 image,
more than float32's 205 KB. So while a cache of compact images fills (``compact_heap``: its transforms have
``compact_heap`` true, as ``Compactd`` has for the integer precisions) the threshold is fixed at glibc's default
(128 KB): blocks that large map and unmap, and RSS follows the cache's contents (``python -m benchmarks cache``).
Once it is filled, the threshold goes to glibc's own ceiling (32 MB, the trim threshold to twice that, as glibc
moves them): a threshold left at 128 KB mapped, zero-filled and unmapped the activations of every training step
anew (measured at 224 px, batch 16: 1.4 to 1.6 million page faults a step instead of 0.6 million, 2 to 3 s more of
system time a step, most of the 20 % by which fine-tuning trailed a plain loop). A float32 cache, whose survivors
are the 200 KB blocks themselves, keeps glibc's moving threshold throughout.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.utils import convert_to_tensor, optional_import
from torch.utils.data import get_worker_info

from ..atomic import WriteError, atomic_save
from ..errors import RelayedUserError
from ..values import Rule, choice, described, number, output_folder

__all__ = [
    "CACHE_KINDS",
    "LOG_EVERY_PERCENT",
    "LOG_SECONDS",
    "DiskCache",
    "LoggedCacheDataset",
    "cached_dataset",
    "compact_heap",
    "wants_compact_heap",
    "transform_hash",
]

logger = logging.getLogger(__name__)

CACHE_KINDS = ("memory", "disk", "none")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_FILL_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value; set explicitly, it stops moving
_RUN_MMAP_THRESHOLD = 32 * 1024 * 1024  # the ceiling of glibc's moving threshold (64-bit), the most mallopt takes
_RUN_TRIM_THRESHOLD = 2 * _RUN_MMAP_THRESHOLD  # glibc moves the trim threshold to twice the mmap threshold
LOG_EVERY_PERCENT = 5
LOG_SECONDS = 10.0
# Measured (docs/README.md): 100,000 images fill the memory cache in about 8 minutes on 2 cores, while the disk cache
# starts training within seconds and fills during the first epoch; past this size the first line says so.
LARGE_CACHE = 20_000
_LARGE_HINT = " before the first iteration (--cache disk starts training at once and fills during the first epoch)"
_, has_tqdm = optional_import("tqdm", name="tqdm")


class LoggedCacheDataset(CacheDataset):
    """MONAI's ``CacheDataset`` that reports its filling: tqdm's bar with ``progress`` (when tqdm is installed),
    otherwise a log line every ``LOG_EVERY_PERCENT`` percent of the images, at most one per ``LOG_SECONDS``
    (``caching 5000 / 100000 images (5%), 310 images/s, about 5 min left``), and one at the end. A cache of
    compact tensors fills inside ``compact_heap``."""

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list:
        if self.cache_num <= 0:
            return super()._fill_cache(indices)
        with compact_heap(wants_compact_heap(self.transform)):
            if self.progress and has_tqdm:
                return super()._fill_cache(indices)
            return self._fill_logged(indices)

    def _fill_logged(self, indices: Sequence[int] | None) -> list:
        """MONAI's filling, with the log lines."""
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        total, items = len(indices), []
        step = max(1, total * LOG_EVERY_PERCENT // 100)
        start = last = time.monotonic()
        logger.info("caching %d images in memory%s", total, _LARGE_HINT if total >= LARGE_CACHE else "")
        with ThreadPool(self.num_workers) as pool:
            for done, item in enumerate(pool.imap(self._load_cache_item, indices), 1):
                items.append(item)
                now = time.monotonic()
                if done == total or (done % step == 0 and now - last >= LOG_SECONDS):
                    logger.info(_progress_line(done, total, now - start))
                    last = now
        return items


def _progress_line(done: int, total: int, seconds: float) -> str:
    """``caching 5000 / 100000 images (5%), 310 images/s, about 5 min left``."""
    rate = done / seconds if seconds > 0 else float("inf")
    line = f"caching {done} / {total} images ({100 * done // total}%), {rate:.0f} images/s"
    if done < total and rate > 0:
        left = (total - done) / rate
        line += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
    return line if done < total else line + f", done in {seconds:.0f} s"


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt``; False on other C libraries and systems, where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt to call)
        return False


@contextmanager
def compact_heap(enabled: bool = True) -> Iterator[bool]:
    """While the block runs (a memory cache filling), glibc's mmap threshold fixed at 128 KB; after it, the mmap
    and trim thresholds at the ceiling glibc's moving thresholds reach (32 MB, 64 MB), for the training that follows.

    Yields whether the setting is in force (False when not ``enabled``, and on other C libraries and systems,
    where nothing changes).
    """
    compact = bool(enabled) and _mallopt(_M_MMAP_THRESHOLD, _FILL_MMAP_THRESHOLD)
    try:
        yield compact
    finally:
        if compact:
            # set explicitly, the thresholds no longer move: at 128 KB every activation would be mapped anew
            _mallopt(_M_MMAP_THRESHOLD, _RUN_MMAP_THRESHOLD)
            _mallopt(_M_TRIM_THRESHOLD, _RUN_TRIM_THRESHOLD)


def wants_compact_heap(transform: Any) -> bool:
    """Whether one of ``transform``'s steps (a ``Compose``, nested or not, a list, or one transform) keeps small
    tensors in a cache: its ``compact_heap`` attribute is true (``bundle.data.precision.Compactd``)."""
    if getattr(transform, "compact_heap", False):
        return True
    steps = getattr(transform, "transforms", transform if isinstance(transform, (list, tuple)) else ())
    return any(wants_compact_heap(t) for t in steps) if isinstance(steps, Iterable) else False


def transform_hash(transforms: Sequence[Any]) -> bytes:
    """A hash of the cached (deterministic) transforms with their settings, for ``PersistentDataset`` file names.

    MONAI's ``json_hashing`` falls back to the transforms' class names when they are not JSON serialisable, which
    would let a run at another image size or precision read files written by this one; the pickled transforms
    hold their settings. A transform that cannot be pickled falls back to its class name and ``vars``.
    """
    try:
        payload = pickle.dumps(list(transforms), protocol=4)
    except Exception:  # e.g. a lambda in a Lambdad: its settings cannot be read, name them
        payload = repr([(type(t).__qualname__, sorted(map(str, vars(t).items()))) for t in transforms]).encode()
    return hashlib.md5(payload).hexdigest().encode()


class DiskCache(PersistentDataset):
    """MONAI's ``PersistentDataset`` writing each new file through ``atomic_write`` inside ``cache_dir``.

    MONAI writes into the system's temporary folder and copies the file over (a full ``cache_dir`` keeps a torn
    file that every later run fails to read) and skips the file on a permission error. Here a file is whole or
    absent, and a full disk, a missing permission or a removed folder ends the run with one message; from a
    DataLoader worker it travels as a ``RelayedUserError``.
    """

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        hashfile = Path(self.cache_dir) / f"{name}.pt"
        if hashfile.is_file():  # a hit: MONAI reads it (and recomputes a corrupt one)
            return super()._cachecheck(item_transformed)
        item = self._pre_transform(deepcopy(item_transformed))  # keep the original hashed
        stored = convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta)
        try:
            atomic_save(stored, hashfile, what="the disk cache file", kept="the cache files written before are kept")
        except WriteError as e:
            if get_worker_info() is not None:  # a SystemExit would end the worker without its message
                raise RelayedUserError(str(e)) from None
            raise
        return item


def cached_dataset(
    data: Sequence[Mapping[str, Any]],
    transform: Callable | None,
    cache: str = "memory",
    cache_dir: str | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
    progress: bool = False,
    copy_cache: bool = True,
) -> Dataset:
    """A MONAI dataset over ``data`` that keeps the output of ``transform``'s deterministic part as ``cache`` says.

    Args:
        data: datalist entries.
        transform: MONAI transforms; the part before the first random transform (or the first non-MONAI
            callable) is what is kept.
        cache: ``memory`` (``CacheDataset``) | ``disk`` (``PersistentDataset`` under ``cache_dir``) | ``none``
            (``Dataset``).
        cache_dir: the folder of the disk cache (created when missing); needed only for ``disk``.
        cache_rate, num_workers, copy_cache: as MONAI's ``CacheDataset`` (``memory`` only).
        progress: a progress bar while the memory cache fills; without it, log lines (``LoggedCacheDataset``).

    Raises:
        ValueError: an unknown ``cache``, or ``disk`` without a ``cache_dir``.
    """
    kind = str(cache).lower()
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache must be one of {', '.join(CACHE_KINDS)}, got {cache!r}")
    if kind == "memory":
        return LoggedCacheDataset(
            data,
            transform=transform,
            cache_rate=cache_rate,
            num_workers=num_workers,
            progress=progress,
            copy_cache=copy_cache,
        )
    if kind == "disk":
        if not cache_dir:
            raise ValueError("cache disk needs a cache_dir (the folder of the cached files)")
        logger.info("disk cache of %d images in %s", len(data), cache_dir)
        # track_meta=False: the loading transforms end with plain tensors; weights_only: nothing in a cache file runs
        return DiskCache(
            data, transform=transform, cache_dir=cache_dir, hash_transform=transform_hash, track_meta=False
        )
    return Dataset(data, transform=transform)


# the settings this module consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "cache": described(choice(CACHE_KINDS), "where decoded, resized images are kept between epochs"),
    "cache_dir": described(output_folder, "folder of the ``disk`` cache (read only with ``cache`` ``disk``)"),
    "cache_rate": described(number(0, 1), "share of the images kept by the ``memory`` cache"),
}
