"""The benchmark harness: one timer, one workflow runner, plain-loop timing, peak memory and one report format.

Every suite measures two things in this process, on the same network or method, batch, precision (AMP only on
CUDA) and optimiser, and reports them with ``make_report``. The training suites compare a bundle workflow (run by
``run_workflow`` with an ``IterationTimer`` on ``train#trainer``) with a plain PyTorch loop (timed by
``time_loop`` with the same warm-up / iteration logic); ``compare_training`` runs the plain loop before and after
the workflow and averages the two runs, which evens out drift on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from bundle.errors import fail
from bundle.settings import integer, option, output_folder

__all__ = [
    "ROOT",
    "CONFIGS",
    "REPORT_KEYS",
    "IterationTimer",
    "add_common_arguments",
    "add_data_arguments",
    "check_output_file",
    "choose_device",
    "compare_training",
    "dataset_size_needed",
    "make_report",
    "memory_note",
    "parse_ids",
    "peak_memory_mb",
    "print_report",
    "repeat_datalist",
    "reset_peak",
    "run_workflow",
    "settings",
    "sync",
    "time_loop",
    "OptimiserStep",
    "training_report",
    "workflow_overrides",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
REPORT_KEYS = (
    "suite",
    "title",
    "unit",
    "throughput",
    "figure",
    "value",
    "meaning",
    "peak_memory_mb",
    "settings",
    "details",
)


def add_common_arguments(
    parser: argparse.ArgumentParser, *, warmup: int, iters: int, batch_size: int, image_size: int = 224
) -> None:
    """The flags every suite takes (each suite chooses its defaults); values out of range stop at parsing."""
    parser.add_argument(
        "--warmup", type=option(integer(0)), default=warmup, help=f"untimed iterations first (default {warmup})"
    )
    parser.add_argument("--iters", type=option(integer(1)), default=iters, help=f"timed iterations (default {iters})")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu"
    )
    parser.add_argument(
        "--threads", type=option(integer(0)), default=0, help="torch CPU threads (default 0: torch's default)"
    )
    parser.add_argument(
        "--image_size", type=option("image_size"), default=image_size, help=f"a multiple of 32 (default {image_size})"
    )
    parser.add_argument("--batch_size", type=option(integer(1)), default=batch_size, help=f"default {batch_size}")
    parser.add_argument(
        "--backbone", type=option("backbone"), default="resnet18", help="FlexibleUNet encoder (default resnet18)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def add_data_arguments(parser: argparse.ArgumentParser, num_workers: int = 2) -> None:
    """The flags of the suites that run a bundle workflow on a dataset."""
    parser.add_argument(
        "--dataset_dir",
        default=str(ROOT / "data" / "sample"),
        help="a folder with datalist.json; its images are repeated as needed (default: the bundle's data/sample)",
    )
    parser.add_argument(
        "--num_workers",
        type=option(integer(0)),
        default=num_workers,
        help=f"workflow DataLoader workers (default {num_workers})",
    )


def check_output_file(option: str, path: str | os.PathLike | None) -> None:
    """Stop before any measuring when ``path`` cannot be written: a folder, under a file, or read-only."""
    if not path:
        return
    target = Path(path).absolute()
    if target.is_dir():
        fail(f"{option} {path} is a folder; give a file name such as {Path(path) / 'benchmark.json'}")
    problem = output_folder(target.parent)
    if problem:
        fail(f"{option} {path}: its folder {target.parent} {problem}")


def choose_device(name: str | None) -> torch.device:
    """``cpu`` / ``cuda``, or cuda when available for ``None``."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: CUDA is not available on this machine (torch sees no GPU); use --device cpu")
    return torch.device(name)


