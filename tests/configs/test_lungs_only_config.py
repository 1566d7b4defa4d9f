"""``--lungs_only true`` through configs/train.json and configs/evaluate.json, as users run them (in process)."""

from __future__ import annotations

import json

import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.checkpoints import load_weights
from bundle.networks import MultiTaskNet
from tests.conftest import BACKBONE, ROOT, sample_workflow

IMAGES = 24  # enough of the embedded sample for every split to hold images


def test_train_then_evaluate_lungs_only(tmp_path, one_thread):
    wf = sample_workflow("train", tmp_path, images=IMAGES, lungs_only=True, max_epochs=2)
    assert wf.parser.get_parsed_content("network").lungs_only is True
    wf.run()
    wf.finalize()
    weights = load_weights(tmp_path / "models" / "model.pt")
    MultiTaskNet(4, BACKBONE).load_state_dict(weights)  # strict: a lungs-only checkpoint fits the default network

    overrides = {k: wf.parser[k] for k in ("image_size", "batch_size", "num_workers", "show_progress", "ckpt_dir")}
    evaluation = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "evaluate.json")],
        workflow_type="train",
        logging_file=False,
        bundle_root=str(ROOT),
        datalist=str(tmp_path / "datalist.json"),
        dataset_dir=str(ROOT / "data" / "sample"),
        output_dir=str(tmp_path / "test_eval"),
        lungs_only="true",  # as the command line passes it
        **overrides,
    )
    evaluation.initialize()
    assert evaluation.parser.get_parsed_content("network").lungs_only is True  # evaluation takes the same path
    evaluation.run()
    evaluation.finalize()
    metrics = json.loads((tmp_path / "test_eval" / "metrics.json").read_text())
    assert metrics["num_images"] > 0
    for key in ("auc_macro", "accuracy", "dice_lung"):
        assert key in metrics, key


def test_inference_and_multi_gpu_configs_build_the_lungs_only_network():
    for files in (
        ["inference.json"],
        ["train.json", "multi_gpu_train.json"],
        ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
    ):
        parser = ConfigParser()
        parser.read_config([str(ROOT / "configs" / f) for f in files])
        assert parser.get_parsed_content("network_def").lungs_only is False, files  # the default
        parser["lungs_only"] = True
        net = parser.get_parsed_content("network_def", lazy=False)
        assert net.lungs_only is True, files
        x = torch.rand(1, 1, 64, 64)
        with torch.no_grad():
            out = net.eval()(x)
        assert (out["class"] if isinstance(out, dict) else out).shape == (1, 4)
