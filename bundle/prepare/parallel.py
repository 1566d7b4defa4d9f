"""Running a per-file function over many files on several processes, with a progress line on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import IO, TypeVar

__all__ = ["Progress", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


class Progress:
    """``label: done/total (pct) rate files/s, ETA h:mm:ss`` on ``stream``.

    On a terminal the line is redrawn in place at most every 0.5 s; in a log file a new line is written at
    most every 30 s, so that a long run does not fill the log.
    """

    def __init__(self, label: str, total: int, stream: IO[str] | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last = time.monotonic()
        self.interval = 0.5 if self.tty else 30.0

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = time.strftime("%H:%M:%S", time.gmtime(left))
        return f"{self.label}: {self.done}/{self.total} ({pct:.1f}%) {rate:.1f} files/s, ETA {eta}"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more files done; redraw when the interval has passed."""
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.stream.write(("\r" if self.tty else "") + self._line() + ("" if self.tty else "\n"))
            self.stream.flush()

    def close(self) -> None:
        """Write the final count on its own line."""
        self.stream.write(("\r" if self.tty else "") + self._line() + "\n")
        self.stream.flush()


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, label: str, stream: IO[str] | None = None
) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` processes (in this process when ``workers <= 1``), in order.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    progress = Progress(label, len(items), stream)
    results: list[R] = []
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                results.append(fn(item))
                progress.update()
        else:
            # Chunks amortise the inter-process traffic; small enough that the progress line keeps moving.
            chunksize = max(1, min(32, len(items) // (workers * 8)))
            pool = ProcessPoolExecutor(max_workers=workers)
            try:
                for result in pool.map(fn, items, chunksize=chunksize):
                    results.append(result)
                    progress.update()
            finally:
                # On Ctrl-C do not wait for the queued files: the cache is resumable.
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        progress.close()
    return results
