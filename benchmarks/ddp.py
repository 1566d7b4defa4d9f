"""One run of the multi-GPU fine-tuning overlay under ``torchrun``: which backend it joined, how long it took.

``LAUNCHER`` starts one process (``--nproc_per_node=1``) on this machine; ``run`` is that process's side: it runs
``configs/train.json`` with ``configs/multi_gpu_train.json`` for one epoch through ``bundle.workflow.run`` (as
``python -m monai.bundle run`` runs them) and checks that the process group used NCCL on a GPU (gloo on the CPU)
and that the run wrote its model. With one process the bundle keeps the network unwrapped (DistributedDataParallel
from two processes on): the run checks the backend's set-up, the overlay's samplers and a whole run on the GPU,
not the gradients' all-reduce.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bundle import workflow

from .memory import peak_memory_mb, reset_peak

__all__ = ["LAUNCHER", "CONFIGS", "expected_backend", "run"]

LAUNCHER = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1")
CONFIGS = ["train", "multi_gpu_train"]


def expected_backend() -> str:
    """The backend ``bundle.distributed.setup`` chooses here: NCCL with CUDA, gloo without."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def run(
    work: Path, dataset_dir: str, image_size: int, batch_size: int, num_workers: int
) -> tuple[dict[str, Any], float]:
    """One epoch of the overlay on ``dataset_dir`` (outputs under ``work``); returns the result and the peak memory
    in MiB (``benchmarks.memory``).

    Raises:
        RuntimeError: the process group used another backend, or the run wrote no model.
    """
    overrides = {
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "image_size": image_size,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "max_epochs": 1,
        "resume": False,
        "show_progress": False,
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
    }
    joined: dict[str, Any] = {}

    def record_group(wf: Any) -> None:  # after initialize, which joins the group (bundle.distributed.setup)
        if dist.is_available() and dist.is_initialized():
            joined.update(backend=str(dist.get_backend()), world_size=dist.get_world_size())

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reset_peak(device)
    start = time.perf_counter()
    workflow.run(CONFIGS, overrides, record_group)
    seconds = time.perf_counter() - start
    peak = peak_memory_mb(device)
    files = sorted(p.name for p in (work / "models").iterdir())
    if joined.get("backend") != expected_backend():
        raise RuntimeError(f"the process group used {joined.get('backend') or 'no backend'}, not {expected_backend()}")
    if "model.pt" not in files:
        raise RuntimeError(
            f"the run wrote no model.pt into {work / 'models'} (it holds {', '.join(files) or 'nothing'})"
        )
    result = {
        **joined,
        "run_s": round(seconds, 2),
        "configs": [f"configs/{name}.json" for name in CONFIGS],
        "settings": {k: overrides[k] for k in ("image_size", "batch_size", "num_workers", "max_epochs")},
        "files": files,
    }
    return result, peak
