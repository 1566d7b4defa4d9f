"""configs/pretrain_inpainting.json: each ssl_method trains an epoch, writes weights and a PNG; train.json loads it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import ROOT, SHARED_CXR, prepare_run, requires_shared, write_dataset

CONFIG = str(ROOT / "configs/pretrain_inpainting.json")
TINY = {"image_size": 32, "batch_size": 4, "num_workers": 0, "max_epochs": 1}


def run_workflow(config, **overrides):
    wf = ConfigWorkflow(config_file=config, workflow_type="train", bundle_root=str(ROOT), **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inpainting") / "data"
    write_dataset(root, n_per_class=3)
    return root


@pytest.fixture(scope="module")
def blocks_run(tiny_data, tmp_path_factory):
    """One epoch of ssl_method inpainting (blocks); shared by the train.json test."""
    out = tmp_path_factory.mktemp("blocks")
    run_workflow(
        CONFIG,
        ssl_method="inpainting",
        dataset_dir=str(tiny_data),
        ckpt_dir=str(out / "models"),
        output_dir=str(out / "eval"),
        probe_interval=0,
        **TINY,
    )
    return out


def check_outputs(out: Path, method: str) -> None:
    weights = torch.load(out / "models" / f"pretrained_{method}.pt", weights_only=True)
    assert {k.split(".")[0] for k in weights} == {"encoder", "decoder", "segmentation_head"}
    assert weights["segmentation_head.0.weight"].shape[0] == 1  # one reconstruction channel
    assert not (out / "models" / f"pretrain_{method}_checkpoint.pt").exists()  # removed when the run ends
    png = out / "eval" / "reconstruction_epoch0001.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_blocks_writes_checkpoint_and_png(blocks_run):
    check_outputs(blocks_run, "inpainting")


@pytest.mark.parametrize(
    "method,extra", [("group_masked", {}), ("outpainting", {"contrastive_weight": 0.5, "recon_loss": "l2"})]
)
def test_other_methods(method, extra, tiny_data, tmp_path):
    wf = run_workflow(
        CONFIG,
        ssl_method=method,
        dataset_dir=str(tiny_data),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        probe_interval=1,
        **TINY,
        **extra,
    )
    check_outputs(tmp_path, method)
    network = wf.parser.get_parsed_content("network")
    assert network.replace_prob == (0.3 if method == "group_masked" else 0.0)  # GMML pastes patches, the rest not
    assert (network.projector is not None) == ("contrastive_weight" in extra)


def test_train_json_loads_encoder_and_decoder(blocks_run, tiny_data, tmp_path):
    source = blocks_run / "models" / "pretrained_inpainting.pt"
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs/train.json"),
        workflow_type="train",
        bundle_root=str(ROOT),
        dataset_dir=str(tiny_data),
        pretrained_ckpt=str(source),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        **TINY,
    )
    # the workflow applies configs/logging.conf (replacing pytest's capture handler), so listen here
    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("bundle.checkpoints")
    logger.addHandler(handler)
    try:
        wf.initialize()
        prepare_run(wf)  # the start of run loads pretrained_ckpt
    finally:
        logger.removeHandler(handler)
    net = wf.parser.get_parsed_content("network")
    weights = torch.load(source, weights_only=True)
    keys = ("encoder.conv1.weight", "encoder.layer4.0.bn2.running_mean", "decoder.blocks.0.convs.conv_0.conv.weight")
    for key in keys:
        assert torch.equal(net.state_dict()[key].cpu(), weights[key]), key
    log = "\n".join(records)
    for part in ("encoder", "decoder"):  # every key of both parts matched, whatever the backbone
        n = sum(k.startswith(part + ".") for k in weights)
        assert n > 0 and f"{part} {n}/{n}" in log, (part, n, log)
    assert "segmentation_head 2" in log


@requires_shared
def test_real_images_64px(tmp_path):
    """The real collection, a small subset at 64 px (the command is in docs/pretraining.md)."""
    entries = json.loads((SHARED_CXR / "datalist.json").read_text())["training"][:24]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))
    run_workflow(
        CONFIG,
        ssl_method="group_masked",
        dataset_dir=str(SHARED_CXR),
        datalist=str(datalist),
        image_size=64,
        batch_size=8,
        num_workers=0,
        max_epochs=1,
        probe_interval=0,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
    )
    check_outputs(tmp_path, "group_masked")
