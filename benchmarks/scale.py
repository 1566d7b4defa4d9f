"""Scale: a 100,000-entry datalist through configs/train.json: the entry check, the time to the first training
iteration and the peak memory against what ``cache_dtype`` promises.

The datalist repeats the images of ``--dataset_dir`` (with their masks, labels and patients) as hard links under
``--work`` (symbolic links where hard links cannot be made), so 100,000 entries cost 100,000 directory entries and
no image data: every entry is a file of its own path, decoded by a cold check like any other. Repeats keep their
source's patient, so a patient's copies stay in one split (no leakage warning).

Measured, in this order:

* the entry check (``prepare_splits``: load, decode every file, split, leakage check): cold with the decode in
  threads and in processes (one per core each, whatever ``bundle.data.fingerprints`` would choose here), cold as
  it chooses, and warm (the fingerprints recorded under ``cache_dir``, nothing decoded);
* per ``--caches`` kind, in a fresh process: the time from launching configs/train.json (224 px, ``max_epochs``
  1; validation and test split off as the config does) to its first and its ``--iters``-th training iteration,
  after which the run stops; the check inside is warm (same ``cache_dir``). The process's peak RSS (VmHWM; DataLoader
  workers not included) is compared with the images the memory cache keeps: (training + validation images) x
  ``image_size``\\ :sup:`2` bytes with uint8, the same again for each mask.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bundle import workflow
from bundle.data import fingerprints
from bundle.errors import fail
from bundle.settings import option
from bundle.values import integer

from .memory import status_kb
from .options import add_common_arguments, add_data_arguments, settings
from .report import make_report
from .workflows import _read_datalist

CONFIG = "train"
RESULT = "SCALE_RESULT "  # the line a child prints its measurements on
CACHES = ("memory", "disk", "none")


def _caches(text: str) -> list[str]:
    """``memory,disk`` -> ["memory", "disk"] (each a ``cache`` kind)."""
    values = [option("cache")(part.strip().lower()) for part in str(text).split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"give one or more of {', '.join(CACHES)}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's flags (``--warmup`` is taken and unused; ``--iters``: iterations before the run stops)."""
    add_common_arguments(parser, warmup=0, iters=3, batch_size=16)
    add_data_arguments(parser, num_workers=2)
    parser.add_argument("--entries", type=option(integer(100)), default=100_000, help="datalist size (default 100000)")
    parser.add_argument(
        "--caches", type=_caches, default=["memory", "disk"], help="cache kinds to start training with (memory,disk)"
    )
    parser.add_argument("--work", default=None, help="folder for the links, caches and runs (default: a temporary one)")
    parser.add_argument(
        "--time_limit", type=option(integer(60)), default=900, help="seconds a training start may take (default 900)"
    )
    parser.add_argument(
        "--skip_comparison",
        action="store_true",
        help="leave out the cold checks forced to threads and to processes (a few minutes)",
    )


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a symbolic link costs no data either
        os.symlink(source, target)