def settings(args: argparse.Namespace, device: torch.device, **extra: Any) -> dict[str, Any]:
    """What a result was measured with (the ``settings`` of a report); sets the thread count from ``--threads``."""
    # the command line checks these at parsing; a Namespace built in code is checked here
    problems = [
        f"--{name} must be an integer >= {lo}, got {getattr(args, name)!r}"
        for name, lo in (("iters", 1), ("warmup", 0), ("threads", 0), ("batch_size", 1), ("image_size", 32))
        if not isinstance(getattr(args, name), int) or getattr(args, name) < lo
    ]
    if problems:
        fail("; ".join(problems))
    if args.threads:
        torch.set_num_threads(args.threads)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "AMP" if device.type == "cuda" else "fp32",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "iters": args.iters,
        **extra,
    }


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
        engine.add_event_handler(Events.GET_BATCH_STARTED(once=1), lambda _: self.start())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)

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
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer, self.device = optimizer, device
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def __call__(self, compute_loss: Callable[[], torch.Tensor]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
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


def memory_note(device: torch.device, workers: bool = False) -> str:
    """What ``peak_memory_mb`` measured on ``device`` (``workers``: the phases ran DataLoader workers)."""
    if device.type == "cuda":
        return "CUDA allocator peak (max_memory_allocated) per phase"
    return "process peak RSS (VmHWM) per phase" + ("; DataLoader workers not included" if workers else "")


def _read_datalist(dataset_dir: Path) -> dict[str, Any]:
    """``dataset_dir/datalist.json`` as a mapping, or one message naming --dataset_dir and what is wrong."""
    path = dataset_dir / "datalist.json"
    if not dataset_dir.is_dir():
        fail(f"--dataset_dir {dataset_dir} is not a folder; give a folder with datalist.json")
    if not path.is_file():
        fail(f"--dataset_dir {dataset_dir} has no datalist.json (scripts/prepare_dataset.py writes one)")
    try:
        source = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"--dataset_dir: {path} is not readable JSON ({e})", e)
    if not isinstance(source, dict):
        fail(f"--dataset_dir: {path} must hold a JSON object with a 'training' list, got {type(source).__name__}")
    return source


