"""The speed switches (``amp_dtype``, ``channels_last``, ``compile``) of the training configs, run as users run them."""

from __future__ import annotations

import math
import re

import pytest
import torch
from monai.bundle import ConfigParser

from tests.configs.test_train_config import out_args
from tests.helpers import ROOT, bundle_in_process, run_bundle

TRAIN = "configs/train.json"
CONFIGS = ["train", "pretrain_contrastive", "pretrain_inpainting", "pretrain_pretext", "inference"]
# MONAI's StatsHandler logs "Epoch: 1/1, Iter: 2/2 -- train_loss: 1.2345"
LOSS = re.compile(r": train_loss (\S+) ")  # the epoch lines of bundle.engines.progress


def _args(tmp_path, dataset_dir, *extra: str) -> list[str]:
    return [
        "run",
        "--config_file",
        TRAIN,
        *out_args(tmp_path, dataset_dir),
        "--max_epochs",
        "1",
        "--batch_size",
        "8",
        "--num_workers",
        "0",
        "--show_progress",
        "false",
        *extra,
    ]


def _losses(stdout: str) -> list[float]:
    return [float(v) for v in LOSS.findall(stdout)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the defaults of a machine without CUDA")
@pytest.mark.parametrize("name", CONFIGS)
def test_defaults_without_cuda(name):
    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / f"{name}.json")
    parser["bundle_root"] = str(ROOT)
    assert parser.get_parsed_content("amp_dtype") == "float16"
    assert parser.get_parsed_content("channels_last") is False
    assert parser.get_parsed_content("compile", default=False) is False
    # the network is built as configured: contiguous (not channels-last) weights on the CPU
    network = parser.get_parsed_content("network")
    assert all(p.is_contiguous() for p in network.parameters())


def test_channels_last_trains_with_a_finite_loss(tiny_dataset, tmp_path):
    proc = run_bundle(*_args(tmp_path, tiny_dataset, "--image_size", "64", "--channels_last", "true"))
    losses = _losses(proc.stdout)
    assert losses and all(math.isfinite(v) for v in losses), proc.stdout[-2000:]
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile of this network runs on CUDA only")
def test_compile_trains_one_tiny_epoch(tiny_dataset, tmp_path):
    """``torch.compile`` through MONAI's trainer, on a GPU."""
    proc = run_bundle(*_args(tmp_path, tiny_dataset, "--image_size", "32", "--compile", "true"), timeout=600)
    losses = _losses(proc.stdout)
    assert losses and all(math.isfinite(v) for v in losses)


def test_compile_on_the_cpu_stops_in_one_message(tiny_dataset, tmp_path):
    """PyTorch 2.13's CPU compiler fails in the backward of the encoder's padding: refused before any work."""
    args = _args(tmp_path, tiny_dataset, "--image_size", "32", "--compile", "true", "--device", "cpu")
    proc = bundle_in_process(*args)
    assert proc.returncode == 1
    assert "compile: true fails on the CPU" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "models" / "model.pt").exists()
