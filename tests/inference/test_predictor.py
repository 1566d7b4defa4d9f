"""bundle.load_model / Predictor.predict: the numbers of configs/inference.json, from Python, on real PNG and DICOM
files, arrays and tensors; one message for every mistake a user can make."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bundle
from bundle.errors import UserError
from bundle.inference.dicom_source import radiograph_to_dicom
from bundle.inference.predictor import DEFAULT_SALIENCY, DEFAULT_WEIGHTS, Predictions, load_model
from bundle.workflow import parsed
from tests.conftest import ROOT, SHARED_CXR, run_bundle
from tests.helpers import child_env

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} is absent (make weights)")

SAMPLE = ROOT / "data" / "sample" / "images"
# one real image of each class of the sample (normal and bacterial: Kermany; viral; COVID-19: Hannover)
SAMPLE_IMAGES = [
    "kermany_train_NORMAL2-IM-0987-0001.png",
    "kermany_train_person66_bacteria_323.png",
    "crdviral_Viral-Pneumonia-391.png",
    "hannover_80b5f00f.png",
]
SHARED_IMAGES = 3  # taken from the real collection when it is present


def real_folder(folder: Path) -> Path:
    """Real radiographs as the run and the API read them: sample PNGs, DICOMs made of their pixels (a DX of 8 bits,
    a CR of 12 bits cut to 256 x 200), and the real collection's first images when present."""
    folder.mkdir()
    for name in SAMPLE_IMAGES:
        shutil.copy(SAMPLE / name, folder / name)
    pixels = np.asarray(Image.open(SAMPLE / SAMPLE_IMAGES[0]))
    radiograph_to_dicom(pixels, folder / "dx_normal.dcm", patient_id="P1")
    cut = np.asarray(Image.open(SAMPLE / SAMPLE_IMAGES[3]))[:, 28:228].astype(np.float32) / 255
    radiograph_to_dicom(cut, folder / "cr_covid.dcm", patient_id="P2", modality="CR")
    if SHARED_CXR.is_dir():
        (folder / "shared").mkdir()
        for path in sorted((SHARED_CXR / "images").glob("*.png"))[:SHARED_IMAGES]:
            shutil.copy(path, folder / "shared" / path.name)
    return folder


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[list[dict], Path]:
    """``python -m monai.bundle run --config_file configs/inference.json`` on ``real_folder``; its CSV rows."""
    tmp = tmp_path_factory.mktemp("predictor")
    folder = real_folder(tmp / "images")
    run_bundle(
        "run", "--config_file", str(ROOT / "configs" / "inference.json"), "--bundle_root", str(ROOT),
        "--dataset_dir", str(folder), "--output_dir", str(tmp / "out"), "--write_overlays", "false",
        "--dicom_outputs", "never", "--num_workers", "0", cwd=tmp, timeout=600,
    )  # fmt: skip
    with open(tmp / "out" / "predictions.csv") as f:
        return list(csv.DictReader(f)), folder


@pytest.fixture(scope="module")
def model():
    """The shipped model as ``bundle.load_model`` gives it: CPU, Grad-CAM++."""
    return bundle.load_model(DEFAULT_WEIGHTS)


@pytest.fixture(scope="module")
def api(cli_run, model) -> Predictions:
    """The API's predictions for the run's files, in the run's order (so that the batches are the same)."""
    rows, _ = cli_run
    return model.predict([r["image"] for r in rows])


