"""Fingerprints of image files: each file's shape and a hash of its decoded pixels, taken while the entry check
decodes it, and kept so that the next run decodes only the files that changed.

The entry check decodes every image and mask once, so that a corrupt file stops a run before training and not in
the middle of an epoch. Decoding is the whole cost (about 1 ms of CPU for a 256 x 256 PNG with its hash), and a
header alone neither proves that the pixels decode nor gives their hash (``bundle.data.leakage`` compares pictures
by it). So the check

* decodes each file once however many entries name it, one thread per core (``decode_files``), or one process
  per core from ``PROCESS_CORES`` cores. Measured on 2 cores with 144,000 files (``python -m benchmarks scale``):
  threads took 90 to 108 s, processes 118 to 127 s though they spent less CPU (147 to 153 against 163 to 184
  CPU s), so threads stay the choice there; threads share the GIL outside PIL's inflate step, which caps them on
  more cores (processes on 4 cores or more are not measured here); and
* records each sound file as (size, mtime_ns, rows, columns, pixel hash) under its absolute path
  (``FingerprintTable``), saved as a small JSON file under the run's ``cache_dir``: a file rewritten in place
  changes its size or modification time and is decoded again, an unchanged one is only ``stat``-ed. JSON, not
  pickle, so that reading a cache runs no code. Only files that decoded are recorded: a broken file is decoded
  (and reported) on every run until it is fixed.

The pixel hash is SHA-1 of the decoded float32 array (``read_raw``, the file's own units) with its shape: a
byte-identical copy under another name, or the same picture re-encoded losslessly, hashes alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import numpy as np

from ..atomic import WriteError, atomic_write_json
from ..errors import DebugUserError
from .readers import CXRReadError, read_raw

__all__ = ["CACHE_FILE", "Fingerprint", "FingerprintTable", "pixel_hash", "decode_files", "available_cores"]

logger = logging.getLogger(__name__)

CACHE_FILE = "checked_files.json"
# bump when the reader or the hash changes: older records then no longer vouch for a file
FORMAT = "cxr-checked-files/1"
PROCESSES_FROM = 512  # fewer files decode faster in threads than new processes can start
PROCESS_CORES = 4  # on 2 cores threads decoded faster than processes (measured; see above)
_CHUNK = 256  # files per task sent to a process: large enough that sending paths costs nothing beside decoding


class Fingerprint(NamedTuple):
    """A sound image file as it was decoded: ``shape`` (rows, columns) and ``digest`` (hex pixel hash)."""

    shape: tuple[int, int]
    digest: str


def pixel_hash(pixels: np.ndarray) -> str:
    """SHA-1 (hex) of a decoded image (rows, columns) with its shape and dtype: equal pixels, equal hash."""
    pixels = np.ascontiguousarray(pixels)
    h = hashlib.sha1(f"{pixels.dtype.str}{pixels.shape}".encode(), usedforsecurity=False)
    h.update(pixels.data)
    return h.hexdigest()


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _decode(path: str) -> tuple[str, tuple[int, int] | None, Fingerprint | str]:
    """(path, its (size, mtime_ns) before decoding, its fingerprint or the reason it cannot be read)."""
    stamp = _stat(path)  # before decoding: a file rewritten meanwhile is decoded again next time
    try:
        pixels = read_raw(path)
    except CXRReadError as e:
        return path, stamp, e.reason
    return path, stamp, Fingerprint((int(pixels.shape[0]), int(pixels.shape[1])), pixel_hash(pixels))


def _decode_chunk(paths: Sequence[str]) -> list[tuple[str, tuple[int, int] | None, Fingerprint | str]]:
    return [_decode(p) for p in paths]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system tells it, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _context() -> multiprocessing.context.BaseContext:
    """Fork where there is fork: a spawned worker imports the caller's main module again (seconds, and a script
    without a ``__main__`` guard would run again). The workers only decode; the decoders are imported here first, so
    that no worker can inherit an import lock held by another thread at the fork."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from monai.data import PILReader  # noqa: F401  (read_raw's first call imports it)

    return multiprocessing.get_context("fork")


