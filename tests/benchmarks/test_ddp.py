"""The GPU check's torchrun part on the CPU: the same command, with gloo instead of NCCL."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu
from benchmarks.cli import build_parser
from tests.helpers import launch

pytestmark = pytest.mark.slow  # torchrun, one process, one epoch of the sample at 64 px (about a minute)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the part joins NCCL: the GPU check runs it")
def test_the_torchrun_part_completes_with_the_cpu_backend(tmp_path):
    args = build_parser().parse_args(["gpu", "--dry", "--out", str(tmp_path)])
    part = next(p for p in gpu.PARTS if p.kind == "ddp")
    proc = launch(gpu.part_command(part, args, tmp_path / "ddp.json"), env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed training: 1 processes, backend gloo" in proc.stdout + proc.stderr
    record = json.loads((tmp_path / "ddp.json").read_text())
    assert record["status"] == "ok", record["reason"]
    result = record["result"]
    assert (result["backend"], result["world_size"]) == ("gloo", 1) and result["run_s"] > 0
    assert {"model.pt", "model.recipe.json"} <= set(result["files"])
    assert result["configs"] == ["configs/train.json", "configs/multi_gpu_train.json"]
