"""The MONAI Label app, served for real: a server started on 127.0.0.1 with the MONAI Label environment, over HTTP.

The studies are made by ``label_app/studies.py`` from the embedded sample (PNG, and one picture also as DICOM and
JPEG). What the server returns is compared with what ``configs/inference.json`` writes for the same files in the
bundle's own environment. The last test trains from masks saved through the datastore API, as a viewer saves them.
"""

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

from label_app.client import LABEL_PYTHON, HTTPError, LabelServer, copy_app, parse_multipart
from tests.conftest import CLASS_NAMES, ROOT
from tests.helpers import label_server_env, launch, run_bundle

pytestmark = pytest.mark.slow  # a real MONAI Label server in its own environment, and a training through it

ANNOTATED = 5  # sample studies whose masks are saved through the API before training


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """A few studies of each kind from ``label_app/studies.py``, and masks to annotate them with."""
    tmp = tmp_path_factory.mktemp("label")
    full = tmp / "full"
    launch([LABEL_PYTHON, ROOT / "label_app" / "studies.py", "--out", full, "--no-labels"], timeout=300, check=True)
    masks = ROOT / "data" / "sample" / "masks"
    dicom = next(full.glob("dicom_*.dcm"))
    keep = [dicom, next(full.glob("jpeg_*.jpeg")), full / (dicom.stem.removeprefix("dicom_") + ".png")]
    keep += sorted(full / m.name for m in masks.glob("*.png"))[:ANNOTATED]
    keep.append(sorted(full.glob("kermany_*.png"))[0])
    folder = tmp / "studies"
    folder.mkdir()
    for f in keep:
        shutil.copyfile(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def reference(studies, tmp_path_factory) -> dict[str, dict]:
    """``configs/inference.json`` on the studies in the bundle's environment: row and lung mask per study id."""
    out = tmp_path_factory.mktemp("reference")
    run_bundle(
        "run",
        "--config_file",
        "configs/inference.json",
        "--dataset_dir",
        str(studies),
        "--output_dir",
        str(out),
        "--write_overlays",
        "false",
    )
    rows = {}
    with open(out / "predictions.csv") as f:
        for row in csv.DictReader(f):
            stem = Path(row["image"]).name.rsplit(".", 1)[0]
            row["mask"] = np.asarray(Image.open(row["lung_mask_file"])) > 0
            rows[stem] = row
    return rows


@pytest.fixture(scope="module")
def server(studies, reference, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    (studies / "broken.png").write_bytes(b"not a picture")  # after the reference run, which would report it
    conf = {"bundle_root": str(ROOT)}
    with LabelServer(copy_app(tmp / "app"), studies, tmp / "server.log", conf=conf, env=label_server_env()) as s:
        yield s
    assert "Traceback" not in s.log_tail(10**7), "the server logged a stack trace"


def test_info_lists_both_models(server):
    info = server.get("/info/")
    seg, cls = info["models"]["lung_segmentation"], info["models"]["classification"]
    assert (seg["type"], seg["labels"], seg["dimension"]) == ("segmentation", {"lung": 1}, 2)
    assert (cls["type"], cls["labels"], cls["dimension"]) == ("classification", CLASS_NAMES, 2)
    assert list(info["trainers"]) == ["lung_segmentation"]
    ids = set(server.get("/datastore/", output="all")["objects"])
    assert {
        "broken",
        next(i for i in ids if i.startswith("dicom_")),
        next(i for i in ids if i.startswith("jpeg_")),
    } <= ids


@pytest.mark.parametrize("kind", ["png", "dicom", "jpeg"])
def test_lung_mask_equals_bundle_output(server, reference, kind):
    image = next(i for i in reference if (kind == "png" and i.startswith("kermany")) or i.startswith(kind))
    body, content_type = server.infer("lung_segmentation", image, "image")
    mask = _png(body)
    assert content_type == "image/png"
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert mask.shape == reference[image]["mask"].shape  # the study's own (rows, columns)
    np.testing.assert_array_equal(mask > 0, reference[image]["mask"])


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_classification_with_saliency(server, reference, kind):
    image = next(i for i in reference if (kind == "png" and i.startswith("kermany")) or i.startswith(kind))
    body, content_type = server.infer("classification", image, "all")
    parts = parse_multipart(body, content_type)
    result, saliency = json.loads(parts["params"]), _png(parts["image"])
    expected = reference[image]
    assert [p["label"] for p in result["prediction"]] == CLASS_NAMES
    scores = [p["score"] for p in result["prediction"]]
    np.testing.assert_allclose(scores, [float(expected[f"prob_{c}"]) for c in CLASS_NAMES], atol=1e-4)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)  # one softmax, not a sigmoid per class
    assert result["predicted"] == expected["predicted"]
    assert result["lung_attention"] == pytest.approx(float(expected["lung_attention"]), abs=1e-3)
    assert saliency.dtype == np.uint8 and saliency.shape == expected["mask"].shape
    # scaled to its peak on the network grid; resizing to the image's own grid can shave a one-pixel peak
    assert 250 <= saliency.max() <= 255


def test_errors_are_clear_and_the_server_keeps_serving(server, reference):
    with pytest.raises(HTTPError) as unknown:
        server.infer("classification", "no_such_study")
    assert unknown.value.status == 404 and "no_such_study" in unknown.value.body
    with pytest.raises(HTTPError) as broken:
        server.infer("lung_segmentation", "broken")
    assert broken.value.status == 422 and "broken.png" in broken.value.body and "cannot decode" in broken.value.body
    with pytest.raises(HTTPError) as model:
        server.infer("no_such_model", next(iter(reference)))
    assert model.value.status == 404 and "no_such_model" in model.value.body
    assert "Traceback" not in broken.value.body + unknown.value.body
    assert server.infer_json("lung_segmentation", next(iter(reference)))["weights"] == "models/model.pt"


def test_training_from_saved_masks_is_served_next(server, reference, studies, tmp_path):
    annotated = sorted(i for i in reference if i.startswith("hannover"))[:ANNOTATED]
    probe = annotated[0]
    before = _png(server.infer("lung_segmentation", probe, "image")[0])
    cls_before = server.infer_json("classification", probe)["prediction"]
    for image in annotated[1:]:
        server.save_label(image, ROOT / "data" / "sample" / "masks" / f"{image}.png")
    # an annotation the bundle cannot use is refused when it is saved (tests/label_app/test_refusals.py)
    bad = tmp_path / "bad.png"
    Image.fromarray(np.ones((7, 9), np.uint8)).save(bad)
    with pytest.raises(HTTPError) as refused:
        server.save_label(probe, bad)
    assert refused.value.status == 422 and "mask shape (7, 9) differs" in refused.value.body

    status = server.train("lung_segmentation", {"max_epochs": 2, "val_split": 0.25, "learning_rate": 1e-3})
    assert status["status"] == "DONE", server.log_tail()
    stats = server.get("/info/")["train_stats"]["lung_segmentation"]
    assert stats["epoch"] == 2 and 0.0 < stats["eval"]["metrics"]["val_mean_dice"] <= 1.0

    published = server.app / "model" / "model.pt"
    state = torch.load(published, weights_only=True)
    shipped = torch.load(ROOT / "models" / "model.pt", weights_only=True)
    assert state.keys() == shipped.keys()
    # the encoder and the class head were frozen: only the decoder and segmentation head changed
    changed = {k.split(".")[0] for k in state if not torch.equal(state[k].float(), shipped[k].float())}
    assert changed == {"decoder", "segmentation_head"}

    result = server.infer_json("lung_segmentation", probe)
    assert result["weights"] == "app/model/model.pt"  # named, not a server path
    after = _png(server.infer("lung_segmentation", probe, "image")[0])
    assert after.shape == before.shape and (after != before).any()
    cls_after = server.infer_json("classification", probe)["prediction"]
    np.testing.assert_allclose([p["score"] for p in cls_after], [p["score"] for p in cls_before], atol=1e-5)