def test_the_api_gives_the_numbers_the_inference_run_writes(cli_run, api):
    rows, folder = cli_run
    assert len(rows) == len(SAMPLE_IMAGES) + 2 + (SHARED_IMAGES if SHARED_CXR.is_dir() else 0)
    assert all(r["status"] == "ok" for r in rows) and api.names == [r["image"] for r in rows]
    written = np.array([[float(r[f"prob_{c}"]) for c in api.class_names] for r in rows])
    np.testing.assert_allclose(api.probabilities, written, rtol=0, atol=1e-6)
    assert api.predicted == [r["predicted"] for r in rows]
    assert api.saliency_class == [r["saliency_class"] for r in rows]
    for key in ("lung_attention", "lung_share", "lung_attention_ratio"):
        np.testing.assert_allclose(getattr(api, key), [float(r[key]) for r in rows], rtol=0, atol=1e-6)
    for i, r in enumerate(rows):
        mask = np.asarray(Image.open(r["lung_mask_file"]))
        assert mask.shape == api.masks[i].shape and api.masks[i].dtype == np.uint8
        np.testing.assert_array_equal(api.masks[i], mask // 255, err_msg=r["image"])  # exactly the written mask
        np.testing.assert_allclose(api.saliency[i], np.load(r["saliency_file"]), rtol=0, atol=1e-6)
    cut = next(i for i, r in enumerate(rows) if r["image"].endswith("cr_covid.dcm"))
    assert api.masks[cut].shape == (256, 200) and 0.1 < api.masks[cut].mean() < 0.6  # a non-square input's own size


def test_arrays_and_tensors_are_read_as_files_are(api, cli_run):
    """A file's pixels given as an array, a tensor or a stack give the file's numbers; without saliency the
    probabilities and masks stay those of the run with it."""
    rows, _ = cli_run
    path = next(r["image"] for r in rows if r["image"].endswith(SAMPLE_IMAGES[0]))
    pixels = np.array(Image.open(path))  # uint8, in the file's own units
    plain = load_model(saliency=None)
    assert plain.saliency is None
    result = plain.predict([path, pixels, torch.from_numpy(pixels), torch.from_numpy(pixels)[None, None]])
    assert result.names == [path, "array_1", "array_2", "array_3"]
    assert result.saliency is None and result.lung_attention is None and result.saliency_class is None
    for i in range(1, 4):
        np.testing.assert_array_equal(result.probabilities[i], result.probabilities[0])
        np.testing.assert_array_equal(result.masks[i], result.masks[0])
    i = api.names.index(path)
    np.testing.assert_allclose(result.probabilities[0], api.probabilities[i], rtol=0, atol=1e-6)
    assert (result.masks[0] != api.masks[i]).sum() <= 2  # another batch: at most a pixel's rounding at the border
    stack = plain.predict(np.stack([pixels, pixels[::-1]]).astype(np.uint16) * 16)  # (N, rows, cols), 12-bit range
    assert len(stack) == 2 and stack.probabilities.shape == (2, 4)
    np.testing.assert_allclose(stack.probabilities[0], result.probabilities[0], rtol=0, atol=1e-6)


def test_the_saliency_method_is_chosen_at_loading(model, api):
    assert DEFAULT_SALIENCY == parsed("inference", None, "saliency")[0] == model.saliency
    gradcam = load_model(saliency="gradcam", saliency_layer="encoder.layer4")
    one = gradcam.predict(api.names[0])
    assert one.saliency_class == api.saliency_class[:1] and float(one.saliency[0].max()) == pytest.approx(1, abs=1e-3)
    assert np.abs(one.saliency[0] - api.saliency[0]).max() > 0.05  # another method and layer, another map


@pytest.fixture
def no_debug(monkeypatch):
    """Normal mode: a user error is a ``UserError`` with its one message (not the debug mode's traceback)."""
    for name in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_every_user_error_is_one_message(no_debug, tmp_path, model):
    shutil.copy(DEFAULT_WEIGHTS, tmp_path / "bare.pt")  # weights without their recipe
    cases = [
        (lambda: load_model(tmp_path / "missing.pt"), "no weights file"),
        (lambda: load_model(tmp_path / "bare.pt"), r"has no recipe \(.*bare.recipe.json not found\)"),
        (lambda: load_model(saliency="gradcam++"), "saliency: 'gradcam\\+\\+' must be one of"),
        (lambda: load_model(device="gpu"), "device: 'gpu' must be a torch device"),
        (lambda: load_model(saliency_layr="encoder.layer4"), "did you mean saliency_layer"),
        (lambda: load_model(backbone="resnet18"), "backbone: resnet18 given, the weights were made with resnet10"),
        (lambda: model.predict(3), "predict: got int"),
        (lambda: model.predict([str(SAMPLE / SAMPLE_IMAGES[0]), {"image": "a.png"}]), "input 1 is of type dict"),
        (lambda: model.predict([]), "no inputs"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    with pytest.raises(UserError) as stop:
        model.predict([tmp_path / "broken.png", tmp_path / "none.dcm", np.full((8, 8), np.nan), np.zeros(5)])
    lines = str(stop.value).splitlines()
    assert lines[0] == "predict: 4 of 4 inputs cannot be read, nothing was predicted:" and len(lines) == 5
    for expected in ("broken.png: cannot decode pil image", "none.dcm: file not found"):
        assert expected in str(stop.value)
    assert "array_2: image has non-finite values" in str(stop.value)
    assert "array_3: not a 2D image (shape (5,))" in str(stop.value)


def test_bundle_load_model_loads_on_first_access():
    """``import bundle`` (floor 0) and ``bundle.inference`` import no predictor; ``bundle.load_model`` is its."""
    code = "import sys, bundle, bundle.inference; print('bundle.inference.predictor' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]
    assert bundle.load_model is load_model is bundle.inference.load_model
