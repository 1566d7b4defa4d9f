"""The multi-GPU overlays run for real: ``torchrun`` with two CPU processes (gloo) on the embedded sample.

Pretraining with its overlay writes one set of files and its weights fine-tune under DDP; a DDP fine-tuning run
killed mid-way resumes where it stopped; evaluation under DDP writes the same metrics as one process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, launch, start

pytestmark = pytest.mark.slow  # several processes per run, one of them killed mid-run

CONFIGS = ROOT / "configs"
QUICK = ["--image_size", "64", "--batch_size", "8", "--num_workers", "0", "--show_progress", "false"]


def _configs(*names: str) -> str:
    return "[" + ",".join(f"'{CONFIGS / (n + '.json')}'" for n in names) + "]"


def _torchrun_command(configs: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--bundle_root",
        str(ROOT),
        *QUICK,
        *args,
    ]


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two processes share the machine's cores


def torchrun(configs: str, *args: str, cwd: Path, timeout: int = 600) -> str:
    """Run the configs under torchrun with 2 processes from ``cwd``; returns the combined output."""
    proc = launch(_torchrun_command(configs, *args), cwd=cwd, env=ONE_THREAD, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _event_writers(folder: Path) -> set[str]:
    """The process ids that wrote TensorBoard event files under ``folder`` (events.out.tfevents.<t>.<host>.<pid>.n)."""
    return {p.name.split(".")[-2] for p in folder.rglob("events.out.tfevents.*")}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """SimCLR pretrained under torchrun for 1 epoch: its output folder."""
    out = tmp_path_factory.mktemp("ddp_pretrain")
    log = torchrun(
        _configs("pretrain_contrastive", "multi_gpu_pretrain"),
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(out / "eval"),
        "--max_epochs",
        "1",
        "--probe_interval",
        "1",
        cwd=out,
    )
    assert "distributed training: 2 processes, backend gloo" in log
    return out


def test_pretraining_under_ddp_writes_one_set_of_files(pretrained):
    files = sorted(p.name for p in (pretrained / "models").iterdir())
    # cache: the checked files; the weights with their recipe; the resume state removed by rank 0 at the end
    assert files == ["cache", "pretrained_simclr.pt", "pretrained_simclr.recipe.json"]
    assert len(_event_writers(pretrained / "eval")) == 1  # rank 0's probe log only
    state = torch.load(pretrained / "models" / "pretrained_simclr.pt", weights_only=True)
    assert state and all(k.startswith("encoder.") for k in state)  # plain keys, no DDP "module." prefix


def test_ddp_pretrained_weights_fine_tune_under_ddp(pretrained, tmp_path):
    log = torchrun(
        _configs("train", "multi_gpu_train"),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--max_epochs",
        "1",
        "--pretrained_ckpt",
        str(pretrained / "models" / "pretrained_simclr.pt"),
        cwd=tmp_path,
    )
    loaded = re.search(r"pretrained_ckpt .*keys matched \(.*encoder (\d+)/(\d+)", log)
    assert loaded and loaded[1] == loaded[2], "every encoder weight loads"
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert files == ["cache", "model.pt", "model.recipe.json"]
    assert len(_event_writers(tmp_path / "eval")) == 1


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before writing {path}:\n{proc.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL the processes below ``pid`` and ``pid`` itself: a crash of the whole run."""
    for child in _descendants(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(pid, signal.SIGKILL)


def _epochs_done(path: Path) -> int:
    trainer = torch.load(path, weights_only=True)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def test_ddp_fine_tuning_killed_mid_run_resumes(tmp_path):
    args = ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--max_epochs", "4"]
    command = _torchrun_command(_configs("train", "multi_gpu_train"), *args)
    proc = start(
        command,
        cwd=tmp_path,
        env=ONE_THREAD,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(tmp_path / "models" / "checkpoint.pt", proc)
        _kill_tree(proc.pid)  # both workers (torchrun starts each in a session of its own), then torchrun
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = _epochs_done(tmp_path / "models" / "checkpoint.pt")
    assert 1 <= killed_at < 4, "the kill came too late to test resuming"

    log = torchrun(_configs("train", "multi_gpu_train"), *args, cwd=tmp_path)
    assert f"continuing after epoch {killed_at}" in log
    assert "epoch 4/4:" in log
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # loads on one process as well
    # all epochs trained: the resume states are removed, by rank 0 alone
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["cache", "model.pt", "model.recipe.json"]


def _numbers(value, prefix=""):
    """Flatten metrics.json into {path: number} (plots' paths left out)."""
    if isinstance(value, dict):
        return {
            k: v for key, sub in value.items() if key != "plots" for k, v in _numbers(sub, f"{prefix}{key}.").items()
        }
    if isinstance(value, list):
        return {k: v for i, sub in enumerate(value) for k, v in _numbers(sub, f"{prefix}{i}.").items()}
    return {prefix: value}


def test_evaluation_under_ddp_equals_one_process(evaluated_tiny, tmp_path):
    # one process: the shared tiny run's evaluation (configs/evaluate.json, two overlays of each kind)
    run = evaluated_tiny
    torchrun(
        _configs("train", "evaluate", "multi_gpu_evaluate"),
        *run.args,
        "--ckpt_dir",
        str(run.models),
        "--n_overlays",
        "2",
        "--output_dir",
        str(tmp_path / "two"),
        cwd=tmp_path,
    )
    folders = {"one": run.folder / "eval", "two": tmp_path / "two"}
    one, two = (json.loads((folders[d] / "metrics.json").read_text()) for d in ("one", "two"))
    a, b = _numbers(one), _numbers(two)
    assert a.keys() == b.keys() and a["num_images."] == b["num_images."] > 0
    for key, value in a.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key
        else:
            assert b[key] == value, key
    for name in ("metrics.csv", "lung_attention_raw.csv", "test_dice_raw.csv"):
        rows = [sorted((folders[d] / name).read_text().splitlines()) for d in ("one", "two")]
        assert rows[0] == rows[1], name
    overlays = [sorted(p.name for p in (folders[d] / "overlays").iterdir()) for d in ("one", "two")]
    assert overlays[0] == overlays[1] and len(overlays[0]) == 4
