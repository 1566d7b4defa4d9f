"""The benchmark harness: one timer, one workflow runner, plain-loop timing, peak memory and one report format.

Every suite measures two things in this process, on the same network or method, batch, precision (AMP only on
CUDA) and optimiser, and reports them with ``make_report``. The training suites compare a bundle workflow (run by
``run_workflow`` with an ``IterationTimer`` on ``train#trainer``) with a plain PyTorch loop (timed by
``time_loop`` with the same warm-up / iteration logic); ``compare_training`` runs the plain loop before and after
the workflow and averages the two runs, which evens out drift on a shared machine. It first measures the data
path alone (``measure_data_path``): the workflow's own train DataLoader and ``prepare_batch`` (which makes the
views on the device for ``views_on: device``) with no model, with one worker and with the configured workers, so
that one run gives the data path, the model step (the plain loop) and the whole workflow.
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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from bundle import workflow
from bundle.errors import fail
from bundle.settings import option
from bundle.values import as_bool, autocast_dtype, integer, output_folder

__all__ = [
    "ROOT",
    "CONFIGS",
    "REPORT_KEYS",
    "IterationTimer",
    "add_common_arguments",
    "add_data_arguments",
    "add_speed_arguments",
    "check_output_file",
    "choose_device",
    "compare_training",
    "config_value",
    "dataset_size_needed",
    "loader_with_workers",
    "make_report",
    "measure_data_path",
    "memory_note",
    "parse_ids",
    "peak_memory_mb",
    "print_report",
    "repeat_datalist",
    "reset_peak",
    "run_workflow",
    "settings",
    "speed_overrides",
    "SpeedUp",
    "sync",
    "time_data_path",
    "time_loop",
    "OptimiserStep",
    "training_report",
    "workflow_overrides",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
SPEED_IDS = ("channels_last", "compile", "amp_dtype")  # config ids the speed flags set, only when given
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


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--channels_last``, ``--compile``, ``--amp_dtype``: config ids set on both sides, only when given."""
    parser.add_argument(
        "--channels_last",
        type=option("channels_last"),
        default=None,
        help="true/false: channels_last memory format (config id channels_last; default: the config's)",
    )
    parser.add_argument(
        "--compile",
        type=option("compile"),
        default=None,
        help="true/false: torch.compile the network (config id compile; default: the config's)",
    )
    parser.add_argument(
        "--amp_dtype",
        type=option("amp_dtype"),
        default=None,
        help="bfloat16 | float16: the autocast dtype under AMP, i.e. on CUDA (config id amp_dtype; default: the config's)",
    )


def speed_overrides(args: argparse.Namespace, config: str) -> dict[str, Any]:
    """The speed ids given on the command line, as config overrides; the others are left to the config.

    A flag whose id ``configs/<config>`` does not have stops with one message: the workflow would ignore it while
    the plain loop applied it, and the ratio would compare two different things.
    """
    given = {k: getattr(args, k, None) for k in SPEED_IDS}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return {}
    text = (CONFIGS / config).read_text(encoding="utf-8")
    known = json.loads(text)
    missing = [k for k in given if k not in known]
    if missing:
        flags = ", ".join(f"--{k}" for k in missing)
        fail(f"{flags}: configs/{config} has no id {', '.join(missing)}; leave the flag out (the config decides)")
    out: dict[str, Any] = {}
    for k, v in given.items():
        out[k] = str(v).strip().lower() if k == "amp_dtype" else as_bool(v, k)
    return out


