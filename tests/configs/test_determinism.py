"""One seed, one result: two runs of a training config with the same settings write the same weights.

Each run is ``python -m monai.bundle run`` on a few images of the embedded sample (half of them with a lung mask) at
64 px, with two DataLoader workers (their random transforms are seeded from the run's seed), one epoch; every
tensor of the two weight files must be equal (``torch.equal``), as a check that trains a bundle twice expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_bundle

pytestmark = pytest.mark.slow  # two runs of a config each, 20 to 50 s a run on 2 cores

SAMPLE = ROOT / "data" / "sample"


def sample_datalist(folder: Path, n_masked: int = 8, n_plain: int = 8) -> Path:
    """A datalist of the sample's first ``n_masked`` entries with a lung mask and ``n_plain`` without."""
    entries = json.loads((SAMPLE / "datalist.json").read_text())["training"]
    chosen = [e for e in entries if e.get("mask")][:n_masked] + [e for e in entries if not e.get("mask")][:n_plain]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": chosen}))
    return path


def tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a weight file, by its key (nested dicts joined with dots)."""

    def flat(value, prefix: str = "") -> dict[str, torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return {prefix: value}
        if isinstance(value, dict):
            return {
                k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}" if prefix else key).items()
            }
        return {}

    return flat(torch.load(path, map_location="cpu", weights_only=True))


def train(config: str, folder: Path, datalist: Path, *extra: str) -> Path:
    """One epoch of ``configs/<config>.json`` with seed 0 into ``folder``; returns its models folder."""
    models = folder / "models"
    run_bundle(
        "run", "--config_file", str(ROOT / "configs" / f"{config}.json"), "--bundle_root", str(ROOT),
        "--dataset_dir", str(SAMPLE), "--datalist", str(datalist), "--image_size", "64", "--batch_size", "4",
        "--max_epochs", "1", "--num_workers", "2", "--seed", "0", "--resume", "false", "--show_progress", "false",
        "--ckpt_dir", str(models), "--output_dir", str(folder / "out"), *extra,
    )  # fmt: skip
    return models


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = tensors(first), tensors(second)
    assert a and a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ between two runs with one seed: {different[:5]}"


def test_fine_tuning_twice_with_one_seed_gives_the_same_weights(tmp_path):
    datalist = sample_datalist(tmp_path)
    runs = [train("train", tmp_path / name, datalist) for name in ("first", "second")]
    assert_same_weights(runs[0] / "model.pt", runs[1] / "model.pt")


def test_simclr_pretraining_twice_with_one_seed_gives_the_same_weights(tmp_path):
    datalist = sample_datalist(tmp_path)
    runs = [train("pretrain_contrastive", tmp_path / name, datalist, "--ssl_method", "simclr") for name in ("a", "b")]
    assert_same_weights(runs[0] / "pretrained_simclr.pt", runs[1] / "pretrained_simclr.pt")
