"""configs/pretrain_contrastive.json end to end: every ssl_method (and MICLe) pretrains for one epoch at 32 px on a
few sample images, writes pretrained_out, resumes, and configs/train.json loads the encoder from it."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import ROOT, prepare_run, run_bundle
from tests.helpers import warning_lines

SAMPLE = ROOT / "data" / "sample"
PRETRAIN = str(ROOT / "configs" / "pretrain_contrastive.json")
TRAIN = str(ROOT / "configs" / "train.json")
ENCODER_MATCHED = re.compile(r"encoder (\d+)/(\d+)")


@pytest.fixture(scope="module")
def small_datalist(tmp_path_factory) -> Path:
    """About 32 sample images, whole patients, each class, patients with two or more images included."""
    entries = json.loads((SAMPLE / "datalist.json").read_text())["training"]
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_patient[e["patient"]].append({k: e[k] for k in ("image", "mask", "label", "patient") if k in e})
    chosen, per_class = [], Counter()
    for members in sorted(by_patient.values(), key=lambda m: (-len(m), m[0]["image"])):
        label = members[0]["label"]
        if per_class[label] < 8:
            chosen.extend(members)
            per_class[label] += len(members)
    path = tmp_path_factory.mktemp("small") / "datalist.json"
    path.write_text(json.dumps({"training": chosen}))
    return path


def overrides(datalist: Path, out: Path, **extra) -> dict:
    """Small and quick: 32 px, one epoch, resnet10 (both configs take the backbone id, so it still matches)."""
    return {
        "bundle_root": str(ROOT),
        "backbone": "resnet10",
        "datalist": str(datalist),
        "dataset_dir": str(SAMPLE),
        "image_size": 32,
        "batch_size": 8,
        "num_workers": 0,
        "max_epochs": 1,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        **extra,
    }


def workflow(config: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=config, workflow_type="train", logging_file=False, **override)
    wf.initialize()
    return wf


def encoder_keys_matched(log: str) -> tuple[int, int]:
    found = ENCODER_MATCHED.findall(log)
    assert found, f"no 'encoder n/m' in the log:\n{log[-2000:]}"
    return int(found[-1][0]), int(found[-1][1])


@pytest.mark.parametrize(
    "method, multi_instance", [("simclr", False), ("simclr", True), ("moco", False), ("byol", True), ("simsiam", False)]
)
def test_pretrain_then_finetune_loads_encoder(method, multi_instance, small_datalist, tmp_path, caplog):
    args = overrides(
        small_datalist,
        tmp_path,
        ssl_method=method,
        multi_instance=multi_instance,
        probe_interval=1,
        queue_size=64,
        hidden_dim=256,
    )
    with caplog.at_level(logging.INFO):
        wf = workflow(PRETRAIN, **args)
        assert not wf.check_properties()
        wf.run()
        wf.finalize()
    monitor = next(h for h in wf.parser.get_parsed_content("train#handlers") if hasattr(h, "history"))
    row = monitor.history[-1]
    assert {"loss", "lr", "embedding_std", "knn_accuracy"} <= set(row) and row["loss"] == row["loss"]
    assert list((tmp_path / "eval").glob("events.out.tfevents*")), "no TensorBoard log in output_dir"
    if multi_instance:
        assert "multi_instance (MICLe)" in caplog.text

    suffix = "_micle" if multi_instance else ""
    out = tmp_path / "models" / f"pretrained_{method}{suffix}.pt"
    state = torch.load(out, weights_only=True)
    assert state and all(k.startswith("encoder.") for k in state)
    # the resume state (pretrain_<method>_checkpoint.pt, never train.json's checkpoint.pt) is removed at the end
    assert not list((tmp_path / "models").glob("*checkpoint*")), "a finished run keeps no resume state"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bundle.checkpoints"):
        prepare_run(workflow(TRAIN, **overrides(small_datalist, tmp_path, pretrained_ckpt=str(out))))
    matched, total = encoder_keys_matched(caplog.text)
    assert matched == total == len(state)


def test_pretraining_resumes(small_datalist, tmp_path, caplog):
    args = overrides(small_datalist, tmp_path, ssl_method="moco", probe_interval=0, queue_size=64)
    args["keep_resume_state"] = True  # to train further later
    first = workflow(PRETRAIN, **args)
    first.run()
    queue = first.parser.get_parsed_content("network").queue.clone()
    with caplog.at_level(logging.INFO):
        second = workflow(PRETRAIN, **{**args, "max_epochs": 2})
        second.run()
    assert "resuming from" in caplog.text
    trainer = second.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * len(second.parser.get_parsed_content("train#dataloader"))
    # the MoCo queue came back from the resume file and kept advancing
    resumed = second.parser.get_parsed_content("network").queue
    assert not torch.equal(resumed, queue)


@pytest.mark.slow  # two real commands: MICLe pretraining, then fine-tuning from its weights
def test_cli_pretrain_micle_then_train(small_datalist, tmp_path):
    """The documented commands: pretrain (MICLe) with monai.bundle run, then train.json with --pretrained_ckpt.

    Run from a temporary working directory, with absolute config paths and ``--bundle_root``.
    """
    # the default backbone here, as a user runs it
    common = [
        "--bundle_root",
        str(ROOT),
        "--datalist",
        str(small_datalist),
        "--dataset_dir",
        str(SAMPLE),
        "--image_size",
        "32",
        "--max_epochs",
        "1",
        "--batch_size",
        "8",
        "--ckpt_dir",
        str(tmp_path / "m"),
        "--output_dir",
        str(tmp_path / "e"),
    ]
    pretrained = run_bundle("run", "--config_file", PRETRAIN, "--multi_instance", "true", *common, cwd=tmp_path)
    assert warning_lines(pretrained.stdout + pretrained.stderr) == []  # a default run prints no warning
    # the weights and their recipe, the checked files; the resume state is removed at the end
    names = ["cache", "pretrained_simclr_micle.pt", "pretrained_simclr_micle.recipe.json"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == names
    assert f"--pretrained_ckpt {tmp_path / 'm' / 'pretrained_simclr_micle.pt'}" in pretrained.stdout  # the next step
    proc = run_bundle(
        "run",
        "--config_file",
        TRAIN,
        "--pretrained_ckpt",
        str(tmp_path / "m" / "pretrained_simclr_micle.pt"),
        *common,
        cwd=tmp_path,
    )
    matched, total = encoder_keys_matched(proc.stdout + proc.stderr)
    assert matched == total > 0
    assert (tmp_path / "m" / "model.pt").is_file()