class SpeedUp:
    """What the speed ids do, for a plain loop: channels_last memory format, torch.compile, the autocast dtype.

    ``from_config`` reads the values the workflow runs with (the config's, or the flags'), so that both sides run
    alike; an id the config lacks keeps PyTorch's default (contiguous tensors, eager mode, float16 autocast).
    """

    def __init__(self, channels_last: bool = False, compile: bool = False, amp_dtype: Any = None) -> None:
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        self.amp_dtype = autocast_dtype(amp_dtype) if amp_dtype else None

    @classmethod
    def from_config(cls, config: str, overrides: Mapping[str, Any]) -> SpeedUp:
        """The speed ids of ``configs/<config>`` with ``overrides``, as the workflow resolves them."""
        known = json.loads((CONFIGS / config).read_text(encoding="utf-8"))
        ids = [k for k in SPEED_IDS if k in known]
        values = dict(zip(ids, parse_ids(config, overrides, *ids))) if ids else {}
        return cls(
            channels_last=as_bool(values.get("channels_last", False), "channels_last"),
            compile=as_bool(values.get("compile", False), "compile"),
            amp_dtype=values.get("amp_dtype"),
        )

    def as_settings(self) -> dict[str, Any]:
        """The speed settings of a report (only those that differ from PyTorch's defaults)."""
        out: dict[str, Any] = {}
        if self.channels_last:
            out["channels_last"] = True
        if self.compile:
            out["compile"] = True
        if self.amp_dtype is not None:
            out["amp_dtype"] = str(self.amp_dtype).replace("torch.", "")
        return out

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in the memory format (and compiled) as asked; returns the module to call."""
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return torch.compile(module) if self.compile else module

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch (N, C, H, W) in the memory format asked."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


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
    dtype = extra.pop("amp_dtype", None)  # a suite's SpeedUp.as_settings(): the autocast dtype belongs to precision
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": f"AMP {dtype or 'float16'}" if device.type == "cuda" else "fp32",
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


def loader_with_workers(loader: Any, num_workers: int) -> Any:
    """A copy of a DataLoader with ``num_workers`` workers and every other setting of ``loader``.

    Same dataset (and its cache), batch size, sampler kind, collate, pinning, drop_last, worker seeding and
    prefetching; ``persistent_workers`` is kept where workers exist.
    """
    from torch.utils.data import RandomSampler

    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "shuffle": isinstance(loader.sampler, RandomSampler),
        "num_workers": num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "timeout": loader.timeout,
    }
    if num_workers > 0:
        kwargs["persistent_workers"] = loader.persistent_workers or loader.num_workers == 0
        kwargs["prefetch_factor"] = loader.prefetch_factor or 2
        kwargs["multiprocessing_context"] = loader.multiprocessing_context
    return type(loader)(loader.dataset, **kwargs)


def time_data_path(
    loader: Iterable[Any],
    prepare: Callable[..., Any] | None,
    device: torch.device,
    warmup: int,
    iters: int,
    items: Callable[[Any], int],
) -> IterationTimer:
    """Iterate ``loader`` with no model: each batch through ``prepare(batch, device, non_blocking)`` (the trainer's
    ``prepare_batch``: to the device, views made there), timed like a workflow; epochs repeat as needed."""
    timer = IterationTimer(device, warmup, iters)
    timer.start()  # as the workflow's timer: worker start-up falls in the warm-up
    while not timer.finished:
        fetched = 0
        for batch in loader:
            fetched += 1
            n = items(batch)  # the raw batch, as the workflow's timer counts engine.state.batch
            if prepare is not None:
                prepare(batch, device, False)
            if timer.tick(n):
                break
        if not fetched:
            raise RuntimeError("the data loader gave no batch")
    return timer


def measure_data_path(
    config: str,
    overrides: Mapping[str, Any],
    items: Callable[[Any], int],
    device: torch.device,
    warmup: int,
    iters: int,
    loader_alone: bool = False,
) -> dict[str, Any]:
    """The data path of ``configs/<config>`` alone: ``train#dataloader`` + ``train#trainer#prepare_batch``, no model.

    Built from the config with the workflow's ``overrides`` (so the same dataset, cache, transforms, batch and
    loader settings), measured with one DataLoader worker (``per_worker``) and with the configured workers
    (``all_workers``), in the unit of ``items``. With ``loader_alone`` (``prepare_batch`` makes the views,
    ``views_on: device``) also ``loader_per_worker``: the loader alone with one worker, without the views, i.e.
    what one worker can supply to a device that makes the views itself.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / config))
    parser.update({"bundle_root": str(ROOT), **overrides})
    loader = parser.get_parsed_content("train#dataloader")
    prepare = parser.get_parsed_content("train#trainer#prepare_batch")
    configured = loader.num_workers
    result: dict[str, Any] = {"num_workers": configured}

    def measure(n: int, with_prepare: bool = True) -> float:
        copy = loader if n == configured else loader_with_workers(loader, n)
        try:
            return time_data_path(copy, prepare if with_prepare else None, device, warmup, iters, items).throughput()
        finally:
            del copy
            gc.collect()  # shut the copy's persistent workers down before the next measurement

    result["per_worker"] = measure(1)
    result["all_workers"] = result["per_worker"] if configured == 1 else measure(configured)
    if loader_alone:
        result["loader_per_worker"] = measure(1, with_prepare=False)
    return result  # the caller collects the loader (and its persistent workers) once this frame is gone


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
    return workflow.parsed(CONFIGS / config, overrides, *ids)