def repeat_datalist(dataset_dir: str | os.PathLike, n_images: int, out: str | os.PathLike) -> tuple[str, list[dict]]:
    """Write a datalist of at least ``n_images`` training entries (the dataset's images, repeated) under ``out``.

    Every section of ``dataset_dir/datalist.json`` trains, with absolute image and mask paths; repeats become
    separate patients, so two-image (MICLe) pairs keep their meaning. Returns the path and the entries.
    """
    dataset_dir = Path(dataset_dir).resolve()
    source = _read_datalist(dataset_dir)
    sections = [source[s] for s in ("training", "validation", "test") if isinstance(source.get(s), list)]
    entries = [e for section in sections for e in section if isinstance(e, dict)]
    if not entries:
        fail(f"--dataset_dir: {dataset_dir / 'datalist.json'} has no entries in training, validation or test")
    rows = []
    for k in range(-(-n_images // len(entries))):
        for e in entries:
            row = dict(e)
            for key in ("image", "mask"):
                if row.get(key):
                    row[key] = str(dataset_dir / row[key])
            if row.get("patient"):
                row["patient"] = f"{row['patient']}#{k}"
            rows.append(row)
    path = Path(out) / "bench_datalist.json"
    path.write_text(json.dumps({"training": rows, "validation": [], "test": []}))
    return str(path), rows


def dataset_size_needed(args: argparse.Namespace) -> int:
    """Images a workflow needs so that warm-up + timed iterations fit in one epoch, with one batch to spare."""
    return args.batch_size * (args.warmup + args.iters + 1)


def workflow_overrides(args: argparse.Namespace, device: torch.device, out: str, datalist: str) -> dict[str, Any]:
    """Config ids every training suite sets: sizes, device, precision, data, and no validation, probe or resume."""
    return {
        "bundle_root": str(ROOT),
        "dataset_dir": str(Path(args.dataset_dir).resolve()),
        "datalist": datalist,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "backbone": args.backbone,
        "device": device,
        "amp": device.type == "cuda",
        "max_epochs": 1,
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "resume": False,
        "ckpt_dir": f"{out}/models",
        "output_dir": f"{out}/eval",
    }


def parse_ids(config: str, overrides: Mapping[str, Any], *ids: str) -> list[Any]:
    """The parsed values of ``ids`` of ``configs/<config>`` with ``overrides`` (what the plain loops share)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / config))
    parser.update({"bundle_root": str(ROOT), **overrides})
    return [parser.get_parsed_content(i) for i in ids]


def run_workflow(config: str, overrides: Mapping[str, Any], timer: IterationTimer) -> IterationTimer:
    """Run ``configs/<config>`` as MONAI's ``ConfigWorkflow`` until ``timer`` (on ``train#trainer``) stops it.

    The workflow is built from the config file with ``overrides``, initialised, run and finalised exactly as
    ``python -m monai.bundle run`` would (with the bundle's logging config); only the timer is added.
    """
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(CONFIGS / config),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        **{"bundle_root": str(ROOT), **overrides},
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")  # the same instance wf.run() runs
    timer.attach(trainer)
    wf.run()
    wf.finalize()
    del wf, trainer
    gc.collect()  # the engine holds its DataLoader iterator in reference cycles: release its workers now
    timer.check()
    return timer


def compare_training(
    bundle: Callable[[], IterationTimer], plain: Callable[[], IterationTimer], device: torch.device
) -> dict[str, Any]:
    """Plain loop, bundle workflow, plain loop again: throughputs and the peak memory of each phase."""
    reset_peak(device)
    plain_before = plain().throughput()
    plain_peak = peak_memory_mb(device)
    reset_peak(device)
    bundle_throughput = bundle().throughput()
    bundle_peak = peak_memory_mb(device)
    plain_after = plain().throughput()
    return {
        "bundle": bundle_throughput,
        "plain": (plain_before + plain_after) / 2,
        "plain_runs": [plain_before, plain_after],
        "peak_memory_mb": {"bundle": bundle_peak, "plain": plain_peak},
    }


def make_report(
    suite: str,
    title: str,
    unit: str,
    throughput: Mapping[str, float],
    figure: str,
    value: float,
    meaning: str,
    peak_memory_mb: Mapping[str, float],
    settings: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One suite's result, with the same keys (``REPORT_KEYS``) for every suite.

    ``throughput`` holds each measured side (``unit``), ``figure`` names the headline number ``value`` and
    ``meaning`` says how to read it; ``details`` holds what only this suite has.
    """
    report = {
        "suite": suite,
        "title": title,
        "unit": unit,
        "throughput": {k: float(v) for k, v in throughput.items()},
        "figure": figure,
        "value": float(value),
        "meaning": meaning,
        "peak_memory_mb": {k: round(float(v), 1) for k, v in peak_memory_mb.items()},
        "settings": dict(settings),
        "details": dict(details or {}),
    }
    return report


def training_report(
    suite: str, title: str, unit: str, measured: Mapping[str, Any], settings: Mapping[str, Any], device: torch.device
) -> dict[str, Any]:
    """The report of a training suite: ``ratio`` = bundle / plain throughput (higher is better, 1.0 = no overhead)."""
    ratio = measured["bundle"] / measured["plain"] if measured["plain"] else float("nan")
    before, after = measured["plain_runs"]
    return make_report(
        suite,
        title,
        unit,
        {"bundle": measured["bundle"], "plain": measured["plain"]},
        "ratio",
        ratio,
        f"the bundle runs at {ratio:.3f} x the plain loop's throughput (bundle / plain; higher is better, "
        "1.0 = no overhead)",
        measured["peak_memory_mb"],
        settings,
        {
            "plain_runs": f"{before:.2f} before, {after:.2f} after the workflow (plain = their mean)",
            "memory": memory_note(device, workers=True),
        },
    )


def print_report(report: Mapping[str, Any], file: Any = None) -> None:
    """Print one report, the same way for every suite."""
    unit = report["unit"]
    setup = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    rows = [("settings", setup)]
    rows += [(side, f"{v:10.2f} {unit}") for side, v in report["throughput"].items()]
    rows.append((report["figure"], f"{report['value']:10.3f}  {report['meaning']}"))
    rows.append(("peak_memory_mb", ", ".join(f"{k} {v:.0f}" for k, v in report["peak_memory_mb"].items())))
    rows += [(k, str(v)) for k, v in report["details"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"== {report['suite']}: {report['title']}"] + [f"   {k:<{width}} : {v}" for k, v in rows]
    print("\n".join(lines), file=file or sys.stdout, flush=True)


def write_json(path: str | os.PathLike, results: Mapping[str, Any]) -> None:
    """Write ``{suite: report}`` to ``path`` (relative to the caller's working directory)."""
    from bundle.atomic import atomic_write_json

    atomic_write_json(dict(results), path)
