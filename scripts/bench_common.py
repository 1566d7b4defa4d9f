"""Helpers shared by the benchmark suites: timing, peak memory, reporting."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import torch

__all__ = ["peak_memory_mb", "reset_peak", "report", "EpochTimer", "sync"]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's peak RSS (VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: the peak then covers the whole process
        pass


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size since ``reset_peak`` (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _vm_hwm_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class EpochTimer:
    """Ignite handler: wall time of each epoch (synchronised on CUDA) and images seen."""

    def __init__(self, device: torch.device, batch_images: Callable[[object], int]) -> None:
        self.device, self.batch_images = device, batch_images
        self.epochs: list[tuple[float, int]] = []
        self._start, self._images = 0.0, 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._begin)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end)

    def _begin(self, engine) -> None:
        sync(self.device)
        self._start, self._images = time.perf_counter(), 0

    def _count(self, engine) -> None:
        self._images += self.batch_images(engine.state.batch)

    def _end(self, engine) -> None:
        sync(self.device)
        self.epochs.append((time.perf_counter() - self._start, self._images))

    def throughput(self, skip: int = 1) -> float:
        """Images per second over the epochs after the first ``skip`` (warm-up)."""
        kept = self.epochs[skip:] or self.epochs
        return sum(n for _, n in kept) / sum(t for t, _ in kept)


def report(title: str, unit: str, bundle: float, plain: float, extra: dict) -> dict:
    """Print one suite's result and return it as a dict."""
    ratio = bundle / plain if plain else float("nan")
    lines = [
        f"== {title}",
        f"bundle workflow : {bundle:8.2f} {unit}",
        f"plain PyTorch   : {plain:8.2f} {unit}",
        f"ratio           : {ratio:8.3f} (bundle / plain)",
    ] + [f"{k:<16}: {v}" for k, v in extra.items()]
    print("\n".join(lines), file=sys.stdout, flush=True)
    return {"bundle": bundle, "plain": plain, "ratio": ratio, "unit": unit, **extra}
