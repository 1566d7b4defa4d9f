"""The MONAI Label app serving a ViT (``--conf backbone vit_s16 --conf ckpt_file ...``), started for real on
127.0.0.1: what it returns equals ``configs/inference.json`` for the same weights, and it retrains the lung
decoder from saved masks with the transformer frozen."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bundle.atomic import atomic_save
from bundle.networks import MultiTaskNet
from label_app.client import LabelServer, copy_app, parse_multipart
from tests.conftest import CLASS_NAMES, ROOT, run_bundle
from tests.helpers import label_server_env

pytestmark = pytest.mark.slow  # a real MONAI Label server in its own environment, and a training through it

SIZE = "64"
SAMPLE = ROOT / "data" / "sample"


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """ViT weights (seeded), four annotated sample studies and inference.json's outputs for them."""
    tmp = tmp_path_factory.mktemp("vit_label")
    torch.manual_seed(0)
    weights = tmp / "vit_model.pt"
    atomic_save(MultiTaskNet(len(CLASS_NAMES), "vit_s16").state_dict(), weights)
    studies = tmp / "studies"
    studies.mkdir()
    masks = sorted((SAMPLE / "masks").glob("*.png"))[:4]
    for m in masks:
        shutil.copyfile(SAMPLE / "images" / m.name, studies / m.name)
    network = ["--backbone", "vit_s16", "--image_size", SIZE, "--ckpt_file", str(weights)]
    out = tmp / "reference"
    args = ["--dataset_dir", str(studies), "--output_dir", str(out), "--write_overlays", "false", *network]
    run_bundle("run", "--config_file", "configs/inference.json", *args)
    with open(out / "predictions.csv") as f:
        reference = {Path(r["image"]).stem: r for r in csv.DictReader(f)}
    conf = {"bundle_root": str(ROOT), "backbone": "vit_s16", "image_size": SIZE, "ckpt_file": str(weights)}
    return tmp, studies, masks, weights, reference, conf


@pytest.fixture(scope="module")
def server(setup):
    tmp, studies, _, _, _, conf = setup
    with LabelServer(copy_app(tmp / "app"), studies, tmp / "server.log", conf=conf, env=label_server_env()) as s:
        yield s
    assert "Traceback" not in s.log_tail(10**7), "the server logged a stack trace"


def test_serves_the_vit_as_inference_json_does(server, setup):
    _, _, masks, weights, reference, _ = setup
    study = masks[0].stem
    expected = reference[study]
    mask = _png(server.infer("lung_segmentation", study, "image")[0])
    np.testing.assert_array_equal(mask > 0, np.asarray(Image.open(expected["lung_mask_file"])) > 0)
    body, content_type = server.infer("classification", study, "all")
    parts = parse_multipart(body, content_type)
    result, saliency = json.loads(parts["params"]), _png(parts["image"])
    scores = [p["score"] for p in result["prediction"]]
    np.testing.assert_allclose(scores, [float(expected[f"prob_{c}"]) for c in CLASS_NAMES], atol=1e-4)
    assert result["lung_attention"] == pytest.approx(float(expected["lung_attention"]), abs=1e-3)
    assert result["weights"] == weights.name  # outside the bundle: its file name, not its path
    assert saliency.shape == mask.shape and 250 <= saliency.max() <= 255


def test_retrains_the_decoder_of_the_vit(server, setup):
    _, _, masks, weights, _, _ = setup
    for m in masks[1:]:
        server.save_label(m.stem, m)
    status = server.train("lung_segmentation", {"max_epochs": 1, "val_split": 0.34, "learning_rate": 1e-3})
    assert status["status"] == "DONE", server.log_tail()
    state = torch.load(server.app / "model" / "model.pt", weights_only=True)
    start = torch.load(weights, weights_only=True)
    assert state.keys() == start.keys()
    changed = {k.split(".")[0] for k in state if not torch.equal(state[k].float(), start[k].float())}
    assert changed == {"decoder", "segmentation_head"}  # the transformer and the class head stayed frozen
    assert server.infer_json("lung_segmentation", masks[0].stem)["weights"] == "app/model/model.pt"