def config_value(config: str, overrides: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """The parsed value of the top-level id ``name`` of ``configs/<config>``, or ``default`` where it has none."""
    known = json.loads((CONFIGS / config).read_text(encoding="utf-8"))
    return parse_ids(config, overrides, name)[0] if name in known else default


def run_workflow(config: str, overrides: Mapping[str, Any], timer: IterationTimer) -> IterationTimer:
    """Run ``configs/<config>`` as MONAI's ``ConfigWorkflow`` until ``timer`` (on ``train#trainer``) stops it.

    The workflow is built from the config file with ``overrides``, initialised, run and finalised exactly as
    ``python -m monai.bundle run`` would (with the bundle's logging config); only the timer is added.
    """
    # the trainer parsed here is the same instance the run runs
    workflow.run(CONFIGS / config, overrides, lambda wf: timer.attach(wf.parser.get_parsed_content("train#trainer")))
    timer.check()
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
    details: dict[str, Any] = {}
    data_path = measured.get("data_path")
    if data_path:
        # the three parts of one run side by side: data alone, model step alone (plain), whole workflow (bundle)
        details["data_path"] = {k: round(float(v), 2) for k, v in data_path.items() if k != "num_workers"}
        details["data_path_note"] = (
            f"{unit} of the config's train DataLoader + prepare_batch with no model: per_worker with 1 worker, "
            f"all_workers with num_workers {data_path['num_workers']}"
            + ("; loader_per_worker: 1 worker, views not made" if "loader_per_worker" in data_path else "")
        )
        details["data_headroom"] = round(data_path["all_workers"] / measured["plain"], 2) if measured["plain"] else 0
    details["plain_runs"] = f"{before:.2f} before, {after:.2f} after the workflow (plain = their mean)"
    medians = measured.get("median_seconds")
    if medians and medians["bundle"]:
        details["median_iteration_s"] = {k: round(float(v), 3) for k, v in medians.items()}
        details["median_ratio"] = round(medians["plain"] / medians["bundle"], 3)
    details["memory"] = memory_note(device, workers=True)
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
        details,
    )


def _detail_text(value: Any) -> str:
    """One ``details`` entry as printed: a mapping as ``name value, ...`` (floats to two decimals)."""
    if not isinstance(value, Mapping):
        return str(value)
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())


def print_report(report: Mapping[str, Any], file: Any = None) -> None:
    """Print one report, the same way for every suite."""
    unit = report["unit"]
    setup = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    rows = [("settings", setup)]
    rows += [(side, f"{v:10.2f} {unit}") for side, v in report["throughput"].items()]
    rows.append((report["figure"], f"{report['value']:10.3f}  {report['meaning']}"))
    rows.append(("peak_memory_mb", ", ".join(f"{k} {v:.0f}" for k, v in report["peak_memory_mb"].items())))
    rows += [(k, _detail_text(v)) for k, v in report["details"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"== {report['suite']}: {report['title']}"] + [f"   {k:<{width}} : {v}" for k, v in rows]
    print("\n".join(lines), file=file or sys.stdout, flush=True)


def write_json(path: str | os.PathLike, results: Mapping[str, Any]) -> None:
    """Write ``{suite: report}`` to ``path`` (relative to the caller's working directory)."""
    from bundle.atomic import atomic_write_json

    atomic_write_json(dict(results), path)
