"""The GPU check: every GPU figure of the model card from one command of at most 8 minutes (``make gpu-check``).

    python -m benchmarks gpu [--out runs/gpu_check] [--parts a,b] [--budget_s 450] [--dataset_dir DIR] [--dry]

``PARTS``, in the order they run: SimCLR pretraining (``benchmarks.pretrain``) with the shipped resnet10 and with
resnet18, and multi-task fine-tuning (``benchmarks.train``), at 224 px with bf16 autocast and channels_last, each
against the plain loop in the same run, without and then with ``torch.compile``; inference with and without
Grad-CAM++ (``benchmarks.inference``, the shipped network); the TensorRT overlay against inference.json
(``benchmarks.tensorrt``); one ``torchrun`` process with NCCL (``benchmarks.ddp``).

Each part runs in a process of its own, so that a CUDA error, a hung compiler or an engine build cannot take the
others down and each part has its own allocator peak. A part starts only while the budget (``--budget_s``) has
its own time limit left, and is stopped at that limit: a part not started or stopped is recorded as ``cut``.
``gpu_check.json`` (rewritten after every part) holds each part's figures, or its ``status`` (ok, failed,
skipped, cut) and the reason; ``summary.txt`` (``benchmarks.gpu_summary``) says it in a few lines, with the aim;
``logs/<part>.log`` is each part's output, ``work/`` what the TensorRT and torchrun parts wrote. The exit status
is 1 when a part failed.

``--dry`` runs the same parts the same way on the CPU at toy sizes (64 px, batch 2, one timed iteration), to check
the check before a GPU is spent on it: what needs CUDA (torch.compile, NCCL, TensorRT, bf16 autocast, GPU memory)
is recorded as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import monai
import torch

from bundle import workflow
from bundle.atomic import atomic_write, atomic_write_json
from bundle.checkpoints import read_recipe
from bundle.errors import fail
from bundle.settings import option
from bundle.values import integer, output_folder

from . import ddp, inference, pretrain, tensorrt, train
from .gpu_summary import aim_status, summary_text
from .report import print_report

__all__ = ["PARTS", "Part", "Sizes", "GPU_SIZES", "DRY_SIZES", "add_arguments", "run"]

STATUSES = ("ok", "failed", "skipped", "cut")
RECORD_KEYS = ("what", "status", "reason", "seconds", "time_limit_s", "peak_gpu_memory_mb", "result", "notes", "log")
SUITES = {"pretrain": pretrain, "train": train, "inference": inference}
SHIPPED = workflow.ROOT / "models" / "model.pt"


@dataclass(frozen=True)
class Part:
    """One measurement of the check; ``budget_s`` is its time limit on a GPU (the dry run gives every part
    ``DRY_PART_S``)."""

    name: str
    what: str
    kind: str  # pretrain | train | inference | tensorrt | ddp
    budget_s: int
    backbone: str = "resnet10"
    compile: bool = False


_BF16 = "224 px, bf16 autocast, channels_last"
PARTS = (
    Part("pretrain_resnet10", f"SimCLR (pretrain_contrastive.json), resnet10, {_BF16}", "pretrain", 90),
    Part("pretrain_resnet18", f"SimCLR (pretrain_contrastive.json), resnet18, {_BF16}", "pretrain", 90, "resnet18"),
    Part("train_resnet10", f"multi-task fine-tuning (train.json), resnet10, {_BF16}", "train", 90),
    Part("inference", "inference.json's network and weights, without and with Grad-CAM++", "inference", 45),
    Part("ddp", "torchrun --nproc_per_node=1, NCCL: multi_gpu_train.json, one epoch", "ddp", 90),
    Part("tensorrt", "inference_trt.json against inference.json: speed-up, output difference", "tensorrt", 180),
    Part("pretrain_resnet10_compile", "pretrain_resnet10 with torch.compile", "pretrain", 150, compile=True),
    Part("train_resnet10_compile", "train_resnet10 with torch.compile", "train", 150, compile=True),
    Part("pretrain_resnet18_compile", "pretrain_resnet18 with torch.compile", "pretrain", 150, "resnet18", True),
)
NAMES = tuple(p.name for p in PARTS)
GPU_BUDGET_S = 450  # 7.5 minutes of parts, so that the whole check ends within 8
DRY_PART_S, DRY_BUDGET_S = 900, 3600


@dataclass(frozen=True)
class Sizes:
    """Sizes and iteration counts of the parts (warm-up + timed iterations, each a batch)."""

    image_size: int
    pretrain_batch: int
    train_batch: int
    inference_batch: int
    warmup: int
    iters: int
    compile_iters: int  # compiled parts: the first (warm-up) iteration compiles
    train_iters: int  # fine-tuning's random transforms feed ~100 images/s per worker: fewer iterations
    trt_batch: int
    trt_images: int  # images of data/sample both inference runs predict
    ddp_batch: int


GPU_SIZES = Sizes(224, 256, 64, 64, 3, 20, 10, 10, 32, 64, 16)
DRY_SIZES = Sizes(64, 2, 2, 2, 0, 1, 1, 1, 2, 2, 4)


def _parts(text: str) -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"give part names among {', '.join(NAMES)}, got {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The check's flags (``--part`` and ``--part_json`` are the way it starts each part's process)."""
    parser.add_argument("--out", default="runs/gpu_check", help="folder of gpu_check.json, summary.txt and logs/")
    parser.add_argument("--dry", action="store_true", help="on the CPU at toy sizes: check the check")
    parser.add_argument("--parts", type=_parts, default=list(NAMES), help=f"comma-separated, among {','.join(NAMES)}")
    parser.add_argument(
        "--budget_s",
        type=option(integer(1)),
        default=None,
        help=f"seconds for all parts (default {GPU_BUDGET_S}; dry {DRY_BUDGET_S})",
    )
    parser.add_argument(
        "--dataset_dir",
        default=str(workflow.ROOT / "data" / "sample"),
        help="a folder with datalist.json for the training parts (default: the bundle's data/sample)",
    )
    parser.add_argument(
        "--num_workers",
        type=option(integer(0)),
        default=None,
        help="DataLoader workers (default: up to 8, half the CPU cores; dry 1)",
    )
    parser.add_argument("--part", choices=NAMES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--part_json", default=None, help=argparse.SUPPRESS)


def sizes(args: argparse.Namespace) -> Sizes:
    return DRY_SIZES if args.dry else GPU_SIZES


def workers(args: argparse.Namespace) -> int:
    if args.num_workers is not None:
        return args.num_workers
    return 1 if args.dry else max(1, min(8, (os.cpu_count() or 2) // 2))


def suite_flags(part: Part, args: argparse.Namespace) -> list[str]:
    """The command-line flags of ``part``'s suite (``benchmarks.pretrain``, ``train`` or ``inference``)."""
    s = sizes(args)
    if part.kind == "inference":
        recipe = read_recipe(str(SHIPPED))
        flags = ["--ckpt", str(SHIPPED), "--backbone", recipe["backbone"]]
        flags += ["--num_classes", str(len(recipe["class_names"])), "--batch_size", str(s.inference_batch)]
        flags += ["--image_size", str(s.image_size if args.dry else recipe["image_size"])]
        flags += ["--iters", str(s.iters)]
    else:
        batch = s.pretrain_batch if part.kind == "pretrain" else s.train_batch
        iters = s.compile_iters if part.compile else s.train_iters if part.kind == "train" else s.iters
        flags = ["--backbone", part.backbone, "--batch_size", str(batch), "--image_size", str(s.image_size)]
        flags += ["--iters", str(iters), "--compile", str(part.compile).lower()]
        flags += ["--dataset_dir", args.dataset_dir, "--num_workers", str(workers(args))]
    dtype = "bfloat16" if args.dry or torch.cuda.is_bf16_supported() else "float16"
    return (
        flags
        + ["--warmup", str(s.warmup), "--channels_last", "true", "--amp_dtype", dtype]
        + (["--device", "cpu"] if args.dry else ["--device", "cuda"])
    )


def skip_reason(part: Part, args: argparse.Namespace) -> str | None:
    """Why ``part`` does not run in this check (None: it runs)."""
    if part.name not in args.parts:
        return "not among --parts"
    if args.dry and part.compile:
        return "torch.compile needs CUDA: PyTorch's CPU compiler cannot build this network's backward"
    if args.dry and part.kind == "ddp":
        return "the NCCL backend needs CUDA (the test suite runs the multi-GPU overlays with gloo on the CPU)"
    if part.kind == "tensorrt":
        reasons = tensorrt.blockers()
        if args.dry and not any("needs a CUDA GPU" in r for r in reasons):
            reasons.append("TensorRT needs CUDA and the dry run stays on the CPU")
        return "; ".join(reasons) or None
    return None


# ---- a part's process -----------------------------------------------------------------------------------------


def _suite_result(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a suite's report (``benchmarks.report``), and the report itself."""
    rate = report["throughput"]
    if report["suite"] == "inference":
        head = {"plain": rate["plain"], "saliency": rate["saliency"], "saliency_cost_ratio": report["value"]}
    else:
        median = report["details"].get("median_ratio")
        head = {"workflow": rate["bundle"], "plain": rate["plain"], "ratio": report["value"], "median_ratio": median}
    return {"unit": report["unit"], **head, "report": report}


def measure_part(part: Part, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Run ``part`` in this process; returns its result and its peak memory in MiB (``benchmarks.memory``)."""
    if part.kind in SUITES:
        module = SUITES[part.kind]
        parser = argparse.ArgumentParser(prog=f"python -m benchmarks {part.kind}")
        module.add_arguments(parser)
        report = module.run(parser.parse_args(suite_flags(part, args)))
        print_report(report)
        return _suite_result(report), max(report["peak_memory_mb"].values())
    s = sizes(args)
    work = Path(args.out).absolute() / "work" / part.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if part.kind == "tensorrt":
        limit = DRY_PART_S if args.dry else part.budget_s
        return tensorrt.measure(work, s.trt_batch, s.warmup, s.iters, s.trt_images, timeout=limit)
    return ddp.run(work, args.dataset_dir, s.image_size, s.ddp_batch, workers(args))


def part_notes(part: Part, args: argparse.Namespace) -> list[str]:
    """What this run of ``part`` left out, and why."""
    if not args.dry:
        return []
    if part.kind not in SUITES:
        return ["peak GPU memory: skipped on the CPU"]
    return [
        "peak GPU memory: skipped on the CPU (the report's peak_memory_mb is the process's peak RSS)",
        "bf16 autocast: skipped on the CPU, where the benchmarks run fp32 (AMP is CUDA-only)",
    ]


def run_part(args: argparse.Namespace) -> None:
    """A part's process: measure ``--part`` and write its record to ``--part_json`` (rank 0 under torchrun)."""
    part = next(p for p in PARTS if p.name == args.part)
    start = time.perf_counter()
    record: dict[str, Any] = {"status": "ok", "reason": None, "result": None, "notes": part_notes(part, args)}
    try:
        result, peak = measure_part(part, args)
        gpu = not args.dry and torch.cuda.is_available()
        record.update(result=result, peak_gpu_memory_mb=round(peak, 1) if gpu else "skipped: no GPU in a dry run")
    except (Exception, SystemExit) as e:  # a user error (SystemExit) is a failed part too
        traceback.print_exc()
        record.update(status="failed", reason=f"{type(e).__name__}: {e}")
    record["seconds"] = round(time.perf_counter() - start, 1)
    if os.environ.get("RANK", "0") == "0" and args.part_json:
        atomic_write_json(record, args.part_json)


# ---- the check ------------------------------------------------------------------------------------------------


def part_command(part: Part, args: argparse.Namespace, part_json: Path) -> list[str]:
    """The command of ``part``'s process: this module with ``--part``, under torchrun for ``ddp``."""
    launcher = list(ddp.LAUNCHER) if part.kind == "ddp" else [sys.executable]
    argv = launcher + ["-m", "benchmarks", "gpu", "--part", part.name, "--part_json", str(part_json)]
    argv += ["--out", str(Path(args.out).absolute()), "--dataset_dir", str(Path(args.dataset_dir).absolute())]
    return argv + ["--num_workers", str(workers(args))] + (["--dry"] if args.dry else [])


def _stop(proc: subprocess.Popen) -> None:
    """End a part's process group: SIGTERM (torchrun passes it on to its worker), SIGKILL 15 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(f"the GPU check was stopped by signal {signum}; the parts it finished are in --out")


def start_part(argv: list[str], log: Path, limit: float) -> int | None:
    """Run a part's process from the bundle root, its output into ``log``, for at most ``limit`` s; returns its exit
    status, or None when it was stopped at the limit."""
    # the bundle is imported from this checkout, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(workflow.ROOT), os.environ.get("PYTHONPATH")])))
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            argv, cwd=workflow.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return None
        except BaseException:  # Ctrl-C or SIGTERM (``_terminated``) reach this process only: the part goes too
            _stop(proc)
            raise


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log.is_file() else []
    return " | ".join(text[-lines:]) or "no output"


def run_part_process(part: Part, args: argparse.Namespace, limit: int) -> dict[str, Any]:
    """``part`` in its own process: its record as the process wrote it, or why there is none."""
    out = Path(args.out)
    part_json, log = out / "parts" / f"{part.name}.json", out / "logs" / f"{part.name}.log"
    part_json.unlink(missing_ok=True)
    print(f"== {part.name}: {part.what} (at most {limit} s; log {log})", flush=True)
    start = time.perf_counter()
    status = start_part(part_command(part, args, part_json), log, limit)
    seconds = round(time.perf_counter() - start, 1)
    record = {"log": str(log), "seconds": seconds}
    if status is None:
        return {**record, "status": "cut", "reason": f"stopped at its time limit of {limit} s"}
    if not part_json.is_file():
        return {**record, "status": "failed", "reason": f"exited with status {status} and no result: {_tail(log)}"}
    written = json.loads(part_json.read_text(encoding="utf-8"))
    if status and written["status"] == "ok":  # e.g. torchrun's own shutdown failed after the run
        written.update(status="failed", reason=f"measured, but exited with status {status}: {_tail(log)}")
    return {**written, **record}


def one_part(part: Part, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """The record of ``part``: measured, or skipped or cut with the reason; every record has ``RECORD_KEYS``."""
    limit = DRY_PART_S if args.dry else part.budget_s
    record = dict.fromkeys(RECORD_KEYS)
    record.update(what=part.what, time_limit_s=limit, seconds=0.0, notes=[])
    reason = skip_reason(part, args)
    left = deadline - time.monotonic()
    if reason:
        record.update(status="skipped", reason=reason)
    elif left < limit:
        record.update(status="cut", reason=f"not started: {left:.0f} s of the budget left, the part may take {limit} s")
    else:
        record.update(run_part_process(part, args, limit))
    print(f"   {part.name}: {record['status']}" + (f": {record['reason']}" if record["reason"] else ""), flush=True)
    return record


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """The machine and the versions the figures were measured with."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "monai": monai.__version__,
        "tensorrt": _installed("tensorrt"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def _version() -> str:
    return json.loads((workflow.CONFIGS / "metadata.json").read_text(encoding="utf-8"))["version"]


def write_results(results: dict[str, Any], out: Path) -> None:
    """``gpu_check.json`` and ``summary.txt`` in ``out``, with the aim and the lists of failed and cut parts."""
    parts = results["parts"]
    results["aim"] = aim_status(parts, results["mode"] == "dry")
    results["failed"] = [n for n, r in parts.items() if r["status"] == "failed"]
    results["cut"] = [n for n, r in parts.items() if r["status"] == "cut"]
    atomic_write_json(results, out / "gpu_check.json")
    with atomic_write(out / "summary.txt", mode="w", what="the summary") as f:
        f.write(summary_text(results))


def _command(args: argparse.Namespace, budget: int) -> str:
    """The command that repeats this check."""
    words = ["python", "-m", "benchmarks", "gpu", "--out", args.out, "--parts", ",".join(args.parts)]
    words += ["--budget_s", str(budget), "--dataset_dir", args.dataset_dir, "--num_workers", str(workers(args))]
    return shlex.join(words + (["--dry"] if args.dry else []))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every part, each in its own process, within the budget; writes and returns the results (``--part``: one
    part in this process). Stops with one message when a part failed, after writing everything."""
    if args.part:
        run_part(args)
        return {}
    if not args.dry and not torch.cuda.is_available():
        fail("the GPU check needs a CUDA device and torch sees none; --dry (make gpu-check DRY=1) checks it on the CPU")
    out = Path(args.out)
    problem = output_folder(out.absolute())
    if problem:
        fail(f"--out {args.out} {problem}")
    for folder in ("logs", "parts"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or (DRY_BUDGET_S if args.dry else GPU_BUDGET_S)
    started = time.monotonic()
    results: dict[str, Any] = {
        "check": "gpu_check",
        "bundle_version": _version(),
        "mode": "dry" if args.dry else "gpu",
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(args, budget),
        "budget_s": budget,
        "wall_s": 0.0,
        "environment": environment(),
        "aim": None,
        "parts": {},
    }
    previous = signal.signal(signal.SIGTERM, _terminated)  # a `timeout` around the check ends the running part too
    try:
        for part in PARTS:
            results["parts"][part.name] = one_part(part, args, started + budget)
            results["wall_s"] = round(time.monotonic() - started, 1)
            write_results(results, out)  # after every part: a check stopped half-way keeps what it measured
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n" + summary_text(results), flush=True)
    if results["failed"]:
        fail(f"{len(results['failed'])} part(s) failed: {', '.join(results['failed'])}; see {out / 'summary.txt'}")
    return results
