"""configs/inference_trt.json (bundle.inference.tensorrt): on a machine without CUDA or TensorRT the run stops
before any work with one sentence; what the overlay runs besides the engine gives inference.json's predictions and
masks; and the ONNX graph TensorRT would build its engine from equals PyTorch (run here in onnxruntime)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from monai.networks.utils import add_casts_around_norms, convert_to_onnx
from PIL import Image

from bundle import workflow
from bundle.checkpoints import load_weights
from bundle.errors import UserError
from bundle.inference import tensorrt
from bundle.networks import MultiTaskNet
from bundle.settings import RULES, check
from tests.conftest import ROOT, run_bundle
from tests.networks.test_onnx import real_images

OVERLAY = ["inference", "inference_trt"]
CONFIG_ARG = "['configs/inference.json','configs/inference_trt.json']"
MODEL = ROOT / "models" / "model.pt"
needs_no_tensorrt = pytest.mark.skipif(
    tensorrt.missing_requirement("cuda") is None, reason="CUDA and TensorRT are present: the overlay would run"
)


@pytest.fixture
def tensorrt_present(monkeypatch):
    """This machine as one with CUDA and TensorRT: the overlay's check passes (MONAI's trt_compile still finds no
    TensorRT, warns and leaves the network as it is, so the run goes on in PyTorch)."""
    monkeypatch.setattr(tensorrt, "missing_requirement", lambda device: None)


@needs_no_tensorrt
def test_the_overlay_stops_with_one_sentence(tmp_path):
    """The documented command on this machine: exit status 1, one line saying what is missing and what to do, no
    traceback, nothing written."""
    out = tmp_path / "out"
    proc = run_bundle("run", "--config_file", CONFIG_ARG, "--output_dir", str(out), check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in text
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last == tensorrt.missing_requirement(workflow.parsed(OVERLAY, None, "device")[0])
    assert last.startswith("configs/inference_trt.json") and "configs/inference.json alone" in last
    assert not out.exists() and not (ROOT / "models" / "tensorrt").exists()


def test_what_is_missing_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tensorrt, "_importable", lambda module: module == "polygraphy")
    missing = tensorrt.missing_requirement("cuda")
    assert "needs the packages tensorrt, cuda-python, not installed here" in missing
    assert "pip install tensorrt polygraphy cuda-python" in missing
    assert "device is 'cpu': use device cuda" in tensorrt.missing_requirement("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "needs a CUDA GPU, and torch sees none here" in tensorrt.missing_requirement("cuda")


def test_saliency_autocast_and_channels_last_are_refused(tensorrt_present):
    (settings,) = workflow.parsed(OVERLAY, None, "settings")
    assert settings["saliency"] == "none" and settings["trt_precision"] == "fp16"
    assert check(settings, "inference")
    bad = {**settings, "saliency": "gradcampp", "amp": "true", "channels_last": True, "trt_precision": "int8"}
    with pytest.raises(UserError) as stop:
        check(bad, "inference")
    message = str(stop.value)
    assert "saliency: 'gradcampp' needs gradients, which a TensorRT engine does not compute" in message
    assert "amp: true has no effect on a TensorRT engine" in message and "channels_last: true" in message
    assert "trt_precision: 'int8'" in message


def test_the_overlay_lists_its_own_settings():
    overlay = json.loads((ROOT / "configs" / "inference_trt.json").read_text())
    added = {k.split("#", 1)[1] for k in overlay if k.startswith("settings#")}
    assert added == {"trt_precision", "trt_dir"} and added <= set(RULES)
    assert overlay["+imports"] == ["$from monai.networks import trt_compile"]  # the model zoo's form
    assert overlay["network"].startswith("$trt_compile(@network_def_trt.to(@device), ")
    inferer, net = workflow.parsed(OVERLAY, None, "inferer", "network_def_trt")
    assert type(inferer) is SimpleInferer and type(net) is MultiTaskNet  # one pass, both outputs, no saliency


def test_one_engine_per_weights_precision_batch_size_and_class_path(tmp_path):
    base = tensorrt.engine_base(tmp_path / "trt", tmp_path / "model.pt", "FP16", 8, 224, False)
    assert base == str(tmp_path / "trt" / "model_fp16_b8_224") and (tmp_path / "trt").is_dir()
    assert tensorrt.engine_base(tmp_path / "trt", "m/best.pt", "bf16", 4, 256, "true").endswith(
        "best_bf16_b4_256_lungs_only"
    )


def _rows(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.filterwarnings("ignore:TensorRT and/or polygraphy")
def test_the_overlay_gives_inference_predictions_and_masks(tmp_path, tensorrt_present):
    """Everything the overlay runs but the engine (MultiTaskNet, MONAI's SimpleInferer, the writer) against
    inference.json without saliency, on the shipped weights: the same probabilities and lung masks."""
    common = {"max_images": 4, "num_workers": 0, "write_overlays": False, "trt_dir": str(tmp_path / "trt")}
    workflow.run(OVERLAY, {**common, "output_dir": str(tmp_path / "trt_run")}, logging_file=False)
    common.pop("trt_dir")
    workflow.run("inference", {**common, "saliency": "none", "output_dir": str(tmp_path / "plain")}, logging_file=False)
    trt_rows, plain_rows = _rows(tmp_path / "trt_run"), _rows(tmp_path / "plain")
    assert len(trt_rows) == len(plain_rows) == 4 and all(r["status"] == "ok" for r in trt_rows)
    probs = [k for k in plain_rows[0] if k.startswith("prob_")]
    for a, b in zip(trt_rows, plain_rows):
        assert a["predicted"] == b["predicted"] and a["lung_attention"] == b["lung_attention"] == ""
        np.testing.assert_allclose([float(a[k]) for k in probs], [float(b[k]) for k in probs], atol=1e-6)
        mask_a, mask_b = (np.asarray(Image.open(r["lung_mask_file"])) for r in (a, b))
        assert np.array_equal(mask_a, mask_b) and mask_a.any()
    assert (tmp_path / "trt").is_dir()  # the engine's folder, where TensorRT would keep model_fp16_b8_224.plan


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:# 'dynamic_axes'")
def test_the_graph_tensorrt_builds_from_equals_pytorch(tmp_path):
    """MONAI's TrtCompiler exports ``network`` as below (norm casts, an example dict, dynamic batch from its
    profile, the output names) before TensorRT parses the file: that file in onnxruntime equals PyTorch."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements-deploy.txt)")
    (net,) = workflow.parsed(OVERLAY, None, "network_def_trt")
    net.load_state_dict(load_weights(MODEL))
    net.eval()
    images = real_images(224, sample=4, shared=4)
    with torch.no_grad():
        expected = net(images)
    exported = add_casts_around_norms(net)
    path = tmp_path / "model.onnx"
    example = {"x": images[:2]}
    convert_to_onnx(exported, example, filename=str(path), input_names=["x"], output_names=["class", "seg"],
                    dynamic_axes={"x": [0]})  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (images, images[:1]):
        got = dict(zip(["class", "seg"], sess.run(None, {"x": batch.numpy()})))
        for key in ("class", "seg"):
            torch.testing.assert_close(torch.from_numpy(got[key]), expected[key][: len(batch)], atol=1e-4, rtol=0)