def build_datalist(dataset_dir: str | os.PathLike, entries: int, work: Path) -> tuple[Path, list[dict]]:
    """``work/datalist.json``: ``entries`` training entries repeating ``dataset_dir``'s, each a link of its own."""
    dataset_dir = Path(dataset_dir).resolve()
    source = _read_datalist(dataset_dir)
    rows = [e for s in ("training", "validation", "test") for e in source.get(s) or [] if isinstance(e, dict)]
    rows = [e for e in rows if isinstance(e.get("image"), str)]
    if not rows:
        fail(f"--dataset_dir: {dataset_dir / 'datalist.json'} has no entries with an image")
    (work / "images").mkdir(parents=True, exist_ok=True)
    (work / "masks").mkdir(exist_ok=True)
    out = []
    for i in range(entries):
        j = i % len(rows)
        row = {k: rows[j][k] for k in ("label", "patient") if k in rows[j]}
        row.setdefault("patient", f"source{j}")  # a picture's copies stay together, whatever the source says
        for key, folder in (("image", "images"), ("mask", "masks")):
            if isinstance(rows[j].get(key), str):
                src = dataset_dir / rows[j][key]
                target = work / folder / f"{i:06d}{''.join(src.suffixes)}"
                if not target.exists():
                    _link(src, target)
                row[key] = f"{folder}/{target.name}"
        out.append(row)
    path = work / "datalist.json"
    path.write_text(json.dumps({"training": out}))
    return path, out


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the decoding workers), user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_check(datalist: Path, work: Path, cache_dir: Path, class_names: list[str]) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one ``prepare_splits`` with the fingerprints under ``cache_dir``; and the splits.

    The CPU seconds do not depend on what else the machine runs: divided by the cores, they are the wall time
    the check needs on an idle machine.
    """
    from bundle.data.datalist import prepare_splits

    start, cpu = time.perf_counter(), cpu_seconds()
    splits = prepare_splits(datalist, work, class_names, cache_dir=cache_dir)
    return time.perf_counter() - start, cpu_seconds() - cpu, splits


def first_iterations(overrides: dict[str, Any], iters: int, launched: float) -> dict[str, Any]:
    """Run configs/train.json with ``overrides`` in this process until its ``iters``-th iteration; the wall times
    (from ``launched``, a ``time.time()``) of the splits, the datasets built and the first and last iteration."""
    from ignite.engine import Events

    marks: dict[str, float] = {"imported": time.time() - launched}

    def attach(wf: Any) -> None:
        wf.parser.get_parsed_content("splits")
        marks["splits"] = time.time() - launched
        trainer = wf.parser.get_parsed_content("train#trainer")  # builds (fills) the training and validation caches
        marks["datasets"] = time.time() - launched
        marks["cached_rss_mb"] = (status_kb("VmRSS") or 0) / 1024

        @trainer.on(Events.ITERATION_COMPLETED)
        def _stop(engine: Any) -> None:
            marks.setdefault("first_iteration", time.time() - launched)
            if engine.state.iteration >= iters:
                marks["last_iteration"] = time.time() - launched
                engine.terminate()

    workflow.run(CONFIG, overrides, attach, logging_file=str(workflow.CONFIGS / "logging.conf"))
    marks["peak_rss_mb"] = (status_kb("VmHWM") or 0) / 1024
    return marks


def _child(overrides: dict[str, Any], iters: int, time_limit: int, log: Path) -> dict[str, Any] | None:
    """``first_iterations`` in a fresh interpreter (its output in ``log``); None when it ran past ``time_limit``."""
    code = (
        "import json, sys, time; from benchmarks.scale import RESULT, first_iterations; "
        f"print(RESULT + json.dumps(first_iterations(json.loads(sys.argv[1]), {iters}, float(sys.argv[2]))), "
        "flush=True)"
    )
    root = str(workflow.ROOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, "-c", code, json.dumps(overrides), repr(time.time())]
    with open(log, "w") as out:
        try:
            proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=out, text=True, timeout=time_limit)
        except subprocess.TimeoutExpired:
            return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        fail(f"scale benchmark: the training start failed (its output: {log}):\n{log.read_text()[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def _promised_mb(splits: dict, image_size: int) -> float:
    """MiB the memory cache keeps with uint8: one byte per pixel per image, and per mask (training + validation)."""
    cached = splits["training"] + splits["validation"]
    return (len(cached) + sum(1 for e in cached if e.get("mask"))) * image_size**2 / 2**20


def _forced(name: str, value: int, datalist: Path, work: Path, cache: str, names: list[str]) -> tuple[float, float]:
    """``time_check`` with ``bundle.data.fingerprints.<name>`` set to ``value`` (to force threads or processes)."""
    before = getattr(fingerprints, name)
    setattr(fingerprints, name, value)
    try:
        return time_check(datalist, work, work / cache, names)[:2]
    finally:
        setattr(fingerprints, name, before)


def _checks(args: argparse.Namespace, datalist: Path, work: Path) -> tuple[dict[str, tuple[float, float]], dict]:
    """The entry check's (wall, CPU) seconds: cold in threads and in processes (unless skipped), cold, warm."""
    class_names = workflow.parsed(CONFIG, {}, "class_names")[0]
    from monai.data import PILReader  # noqa: F401  (imported before timing: a config run has it already)

    seconds = {}
    if not args.skip_comparison:
        seconds["check cold, threads"] = _forced("PROCESSES_FROM", sys.maxsize, datalist, work, "cache_t", class_names)
        seconds["check cold, processes"] = _forced("PROCESS_CORES", 2, datalist, work, "cache_p", class_names)
    seconds["check cold"] = time_check(datalist, work, work / "cache", class_names)[:2]
    wall, cpu, splits = time_check(datalist, work, work / "cache", class_names)
    seconds["check warm"] = (wall, cpu)
    for name, (wall, cpu) in seconds.items():
        print(f"{name}: {wall:.1f} s, {cpu:.1f} CPU s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return seconds, splits


def _starts(args: argparse.Namespace, datalist: Path, work: Path) -> dict[str, dict[str, Any] | None]:
    """Per cache kind, the marks of a training start (None: past ``--time_limit``)."""
    runs = {}
    for kind in args.caches:
        overrides = {
            "dataset_dir": str(work),
            "datalist": str(datalist),
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "backbone": args.backbone,
            "device": args.device or "cpu",
            "max_epochs": 1,
            "resume": False,
            "cache": kind,
            "cache_dir": str(work / "cache"),
            "show_progress": False,
            "ckpt_dir": str(work / f"run_{kind}" / "models"),
            "output_dir": str(work / f"run_{kind}" / "eval"),
        }
        print(f"starting training with cache {kind} ...", flush=True)
        runs[kind] = _child(overrides, args.iters, args.time_limit, work / f"run_{kind}.log")
    return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the datalist, time the checks and the training starts; return the report."""
    import torch

    setup = settings(args, torch.device("cpu"), entries=args.entries, caches=list(args.caches), cache_dtype="uint8")
    work = Path(args.work or tempfile.mkdtemp(prefix="cxr_scale_")).resolve()
    try:
        start = time.perf_counter()
        datalist, _ = build_datalist(args.dataset_dir, args.entries, work)
        print(f"{args.entries} entries linked under {work} in {time.perf_counter() - start:.1f} s", flush=True)
        seconds, splits = _checks(args, datalist, work)
        runs = _starts(args, datalist, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return _report(args, setup, seconds, splits, runs)


def _report(args: argparse.Namespace, setup: dict, seconds: dict, splits: dict, runs: dict) -> dict[str, Any]:
    promised = _promised_mb(splits, args.image_size)
    throughput = {name: wall for name, (wall, _) in seconds.items()}
    details = {
        "entry check CPU": ", ".join(f"{name} {cpu:.1f} CPU s" for name, (_, cpu) in seconds.items()),
        "load average": f"{os.getloadavg()[0]:.1f} (1 min, at the end)",
        "splits": ", ".join(f"{k} {len(v)}" for k, v in splits.items()),
        "memory cache promise": f"{promised:.0f} MiB (uint8: {args.image_size}^2 bytes per image and per mask)",
        "cores": fingerprints.available_cores(),
    }
    for kind, marks in runs.items():
        if marks is None:
            details[f"cache {kind}"] = f"no first iteration within --time_limit {args.time_limit} s"
            continue
        throughput[f"first iteration, cache {kind}"] = marks["first_iteration"]
        details[f"cache {kind}"] = (
            f"imports {marks['imported']:.0f} s, splits at {marks['splits']:.0f} s, datasets built at "
            f"{marks['datasets']:.0f} s, first iteration at {marks['first_iteration']:.0f} s, iteration "
            f"{args.iters} at {marks['last_iteration']:.0f} s; RSS after the datasets "
            f"{marks['cached_rss_mb']:.0f} MiB, peak {marks['peak_rss_mb']:.0f} MiB"
        )
    headline = next((k for k in throughput if k.startswith("first iteration")), "check warm")
    return make_report(
        "scale",
        f"{args.entries}-entry datalist (links to {args.dataset_dir}), configs/train.json at {args.image_size} px",
        "s",
        throughput,
        "seconds",
        throughput[headline],
        f"{headline}: {throughput[headline]:.0f} s from launch; lower is better",
        {kind: marks["peak_rss_mb"] for kind, marks in runs.items() if marks},
        setup,
        details,
    )