def _local_processes() -> int:
    """Processes of this run on this machine (``torchrun``'s LOCAL_WORLD_SIZE), 1 when not set or unreadable."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        return 1


def _chunks(paths: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def decode_files(
    paths: Sequence[str], workers: int | None = None
) -> Iterator[tuple[str, tuple[int, int] | None, Fingerprint | str]]:
    """Decode ``paths``; yields (path, (size, mtime_ns) or None, ``Fingerprint`` or the reason it is unreadable).

    ``workers`` (default: the available cores, shared among the processes ``torchrun`` started on this machine,
    each of which checks the datalist) decode in threads, or in processes for ``PROCESSES_FROM`` files or more when
    there are ``PROCESS_CORES`` workers or more. Where processes cannot start (a daemon process, a broken pool), the
    files are decoded in threads.
    """
    workers = max(1, workers or available_cores() // _local_processes())
    if len(paths) >= PROCESSES_FROM and workers >= PROCESS_CORES:
        done: set[str] = set()
        try:
            with ProcessPoolExecutor(min(workers, -(-len(paths) // _CHUNK)), mp_context=_context()) as pool:
                for chunk in pool.map(_decode_chunk, _chunks(paths, _CHUNK)):
                    for result in chunk:
                        done.add(result[0])
                        yield result
            return
        except (BrokenProcessPool, OSError, AssertionError) as e:  # AssertionError: a daemon may not have children
            logger.warning("decoding in threads: worker processes could not run (%s)", e)
            paths = [p for p in paths if p not in done]
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(_decode, paths)


class FingerprintTable:
    """Fingerprints of the files checked so far, by absolute path, valid while a file's (size, mtime_ns) hold.

    Args:
        path: the JSON file to read (when it exists) and ``save`` to; None keeps the table in memory only.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._records: dict[str, list] = {}  # path -> [size, mtime_ns, rows, columns, digest]
        self.decoded = 0  # files decoded by this table (not found valid in it)
        self.seen: dict[str, Fingerprint] = {}  # the sound files of this process's checks, for their hashes
        self._changed = False
        if self.path and os.path.isfile(self.path):
            self._records = self._read(self.path)

    @staticmethod
    def _read(path: str) -> dict[str, list]:
        """The records of a cache file; an unreadable or older one counts as empty (it only saves time)."""
        try:
            with open(path) as f:
                content = json.load(f)
        except (OSError, ValueError) as e:
            logger.warning("%s: not read (%s); every file will be decoded again", path, e)
            return {}
        if (
            not isinstance(content, dict)
            or content.get("format") != FORMAT
            or not isinstance(content.get("files"), dict)
        ):
            return {}
        return {k: v for k, v in content["files"].items() if isinstance(v, list) and len(v) == 5}

    def get(self, path: str) -> Fingerprint | None:
        """The fingerprint of ``path`` if it was recorded and the file's size and mtime have not changed since."""
        record = self._records.get(path)
        if record is None or _stat(path) != (record[0], record[1]):
            return None
        return Fingerprint((int(record[2]), int(record[3])), str(record[4]))

    def check(self, paths: Iterable[str], workers: int | None = None) -> dict[str, Fingerprint | str]:
        """Every path's fingerprint, or the reason it cannot be read; each file decoded once, unchanged recorded
        files not at all."""
        out: dict[str, Fingerprint | str] = {}
        todo = []
        for path in dict.fromkeys(paths):  # each file once, in order
            known = self.get(path)
            if known is None:
                todo.append(path)
            else:
                out[path] = known
        start, last = time.monotonic(), time.monotonic()
        for i, (path, stamp, result) in enumerate(decode_files(todo, workers), 1):
            out[path] = result
            if isinstance(result, Fingerprint) and stamp is not None:
                self._records[path] = [*stamp, *result.shape, result.digest]
                self._changed = True
            if time.monotonic() - last > 10:  # a long check says where it is
                last = time.monotonic()
                logger.info("checked %d / %d image files (%.0f s)", i, len(todo), last - start)
        self.decoded += len(todo)
        self.seen.update((p, r) for p, r in out.items() if isinstance(r, Fingerprint))
        return out

    def digests(self) -> dict[str, str]:
        """``{path: pixel hash}`` of every sound file checked through this table in this process."""
        return {path: found.digest for path, found in self.seen.items()}

    def save(self) -> None:
        """Write the table to ``path`` (atomically) when it changed; a folder that cannot be written only costs the
        next run its time, so it is logged, not raised."""
        if not self.path or not self._changed:
            return
        try:
            atomic_write_json({"format": FORMAT, "files": self._records}, self.path, indent=None)
            self._changed = False
        except (OSError, WriteError, DebugUserError) as e:  # a failed write is one message: here only a warning
            logger.warning(
                "%s: the checked files could not be recorded (%s); the next run decodes them again", self.path, e
            )
