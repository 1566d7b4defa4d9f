"""The GPU check (``python -m benchmarks gpu``): its dry run through the real command, every part measured or
recorded with the reason it was not, the budget that cuts parts, a failing part and the exit status."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu
from benchmarks.cli import build_parser
from benchmarks.cli import main as benchmark_main
from benchmarks.gpu_summary import aim_status
from tests.helpers import run_module

TOP_KEYS = ["check", "bundle_version", "mode", "started", "command", "budget_s", "wall_s", "environment", "aim"]
TOP_KEYS += ["parts", "failed", "cut"]
ENVIRONMENT = {"device", "torch", "cuda", "cudnn", "monai", "tensorrt", "python", "cpu_count", "bf16_supported"}
TRAINING = ["pretrain_resnet10", "pretrain_resnet18", "train_resnet10"]
COMPILED = ["pretrain_resnet10_compile", "train_resnet10_compile", "pretrain_resnet18_compile"]
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what the check records on a CPU-only machine")


def read_check(out: Path) -> dict:
    """``gpu_check.json`` with the schema every check writes: the same keys at the top and in every part's record,
    every part present in order, and a reason for every part that did not run."""
    results = json.loads((out / "gpu_check.json").read_text())
    assert list(results) == TOP_KEYS
    assert ENVIRONMENT <= set(results["environment"])
    assert list(results["parts"]) == list(gpu.NAMES)
    for name, record in results["parts"].items():
        assert tuple(record) == gpu.RECORD_KEYS, name
        assert record["status"] in gpu.STATUSES, name
        if record["status"] == "ok":
            assert record["reason"] is None and record["result"], name
            assert Path(record["log"]).is_file() and record["seconds"] > 0, name
        else:
            assert isinstance(record["reason"], str) and record["reason"], name
    assert results["failed"] == [n for n, r in results["parts"].items() if r["status"] == "failed"]
    assert results["cut"] == [n for n, r in results["parts"].items() if r["status"] == "cut"]
    summary = (out / "summary.txt").read_text()
    assert all(f"\n{name} " in summary for name in gpu.NAMES) and results["aim"]["text"] in summary
    return results


def check_training(record: dict, unit: str) -> None:
    result = record["result"]
    assert result["unit"] == unit and result["workflow"] > 0 and result["plain"] > 0
    assert math.isfinite(result["ratio"]) and result["ratio"] == pytest.approx(result["workflow"] / result["plain"])
    settings = result["report"]["settings"]
    assert settings["channels_last"] is True and settings["image_size"] == gpu.DRY_SIZES.image_size


@CPU_ONLY
@pytest.mark.slow  # four parts, each a process of its own (about 2 minutes on 2 busy cores)
def test_the_dry_check_runs_every_part_or_says_why_not(tmp_path):
    out = tmp_path / "check"
    proc = run_module("benchmarks", "gpu", "--dry", "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = read_check(out)
    parts = results["parts"]
    assert results["mode"] == "dry" and results["environment"]["device"] == "cpu"
    assert results["failed"] == [] and results["cut"] == []
    assert {n for n, r in parts.items() if r["status"] == "ok"} == {*TRAINING, "inference"}
    for name in TRAINING:
        check_training(parts[name], "views/s" if name.startswith("pretrain") else "images/s")
        assert parts[name]["result"]["report"]["settings"]["backbone"] == name.split("_")[-1]
        assert any(n.startswith("bf16 autocast: skipped") for n in parts[name]["notes"])
    assert parts["inference"]["result"]["plain"] > 0 and parts["inference"]["result"]["saliency"] > 0
    # what needs CUDA says so
    assert all(parts[n]["status"] == "skipped" and "CUDA" in parts[n]["reason"] for n in COMPILED)
    assert parts["ddp"]["status"] == "skipped" and "NCCL" in parts["ddp"]["reason"]
    assert parts["tensorrt"]["status"] == "skipped" and "needs a CUDA GPU" in parts["tensorrt"]["reason"]
    if not (gpu.tensorrt.OVERLAY).is_file():
        assert parts["tensorrt"]["reason"].startswith("configs/inference_trt.json missing")
    ran = [parts[n] for n in (*TRAINING, "inference")]
    assert all(str(r["peak_gpu_memory_mb"]).startswith("skipped:") for r in ran)
    assert results["aim"]["status"].startswith("not judged") and "pretrain_resnet10" in results["aim"]["measured"]
    assert "failed: none" in proc.stdout and "cut: none" in proc.stdout


@CPU_ONLY
def test_a_failed_part_is_recorded_and_the_check_goes_on(tmp_path, capsys):
    """Two parts, each in its process: fine-tuning on a folder without datalist.json fails, the inference part after
    it still runs, and the check ends with one message naming the failed part (status 1, as ``run_main`` exits)."""
    out, empty = tmp_path / "check", tmp_path / "empty"
    empty.mkdir()
    args = ["gpu", "--dry", "--out", str(out), "--parts", "train_resnet10,inference", "--dataset_dir", str(empty)]
    with pytest.raises(SystemExit, match=r"^1 part\(s\) failed: train_resnet10; see .*summary.txt$"):
        benchmark_main(args)
    results = read_check(out)
    parts = results["parts"]
    assert results["failed"] == ["train_resnet10"]
    reason = parts["train_resnet10"]["reason"]
    assert reason.startswith("UserError: --dataset_dir") and "no datalist.json" in reason
    assert parts["inference"]["status"] == "ok" and parts["inference"]["result"]["saliency_cost_ratio"] > 0
    assert (parts["pretrain_resnet10"]["status"], parts["pretrain_resnet10"]["reason"]) == (
        "skipped",
        "not among --parts",
    )
    assert (
        "failed: train_resnet10" in (out / "summary.txt").read_text()
        and "failed: train_resnet10" in capsys.readouterr().out
    )


def test_parts_beyond_the_budget_are_cut_before_they_start(tmp_path):
    out = tmp_path / "check"
    args = ["gpu", "--dry", "--out", str(out), "--parts", "pretrain_resnet10,inference", "--budget_s", "60"]
    results = benchmark_main(args)
    assert results["cut"] == ["pretrain_resnet10", "inference"] == read_check(out)["cut"]
    record = results["parts"]["inference"]
    assert re.fullmatch(
        rf"not started: \d+ s of the budget left, the part may take {gpu.DRY_PART_S} s", record["reason"]
    )
    assert record["seconds"] == 0.0 and not (out / "logs" / "inference.log").exists()
    assert (
        "rerun the cut parts: python -m benchmarks gpu --parts pretrain_resnet10,inference"
        in (out / "summary.txt").read_text()
    )


def test_a_part_running_past_its_limit_is_stopped_with_its_processes(tmp_path):
    """start_part ends the part's whole process group at the limit (a DataLoader worker, torchrun's worker)."""
    pid_file = tmp_path / "child.pid"
    child = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])"
    child += f"; open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)"
    start = time.monotonic()
    assert gpu.start_part([sys.executable, "-c", child], tmp_path / "part.log", limit=5) is None
    assert time.monotonic() - start < 60
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        status = Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if status == "Z":  # ended, not yet reaped by its (also ended) parent
            break
        time.sleep(0.2)
    else:
        assert not Path(f"/proc/{grandchild}").exists(), "the part's own child outlived the part"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_the_gpu_check_stops_with_one_message(tmp_path):
    with pytest.raises(SystemExit, match=r"needs a CUDA device.*--dry \(make gpu-check DRY=1\)"):
        benchmark_main(["gpu", "--out", str(tmp_path / "check")])
    assert not (tmp_path / "check").exists()


def test_a_part_name_is_checked_at_parsing():
    assert build_parser().parse_args(["gpu", "--parts", "tensorrt,ddp"]).parts == ["tensorrt", "ddp"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gpu", "--parts", "pretrain"])


def test_each_training_part_sets_its_speed_flags():
    """bf16 autocast and channels_last everywhere, torch.compile in the compiled parts only, at the dry sizes."""
    args = build_parser().parse_args(["gpu", "--dry"])
    for part in gpu.PARTS:
        if part.kind not in ("pretrain", "train"):
            continue
        flags = gpu.suite_flags(part, args)
        value = {flags[i]: flags[i + 1] for i in range(0, len(flags), 2)}
        assert value["--channels_last"] == "true" and value["--amp_dtype"] == "bfloat16", part.name
        assert value["--compile"] == str(part.compile).lower() and value["--backbone"] == part.backbone, part.name
        assert value["--image_size"] == "64" and value["--device"] == "cpu", part.name


def _measured(views: float, ratio: float) -> dict:
    return {"status": "ok", "result": {"workflow": views, "ratio": ratio}}


def test_the_aim_is_judged_on_simclr_resnet10():
    eager, compiled = "pretrain_resnet10", "pretrain_resnet10_compile"
    assert aim_status({eager: _measured(16000, 0.97)}, dry=False)["status"] == "met"
    assert aim_status({eager: _measured(16000, 0.90)}, dry=False)["status"] == "not met"  # the ratio counts too
    assert aim_status({eager: _measured(9000, 0.99)}, dry=False)["status"] == "not met"
    both = {eager: _measured(9000, 0.99), compiled: _measured(15500, 0.96)}
    assert aim_status(both, dry=False)["status"] == "met with torch.compile only"
    cut = {eager: {"status": "cut", "reason": "stopped at its time limit of 90 s"}}
    assert (
        aim_status(cut, dry=False)["status"] == "not measured: pretrain_resnet10 cut: stopped at its time limit of 90 s"
    )
    assert aim_status({eager: _measured(16000, 0.97)}, dry=True)["status"].startswith("not judged")


def test_the_ddp_part_runs_under_torchrun():
    """Its process is torchrun's, with one process on this machine; the other parts are this interpreter's."""
    args = build_parser().parse_args(["gpu", "--dry"])
    parts = {p.name: p for p in gpu.PARTS}
    command = gpu.part_command(parts["ddp"], args, Path("ddp.json"))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=1" in command
    assert command[command.index("--nproc_per_node=1") + 1 :][:5] == ["-m", "benchmarks", "gpu", "--part", "ddp"]
    assert gpu.part_command(parts["inference"], args, Path("i.json"))[:4] == [sys.executable, "-m", "benchmarks", "gpu"]
