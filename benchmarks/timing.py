"""Timing: one timer for workflows and plain loops, the plain loop's optimiser step, and the comparison.

Every suite measures two things in this process, on the same network or method, batch, precision (AMP only on
CUDA) and optimiser. The training suites compare a bundle workflow (``benchmarks.workflows.run_workflow`` with an
``IterationTimer`` on ``train#trainer``) with a plain PyTorch loop (timed by ``time_loop`` with the same warm-up /
iteration logic); ``compare_training`` runs the plain loop before and after the workflow and averages the two
runs, which evens out drift on a shared machine, after measuring the data path alone (``benchmarks.datapath``),
so that one run gives the data path, the model step (the plain loop) and the whole workflow.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from .memory import peak_memory_mb, reset_peak

__all__ = ["sync", "IterationTimer", "OptimiserStep", "time_loop", "compare_training"]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class IterationTimer:
    """Times ``iters`` iterations after ``warmup`` untimed ones, synchronising CUDA at every stamp.

    As an ignite handler (``attach``) it stamps each completed iteration of the engine and stops the engine once
    the timed iterations are done; with ``warmup=0`` the clock starts as the first batch is fetched. Plain loops
    call ``start`` before their first step and ``tick`` after each (``time_loop``); a loop that measures single
    iterations (interleaved modes) calls ``start`` before each one. Each timed iteration is kept, so both the total
    throughput and the median iteration are available.
    """

    def __init__(
        self, device: torch.device, warmup: int, iters: int, items: Callable[[Any], int] | None = None
    ) -> None:
        if iters < 1 or warmup < 0:
            raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
        self.device, self.warmup, self.iters, self.items = device, warmup, iters, items
        self.done = 0
        self.timed: list[tuple[float, int]] = []  # (seconds, items) of each timed iteration
        self._last = 0.0
        self._started = False

    def start(self) -> None:
        """Start the clock of the next iteration."""
        sync(self.device)
        self._last = time.perf_counter()

    def tick(self, items: int) -> bool:
        """One iteration of ``items`` images (or views) done; returns whether all timed iterations are done."""
        sync(self.device)
        now = time.perf_counter()
        self.done += 1
        if self.done > self.warmup and len(self.timed) < self.iters:
            self.timed.append((now - self._last, items))
        self._last = now
        return self.finished

    @property
    def finished(self) -> bool:
        """Whether the warm-up and the timed iterations have all run."""
        return len(self.timed) >= self.iters

    def attach(self, engine: Any) -> None:
        """Stamp ``engine``'s iterations (``items`` counts a batch) and terminate it when done."""
        from ignite.engine import Events

        if self.items is None:
            raise ValueError("IterationTimer needs items(batch) -> int to time an engine")
        # not GET_BATCH_STARTED(once=1): ignite counts that event by iteration, which is still 0 at the first fetch
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._on_first_fetch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)

    def _on_first_fetch(self, engine: Any) -> None:
        if self.done == 0 and not self._started:
            self._started = True
            self.start()

    def _on_iteration(self, engine: Any) -> None:
        if self.tick(self.items(engine.state.batch)) and not engine.should_terminate:
            engine.terminate()

    def check(self) -> None:
        """Raise when fewer iterations ran than were asked for."""
        if not self.finished:
            raise RuntimeError(
                f"only {self.done} iterations ran, {self.warmup + self.iters} needed (warm-up + timed): "
                "the data loader ran out"
            )

    def throughput(self) -> float:
        """Items per second over the timed iterations."""
        self.check()
        return sum(n for _, n in self.timed) / sum(t for t, _ in self.timed)

    def median_seconds(self) -> float:
        """Seconds of the median timed iteration."""
        self.check()
        return statistics.median(t for t, _ in self.timed)


class OptimiserStep:
    """One step of a plain PyTorch loop as MONAI's SupervisedTrainer takes it: AMP (CUDA only), backward, step.

    ``step(compute_loss)`` returns the loss as a float: the workflow's StatsHandler reads the loss every step too.
    ``amp_dtype`` is the autocast dtype (default float16); loss scaling is only used with float16.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, device: torch.device, amp_dtype: torch.dtype | None = None
    ) -> None:
        self.optimizer, self.device = optimizer, device
        self.amp = device.type == "cuda"
        self.dtype = amp_dtype or torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.dtype == torch.float16)

    def __call__(self, compute_loss: Callable[[], torch.Tensor]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            loss = compute_loss()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())


def time_loop(
    step: Callable[[int], Any], device: torch.device, warmup: int, iters: int, items_per_step: int
) -> IterationTimer:
    """Run ``step(i)`` for warm-up + timed iterations (a plain PyTorch loop) and time it like a workflow."""
    timer = IterationTimer(device, warmup, iters)
    timer.start()
    for i in range(warmup + iters):
        step(i)
        timer.tick(items_per_step)
    return timer


def compare_training(
    bundle: Callable[[], IterationTimer],
    plain: Callable[[], IterationTimer],
    device: torch.device,
    data: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Data path (``data``, if given), plain loop, bundle workflow, plain loop again: throughputs, the median
    iteration of each side and the peak memory of the plain and bundle phases."""
    data_path = data() if data is not None else None
    gc.collect()  # the data path's loaders hold persistent workers in reference cycles: release them first
    reset_peak(device)
    before = plain()
    plain_peak = peak_memory_mb(device)
    reset_peak(device)
    workflow = bundle()
    bundle_peak = peak_memory_mb(device)
    after = plain()
    # the median iteration shrugs off a few iterations slowed by another process on a shared machine
    return {
        "bundle": workflow.throughput(),
        "plain": (before.throughput() + after.throughput()) / 2,
        "plain_runs": [before.throughput(), after.throughput()],
        "median_seconds": {
            "bundle": workflow.median_seconds(),
            "plain": statistics.median(t for t, _ in before.timed + after.timed),
        },
        "peak_memory_mb": {"bundle": bundle_peak, "plain": plain_peak},
        "data_path": data_path,
    }
